"""Readable text from a word-level tokenizer's output.

A word-level tokenizer (the demo model's) lower-cases its input and splits punctuation off words, so
decoding joins tokens with spaces: "the south - east ; a medium - sized l - shaped building ." This
module rejoins that into ordinary prose ("the south-east; a medium-sized L-shaped building.") without
changing a word: punctuation attaches to its word, hyphenated words close up, sentences start with a
capital, and words whose case the tokenizer lost (e.g. "L-shaped") get it back from a given list.
Subword tokenizers (LLaMA, Vicuna) decode correctly on their own and never pass through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SPACE_BEFORE_CLOSING = re.compile(r"\s+([.,;:!?%)\]])")
_SPACE_AFTER_OPENING = re.compile(r"([(\[])\s+")
_SPACED_HYPHEN = re.compile(r"(?<=\w)\s*-\s*(?=\w)")
_SPACED_DECIMAL = re.compile(r"(?<=\d)\s*\.\s*(?=\d)")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")


class WordDetokenizer:
    """Joins space-separated word-level tokens back into prose.

    cased_words: words in their proper case ("L-shaped", "Y-shaped"); their lower-case forms are
        restored to it wherever they stand alone.
    """

    def __init__(self, cased_words: Iterable[str] = ()) -> None:
        self.cased_words = tuple(w for w in cased_words if w != w.lower())
        self._cased = [(re.compile(rf"(?<![\w-]){re.escape(w.lower())}(?![\w-])"), w) for w in self.cased_words]

    def __call__(self, text: str) -> str:
        text = " ".join(text.split())
        text = _SPACED_DECIMAL.sub(".", text)
        text = _SPACED_HYPHEN.sub("-", text)
        text = _SPACE_BEFORE_CLOSING.sub(r"\1", text)
        text = _SPACE_AFTER_OPENING.sub(r"\1", text)
        for pattern, word in self._cased:
            text = pattern.sub(word, text)
        if re.search(r"[.!?]$", text):  # prose: capitalise sentence starts (short attribute answers stay as they are)
            text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
        return text
