"""Constrained decoding: continue a description from a kept prefix with its next phrase limited to
given token sequences, and the repetition guard.

Used to make a description name an object with the attributes the model itself answered
(mgimm_core/describer.py): the phrase "<size> <colour> <shape> <noun>" may take only the answer's
words (each adjective may be left out), the model's own logits choosing among them; everything
after the phrase is decoded freely again. Constraints here only forbid tokens: every token still
comes from a forward pass of the model, chosen by its logits among those left (where a constraint
would forbid every token, it gives way instead of picking one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor

from mgimm_core.mentions import ObjectSpec
from mgimm_core.vocabulary import article as article_for
from mgimm_core.vocabulary import number_word, plural, size_surface

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_END = -1   # trie key marking a complete sequence


def phrase_sequences(tokenizer: PreTrainedTokenizerBase, specs: tuple[ObjectSpec, ...], plural_noun: bool,
                     article: bool = False) -> list[tuple[int, ...]]:
    """Token sequences of every phrase naming one of `specs`: its adjectives in canonical order,
    each optional, then the noun (plural form if `plural_noun`); with `article`, "a"/"an" first
    (the attribute answer's form). No count word: a count is the model's to say, never set from
    the number of answers. Phrases the tokenizer can only read with unknown tokens are left out
    (the model cannot say them)."""
    unk = tokenizer.unk_token_id
    sequences: set[tuple[int, ...]] = set()
    for spec in specs:
        for keep in product((True, False), repeat=3):
            kept = {key: getattr(spec, key) if k else None for key, k in zip(("size", "color", "shape"), keep)}
            adjectives = [size_surface(kept["size"]), kept["color"], kept["shape"]]
            words = [w for w in adjectives if w]
            words.append(plural(spec.name) if plural_noun else spec.name)
            if article:
                words.insert(0, article_for(words[0]))
            ids = tuple(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"])
            if ids and (unk is None or unk not in ids):
                sequences.add(ids)
    return sorted(sequences)


def _trie(sequences: Iterable[Sequence[int]]) -> dict[int, Any]:
    root: dict[int, Any] = {}
    for sequence in sequences:
        node = root
        for token in sequence:
            node = node.setdefault(token, {})
        node[_END] = {}
    return root


def _follow(trie: dict[int, Any], tokens: list[int]) -> dict[int, Any] | None:
    """The trie node `tokens` lead to; None once they leave the trie or go on past a complete sequence."""
    node = trie
    for token in tokens:
        if _END in node or token not in node:
            return None
        node = node[token]
    return node


class PhraseConstraint(LogitsProcessor):
    """Per batch row, the next generated tokens must follow one of its sequences; once one is
    complete (or for rows given None) decoding is free. Expects the generated tokens only in
    `input_ids` (generation from inputs_embeds), so a row's phrase starts at its first new token.
    Where an earlier processor (the repetition guard) has forbidden every token the phrase could
    take next, the row is left free: the model's own choice among the tokens still allowed ends
    the phrase, no token is picked for it."""

    def __init__(self, sequences_per_row: list[list[tuple[int, ...]] | None]) -> None:
        self.tries = [_trie(s) if s else None for s in sequences_per_row]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, trie in enumerate(self.tries):
            if trie is None:
                continue
            node = _follow(trie, input_ids[row].tolist())
            if node is None or _END in node:
                continue
            allowed = torch.tensor(list(node), dtype=torch.long, device=scores.device)
            kept = scores[row, allowed]
            if torch.isneginf(kept).all():   # all forbidden by another guard: the phrase gives way
                continue
            scores[row] = float("-inf")
            scores[row, allowed] = kept
        return scores


class FirstTokenFloor(LogitsProcessor):
    """An answer may begin with `token` only where the model gives it at least `floor` probability;
    below, that one token is forbidden at the first step and the model's logits choose among the
    rest. Used for the "no distinct objects" answer (mgimm_core/steps.py `ask_attributes`): a model
    that says it too readily for small objects gets a threshold chosen on a dev split. Each row's
    probability of `token` at the first step (before forbidding) is kept in `probabilities`.
    Expects the generated tokens only in `input_ids` (generation from inputs_embeds, no prefix)."""

    def __init__(self, token: int, floor: float) -> None:
        self.token = token
        self.floor = floor
        self.probabilities: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] == 0 and self.token < scores.shape[1]:
            p = torch.softmax(scores.float(), dim=-1)[:, self.token]
            self.probabilities = p.tolist()
            scores[p < self.floor, self.token] = float("-inf")
        return scores


def word_tokens(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """A bool mask over the vocabulary: tokens that are whole words (or punctuation) of their own,
    which never stand twice in a row in good text. A word-level vocabulary (the demo model's): every
    token but the special ones; a subword vocabulary: tokens that start a word ("Ġin", "▁in") and
    hold only letters, since two equal subword pieces may well make one word."""
    size = len(tokenizer)
    mask = torch.zeros(size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    word_level = backend is not None and type(backend.model).__name__ == "WordLevel"
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(size)))):
        if token is None or token_id in special:
            continue
        if word_level or (token[:1] in ("Ġ", "▁") and token[1:].isalpha()):
            mask[token_id] = True
    return mask


SENTENCE_ENDS = (".", "!", "?")
CLAUSE_ENDS = (";", ",")


class RepetitionGuard(LogitsProcessor):
    """The repetition guard's forbidding part: a word may not follow itself ("building building",
    "in in"). Only that one token is forbidden; the model's logits choose among the rest. Unlike
    `no_repeat_ngram_size`, which forbids the word that would complete any n-gram seen before and
    so pushes the model into its second choice mid-phrase ("in this high-shaped resolution image"),
    it never forbids a word that good text needs. Longer loops are handled by `trim_repeats`.

    words: `word_tokens` of the tokenizer; tokens outside it (special tokens, ids the tokenizer
    does not have) write nothing, so the word before them counts as the previous one. prefixes:
    per row the kept tokens before its first generated one. Expects the generated tokens only in
    `input_ids` (generation from inputs_embeds)."""

    def __init__(self, words: torch.Tensor, prefixes: list[list[int]],
                 special: frozenset[int] = frozenset()) -> None:
        self.words = words
        self.prefixes = prefixes
        self.special = special

    def _previous(self, tokens: list[int]) -> int | None:
        for token in reversed(tokens):
            if 0 <= token < len(self.words) and token not in self.special:
                return token
        return None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(scores.shape[0]):
            previous = self._previous(list(self.prefixes[row]) + input_ids[row].tolist())
            if previous is not None and self.words[previous] and previous < scores.shape[1]:
                scores[row, previous] = float("-inf")
        return scores


@dataclass(frozen=True)
class RepeatMarks:
    """The tokens `trim_repeats` reads: sentence ends, clause marks (, ;), counts and the "and"
    that can open a list's last item (`of` finds them in a tokenizer)."""

    ends: frozenset[int]
    clause_ends: frozenset[int] = frozenset()
    counts: frozenset[int] = frozenset()
    joins: frozenset[int] = frozenset()

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, words: torch.Tensor | None = None) -> "RepeatMarks":
        """The marks of `tokenizer`, with or without a word-start mark. Counts are number words
        (zero to twenty, any case) or digits; they and "and" must be whole words (`words`, the
        tokenizer's `word_tokens`), so a subword piece ("S" + "and") opens no item. Counts that a
        subword vocabulary splits are missed: their items are never matched, so nothing is dropped."""
        whole_words = (word_tokens(tokenizer) if words is None else words).tolist()
        numbers = {number_word(n) for n in range(21)}
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        bare = [None if t is None else t.lstrip("Ġ▁") for t in tokens]

        def where(test: Callable[[str], bool], whole: bool = False) -> frozenset[int]:
            return frozenset(i for i, b in enumerate(bare) if b and test(b) and (not whole or whole_words[i]))

        return cls(where(lambda b: b in SENTENCE_ENDS), where(lambda b: b in CLAUSE_ENDS),
                   where(lambda b: b.isdigit() or b.lower() in numbers, whole=True),
                   where(lambda b: b == "and", whole=True))


def trim_repeats(ids: list[int], marks: RepeatMarks) -> list[int]:
    """An answer cut before its first sentence that repeats an earlier one word for word (a model
    that loops says the same sentence again; everything from there is the loop); an answer whose
    words after its last full sentence have no end mark (cut by the token budget, or ended by the
    model mid-sentence: "... roads cross the area. There are") is cut back to that sentence, so it
    never ends mid-phrase. Then a phrase doubled around an "and" loses its second half
    (`_drop_doubled_phrases`), and a clause that repeats one said before is dropped with the mark
    before it (`_drop_repeated_clauses`). Only the model's own words are dropped; nothing is added.
    An answer without a full sentence (an attribute answer) is kept whole but for repeated clauses."""
    seen: set[tuple[int, ...]] = set()
    start = 0
    for k, token in enumerate(ids):
        if token in marks.ends:
            sentence = tuple(ids[start:k + 1])
            if sentence in seen:
                ids = ids[:start]
                break
            seen.add(sentence)
            start = k + 1
    else:
        if start > 0:
            ids = ids[:start]
    ids = _drop_doubled_phrases(ids, marks)
    return _drop_repeated_clauses(ids, marks) if marks.clause_ends else ids


#: The longest phrase `_drop_doubled_phrases` looks for on both sides of an "and" (in tokens).
DOUBLED_PHRASE_TOKENS = 6


def _drop_doubled_phrases(ids: list[int], marks: RepeatMarks) -> list[int]:
    """`ids` without an "and" that is followed by the very words before it ("in the lower left and
    the lower left" -> "in the lower left"): a phrase of up to DOUBLED_PHRASE_TOKENS tokens, no mark
    inside, the longest that repeats. The words after it stay ("... and ten other buildings")."""
    if not marks.joins:
        return ids
    stops = marks.ends | marks.clause_ends
    out: list[int] = []
    k = 0
    while k < len(ids):
        if ids[k] in marks.joins:
            longest = min(DOUBLED_PHRASE_TOKENS, len(out), len(ids) - k - 1)
            doubled = next((n for n in range(longest, 0, -1) if ids[k + 1:k + 1 + n] == out[-n:]
                            and not stops.intersection(out[-n:])), 0)
            if doubled:
                k += 1 + doubled
                continue
        out.append(ids[k])
        k += 1
    return out


def _item_key(words: tuple[int, ...], counts: frozenset[int]) -> tuple[int, ...] | None:
    """A list item's words from its first count on, that count as -1 (other numbers stay: "100 m"
    and "200 m" differ); None without a count."""
    first = next((k for k, token in enumerate(words) if token in counts), None)
    return None if first is None else (-1, *words[first + 1:])


def _drop_repeated_clauses(ids: list[int], marks: RepeatMarks) -> list[int]:
    """`ids` without the clauses, not first in their sentence, that repeat an earlier one: a clause
    opened by , or ; that repeats one word for word anywhere before ("mountains occupy the centre;
    mountains occupy the centre"), or an item of a list (a clause that begins with its count, opened
    by , ; an "and" before a count, or both: ", and") that repeats an earlier item of its sentence
    but for the count ("seventeen white rectangular buildings ..., fifteen white rectangular
    buildings ..."): a model that cannot tell two groups apart lists the same group again. Dropped
    with the marks that opened it, so "A, A' and B" reads "A and B" and "A, and A'" reads "A"."""
    out: list[int] = []
    said: set[tuple[int, ...]] = set()        # clauses opened by , or ; (and first clauses), word for word
    items: set[tuple[int, ...]] = set()       # this sentence's list items (`_item_key`)
    opener: list[int] = []        # the marks that opened the current clause (none: first in its sentence)
    words: list[int] = []

    def close() -> None:
        found = tuple(words)
        key = _item_key(found, marks.counts)
        item = key is not None and found[0] in marks.counts
        by_and = bool(opener) and opener[-1] in marks.joins
        repeat = (item and key in items) or (not by_and and found in said)
        if not (opener and repeat):
            out.extend(opener + words)
        if not by_and:
            said.add(found)
        if key is not None:
            items.add(key)

    padded = ids + [-1]           # -1: the end of the answer closes its last clause
    for k, token in enumerate(padded):
        if token in marks.joins and padded[k + 1] in marks.counts and (words or opener):
            if words:             # "A and two B": "and" opens an item
                close()
                opener = [token]
            else:                 # "A, and two B": the item's opener is ", and"
                opener.append(token)
            words = []
        elif token in marks.clause_ends:
            close()
            opener, words = [token], []
        elif token in marks.ends or token == -1:
            close()
            if token != -1:
                out.append(token)
            opener, words, items = [], [], set()
        else:
            words.append(token)
    return out


def append_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, prefixes: list[list[int]],
                  pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts with each row's `prefix` appended, left-padded again."""
    rows = [input_ids[i][attention_mask[i].bool()].tolist() + list(prefixes[i]) for i in range(len(prefixes))]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long, device=input_ids.device)
    mask = torch.zeros((len(rows), length), dtype=attention_mask.dtype, device=attention_mask.device)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row):] = 1
    return ids, mask
