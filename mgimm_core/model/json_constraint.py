"""Attribute answers of general VLMs as the row schema's JSON object, always parseable.

`JsonAnswerConstraint` is a logits processor: at each step it forbids every token that would take
the answer off the form `{"object": "...", "color": "...", ...}` (the keys in `fields`' order, each
value a plain JSON string). Only the form is enforced: the keys and punctuation are the only tokens
left where the form allows nothing else, and inside a value every token that keeps it a string stays
allowed, so each word of a value is the model's own choice among its logits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


# Characters a value may not hold (they would end or escape the JSON string).
_FORBIDDEN = frozenset('"\\') | frozenset(chr(c) for c in range(0x20))


def answer_form(fields: Iterable[str]) -> list[str | None]:
    """The form as segments: literal text, or None for a value."""
    segments: list[str | None] = []
    for i, name in enumerate(fields):
        segments.append(("{" if i == 0 else '", ') + f'"{name}": "')
        segments.append(None)
    segments.append('"}')
    return segments


def _state(text: str, segments: Iterable[str | None]) -> tuple[bool, bool, str | None]:
    """(text is a prefix of the form, text is the whole form, what comes next: None inside a value,
    else the next character the form requires)."""
    i = 0
    for segment in segments:
        if segment is None:
            while i < len(text) and text[i] != '"':
                if text[i] in _FORBIDDEN:
                    return False, False, ""
                i += 1
            if i == len(text):
                return True, False, None
        else:
            n = min(len(segment), len(text) - i)
            if text[i:i + n] != segment[:n]:
                return False, False, ""
            i += n
            if i == len(text) and n < len(segment):
                return True, False, segment[n]
    return i == len(text), i == len(text), ""


class JsonAnswerConstraint:
    """Logits processor for `generate`: rows of new tokens stay on the form (see the module)."""

    def __init__(self, tokenizer: Any, fields: Iterable[str], prompt_length: int) -> None:   # tokenizer: transformers'
        self.segments = answer_form(fields)
        self.prompt_length = prompt_length
        self.eos = {t for t in ([tokenizer.eos_token_id] if isinstance(tokenizer.eos_token_id, int)
                                else list(tokenizer.eos_token_id or [])) if t is not None}
        size = len(tokenizer)
        self.pieces = [tokenizer.decode([t]) for t in range(size)]
        special = set(tokenizer.all_special_ids)
        usable = [t for t, p in enumerate(self.pieces) if p and "\ufffd" not in p and t not in special]
        # inside a value, a piece without a quote, backslash or control character always fits
        plain = [t for t in usable if not (set(self.pieces[t]) & _FORBIDDEN)]
        self.plain = torch.zeros(size, dtype=torch.bool)
        self.plain[plain] = True
        self.quoted = [t for t in usable if '"' in self.pieces[t]]
        self.by_first: dict[str, list[int]] = {}
        for t in usable:
            self.by_first.setdefault(self.pieces[t][0], []).append(t)
        # each row's answer text so far, grown by one piece a step (not rebuilt from all its tokens)
        self._texts: list[str] = []
        self._seen = 0

    def allowed(self, text: str) -> torch.Tensor:
        """Tokens that may follow `text` (a prefix of the form), on the device of `self.plain`."""
        mask = torch.zeros(len(self.pieces), dtype=torch.bool, device=self.plain.device)
        prefix, whole, following = _state(text, self.segments)
        if whole or not prefix:
            mask[list(self.eos)] = True
            return mask
        if following is None:     # inside a value: any plain piece, or one that closes it on the form
            mask |= self.plain
            candidates = self.quoted
        else:
            candidates = self.by_first.get(following, [])
        for t in candidates:
            if _state(text + self.pieces[t], self.segments)[0]:
                mask[t] = True
        return mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.plain.device != scores.device:
            self.plain = self.plain.to(scores.device)      # moved once, not per step
        generated = input_ids.shape[1] - self.prompt_length
        if generated == 0 or len(self._texts) != input_ids.shape[0] or generated != self._seen + 1:
            # a new generate call (the constraint is reused): the texts from the tokens themselves
            self._texts = ["".join(self.pieces[t] for t in row if t < len(self.pieces))
                           for row in input_ids[:, self.prompt_length:].tolist()]
        else:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self._texts[row] += self.pieces[token] if token < len(self.pieces) else ""
        self._seen = generated
        for row in range(input_ids.shape[0]):
            if any(t in self.eos for t in input_ids[row, self.prompt_length:].tolist()):
                continue
            mask = self.allowed(self._texts[row])
            if mask.shape[0] < scores.shape[-1]:   # rows past the tokenizer (vocab padded to a multiple): never
                mask = torch.cat([mask, mask.new_zeros(scores.shape[-1] - mask.shape[0])])
            scores[row] = scores[row].masked_fill(~mask, float("-inf"))
        return scores
