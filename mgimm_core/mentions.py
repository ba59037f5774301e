"""Which objects a description names, with which attributes, and whether that agrees with an
attribute answer.

One reading of text for both sides of the agreement question: the decoding that keeps descriptions
consistent with their attribute answers (mgimm_core/describer.py) and the evaluation that measures
it (training/agreement.py). Text is read with the attribute vocabulary (mgimm_core/vocabulary.py):
a class is *mentioned* where its singular or plural form stands in the text (longest names first,
so "tennis court" is not also a "court"); a mention *carries* a colour, shape or size when that word
is among the four words before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from mgimm_core.vocabulary import (CLASS_NAMES, COLORS, NO_OBJECT_VALUE, SHAPES, SIZES, number_word, plural,
                                   size_surface)

_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_NUMBERS = {number_word(n): n for n in range(0, 21)}
_SHAPE_WORDS = {s.lower(): s for s in SHAPES}
_SIZE_WORDS: dict[str, str] = {s: s for s in SIZES} | {str(size_surface(s)): s for s in SIZES}
_VALUE_WORDS: dict[str, dict[str, str]] = {"color": {c: c for c in COLORS}, "shape": _SHAPE_WORDS,
                                           "size": _SIZE_WORDS}
#: Words that may stand between a count and its noun ("one small red rectangular building").
ADJECTIVE_WORDS = frozenset(COLORS) | frozenset(_SHAPE_WORDS) | frozenset(_SIZE_WORDS)
#: The attributes a mention can carry, as attribute keys.
CARRIED_KEYS = ("color", "shape", "size")


def words(text: str | None) -> list[str]:
    """The lower-case words of `text` (hyphenated words stay one word: "L-shaped", "medium-sized")."""
    return _WORD.findall((text or "").lower())


@dataclass(frozen=True)
class Mention:
    """One naming of a class in a text. Word indices count `words(text)`."""

    name: str              # canonical class name
    plural: bool
    count: int             # the number word before it ("three"), -1 when there is none
    noun: int              # index of the noun's first word
    start: int             # index of the phrase's first adjective (== noun when it has none)
    before: tuple[str, ...]  # the four words before the noun
    count_at: int = -1     # index of the number word just before the phrase, -1 when there is none

    def carried(self, key: str) -> list[str]:
        """The canonical values of attribute `key` (color, shape, size) among the words before it."""
        table = _VALUE_WORDS[key]
        return [table[w] for w in self.before if w in table]


def mentions(text: str | None) -> list[Mention]:
    """Every class named in `text`, in text order."""
    found_words = words(text)
    found: list[Mention] = []
    used = [False] * len(found_words)
    for name in sorted(CLASS_NAMES, key=lambda n: -len(n.split())):
        for form, is_plural in ((plural(name), True), (name, False)):
            parts = form.lower().split()
            for i in range(len(found_words) - len(parts) + 1):
                if found_words[i:i + len(parts)] == parts and not any(used[i:i + len(parts)]):
                    for j in range(i, i + len(parts)):
                        used[j] = True
                    before = found_words[max(0, i - 5):i]
                    count = next((_NUMBERS[w] for w in reversed(before) if w in _NUMBERS), -1)
                    start = i
                    while start > 0 and found_words[start - 1] in ADJECTIVE_WORDS:
                        start -= 1
                    count_at = start - 1 if start > 0 and found_words[start - 1] in _NUMBERS else -1
                    found.append(Mention(name, is_plural, count, i, start, tuple(before[-4:]), count_at))
    return sorted(found, key=lambda m: m.noun)


@dataclass(frozen=True)
class ObjectSpec:
    """The attributes a description must name an object with: one attribute answer."""

    name: str
    color: str | None = None
    shape: str | None = None
    size: str | None = None

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> "ObjectSpec | None":
        """From a row's or a RegionText's attributes (`object` or `name` key); None when they
        name no object (including the "no distinct objects" answer)."""
        name = attributes.get("object") or attributes.get("name")
        if not isinstance(name, str) or not name or name == NO_OBJECT_VALUE:
            return None
        values = {k: attributes.get(k) for k in CARRIED_KEYS}
        return cls(name, **{k: v if isinstance(v, str) and v else None for k, v in values.items()})

    def carried_by(self, mention: Mention, keys: Iterable[str] = CARRIED_KEYS) -> bool:
        """Whether `mention` names this object without another value of any of `keys` (a mention
        that leaves an attribute out does not contradict it)."""
        if mention.name != self.name:
            return False
        for key in keys:
            wanted, said = getattr(self, key), mention.carried(key)
            if wanted is not None and said and wanted not in said:
                return False
        return True


def contradicts(description: str | None, attributes: Mapping[str, Any],
                keys: Iterable[str] = ("color", "shape")) -> bool:
    """The description does not name the attribute object with its class and `keys`: no mention of
    its class at all, or every mention carries another value (the issue's contradiction: class,
    colour or shape). False when the attributes name no object."""
    spec = ObjectSpec.from_attributes(attributes)
    if spec is None:
        return False
    return not any(spec.carried_by(m, keys) for m in mentions(description))


@dataclass(frozen=True)
class Disagreement:
    """A phrase to decode again: from word `start`, naming one of `allowed`."""

    mention: Mention
    allowed: tuple[ObjectSpec, ...]
    start: int


def first_disagreement(description: str | None, own: ObjectSpec | None = None,
                       guides: tuple[ObjectSpec, ...] = ()) -> Disagreement | None:
    """The first phrase the description must say differently, and the answers it may take.

    own: the region's own attribute answer (a description of one region): some mention must carry
    it; if none does, the first mention of its class is the one to fix, else, when the description
    names one object only, that one (a description of several objects keeps them: the answer's
    object may simply be among those it leaves out). guides: one answer per guide object (the
    multi-region mode): every mention of a guided class must carry one of that class's answers
    (counts are not read: a count is the model's to say). None when the description agrees (or
    names no object at all)."""
    found = mentions(description)
    if own is not None and not any(own.carried_by(m) for m in found):
        candidates = [m for m in found if m.name == own.name] or (found if len(found) == 1 else [])
        if candidates:
            return Disagreement(candidates[0], (own,), candidates[0].start)
    for mention in found:
        allowed = tuple(g for g in guides if g.name == mention.name)
        if not allowed:
            continue
        if not any(g.carried_by(mention) for g in allowed):
            return Disagreement(mention, allowed, mention.start)
    return None
