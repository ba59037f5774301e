"""Constrained decoding: continue a description from a kept prefix with its next phrase limited to
given token sequences.

Used to make a description name an object with the attributes the model itself answered
(mgimm_core/describer.py): the phrase "<size> <colour> <shape> <noun>" may take only the answer's
words (each adjective may be left out), the model's own logits choosing among them; everything
after the phrase is decoded freely again. Every token still comes from a forward pass of the model.
"""

from __future__ import annotations

from itertools import product

import torch
from transformers import LogitsProcessor

from mgimm_core.mentions import ObjectSpec
from mgimm_core.vocabulary import article as article_for
from mgimm_core.vocabulary import number_word, plural, size_surface

_END = -1   # trie key marking a complete sequence


def phrase_sequences(tokenizer, specs: tuple[ObjectSpec, ...], plural_noun: bool, article: bool = False,
                     counted: bool = False) -> list[tuple[int, ...]]:
    """Token sequences of every phrase naming one of `specs`: its adjectives in canonical order,
    each optional, then the noun (plural form if `plural_noun`); with `article`, "a"/"an" first
    (the attribute answer's form); with `counted`, the number of `specs` those adjectives fit
    first ("two red buildings"), the noun's number following it. Phrases the tokenizer can only
    read with unknown tokens are left out (the model cannot say them)."""
    unk = tokenizer.unk_token_id
    sequences: set[tuple[int, ...]] = set()
    for spec in specs:
        for keep in product((True, False), repeat=3):
            kept = {key: getattr(spec, key) if k else None for key, k in zip(("size", "color", "shape"), keep)}
            adjectives = [size_surface(kept["size"]), kept["color"], kept["shape"]]
            many = plural_noun
            words = [w for w in adjectives if w]
            if counted:
                fit = sum(all(kept[key] is None or getattr(other, key) in (None, kept[key]) for key in kept)
                          for other in specs)
                words.insert(0, number_word(fit))
                many = fit != 1
            words.append(plural(spec.name) if many else spec.name)
            if article:
                words.insert(0, article_for(words[0]))
            ids = tuple(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"])
            if ids and (unk is None or unk not in ids):
                sequences.add(ids)
    return sorted(sequences)


def _trie(sequences) -> dict:
    root: dict = {}
    for sequence in sequences:
        node = root
        for token in sequence:
            node = node.setdefault(token, {})
        node[_END] = {}
    return root


def _follow(trie: dict, tokens: list[int]) -> dict | None:
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
    `input_ids` (generation from inputs_embeds), so a row's phrase starts at its first new token."""

    def __init__(self, sequences_per_row: list[list[tuple[int, ...]] | None]):
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
            if torch.isinf(kept).all():     # another guard banned them all: the phrase still wins
                kept = torch.zeros_like(kept)
            scores[row] = float("-inf")
            scores[row, allowed] = kept
        return scores


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
