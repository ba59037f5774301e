"""The attribute vocabulary shared by training and the `describe` command.

A region answer (stage 1) names one object with a fixed set of attributes. Training text is built
from this vocabulary and the `describe` command parses model answers back with it, so both sides
must agree on every word. The canonical stage-1 answer is

    <article> <size> <color> <shape> <name>[ oriented <orientation>][ in the <position>]

for example "a small white circular storage tank in the upper left" or "a large grey
elongated ship oriented north-south in the centre". Missing attributes are simply left out.
`parse_attributes` reverses it: it finds, for each attribute, the leftmost and longest vocabulary
term in any text (extra words, plurals, "gray"/"center" spellings are tolerated).

Positions are the 3 x 3 cells of the image (or tile) the object's centre falls in, image rows
growing downwards. Orientations are the compass direction of an object's long axis, assuming a
north-up image.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

# The 20 DIOR object classes (the images of the MGIMM dataset), multi-word names as written.
DIOR_CLASSES: tuple[str, ...] = (
    "airplane", "airport", "baseball field", "basketball court", "bridge", "chimney", "dam",
    "expressway service area", "expressway toll station", "golf course", "ground track field",
    "harbor", "overpass", "ship", "stadium", "storage tank", "tennis court", "train station",
    "vehicle", "windmill",
)
# Classes outside DIOR that the detailed descriptions also talk about.
EXTRA_CLASSES: tuple[str, ...] = ("building",)
CLASS_NAMES: tuple[str, ...] = DIOR_CLASSES + EXTRA_CLASSES

COLORS: tuple[str, ...] = (
    "white", "grey", "black", "red", "blue", "green", "brown", "yellow", "orange", "silver",
)
SHAPES: tuple[str, ...] = (
    "rectangular", "square", "L-shaped", "circular", "oval", "cross-shaped", "elongated",
    "fan-shaped", "Y-shaped", "irregular",
)
SIZES: tuple[str, ...] = ("small", "medium", "large")
ORIENTATIONS: tuple[str, ...] = (
    "north-south", "east-west", "northeast-southwest", "northwest-southeast",
)
# 3 x 3 cells, row-major from the upper left.
POSITIONS: tuple[str, ...] = (
    "upper left", "upper centre", "upper right",
    "centre left", "centre", "centre right",
    "lower left", "lower centre", "lower right",
)

ATTRIBUTE_KEYS: tuple[str, ...] = ("name", "color", "shape", "size", "orientation", "position")

# Surface forms used in text when they read better than the canonical value.
_SIZE_SURFACE = {"medium": "medium-sized"}

# Alternative spellings accepted by the parser: surface form -> canonical value.
_SYNONYMS: dict[str, dict[str, str]] = {
    "name": {"harbour": "harbor", "aeroplane": "airplane", "plane": "airplane",
             "car": "vehicle", "boat": "ship", "tank": "storage tank", "wind turbine": "windmill"},
    "color": {"gray": "grey", "dark grey": "grey", "light grey": "grey"},
    "shape": {"l shaped": "L-shaped", "l-shaped": "L-shaped", "round": "circular",
              "rectangle": "rectangular", "cross shaped": "cross-shaped", "cross": "cross-shaped",
              "long": "elongated"},
    "size": {"medium-sized": "medium", "medium sized": "medium", "mid-sized": "medium",
             "big": "large", "tiny": "small"},
    "orientation": {"north south": "north-south", "east west": "east-west",
                    "north-east-south-west": "northeast-southwest",
                    "north-west-south-east": "northwest-southeast",
                    "northeast to southwest": "northeast-southwest",
                    "northwest to southeast": "northwest-southeast",
                    "north to south": "north-south", "east to west": "east-west"},
    "position": {"upper center": "upper centre", "lower center": "lower centre",
                 "center left": "centre left", "center right": "centre right",
                 "center": "centre", "middle": "centre", "top left": "upper left",
                 "top right": "upper right", "bottom left": "lower left",
                 "bottom right": "lower right", "top": "upper centre", "bottom": "lower centre"},
}

_CANONICAL: dict[str, tuple[str, ...]] = {
    "name": CLASS_NAMES, "color": COLORS, "shape": SHAPES, "size": SIZES,
    "orientation": ORIENTATIONS, "position": POSITIONS,
}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                 "seventeen", "eighteen", "nineteen", "twenty")


def plural(name: str) -> str:
    """English plural of a class name ("storage tank" -> "storage tanks", "overpass" -> "overpasses")."""
    if name.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    return name + "s"


def number_word(n: int) -> str:
    """Counts up to twenty as words, larger ones as digits (how the descriptions write counts)."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def count_phrase(n: int, name: str, adjectives: str = "") -> str:
    """"three red rectangular buildings", "one storage tank": a count, adjectives and the noun."""
    words = [number_word(n)] + ([adjectives] if adjectives else []) + [name if n == 1 else plural(name)]
    return " ".join(words)


def article(word: str) -> str:
    """"a" or "an" for the word that follows (by its first letter; "L-shaped" takes "an")."""
    if not word:
        return "a"
    return "an" if word[0].lower() in "aeio" or word.startswith("L-") else "a"


def size_surface(size: str | None) -> str | None:
    """How a canonical size is written in text ("medium" -> "medium-sized")."""
    return _SIZE_SURFACE.get(size, size) if size else None


def adjective_phrase(attrs: Mapping[str, str | None]) -> str:
    """"small white circular": size, colour and shape words in canonical order, missing ones skipped."""
    words = [size_surface(attrs.get("size")), attrs.get("color"), attrs.get("shape")]
    return " ".join(w for w in words if w)


def attribute_phrase(attrs: Mapping[str, str | None]) -> str:
    """The canonical stage-1 answer for one object (see the module docstring).

    `attrs` holds any of the ATTRIBUTE_KEYS; values must be canonical vocabulary terms (a
    ValueError names the key and the allowed values otherwise).
    """
    for key in ATTRIBUTE_KEYS:
        value = attrs.get(key)
        if value is not None and value not in _CANONICAL[key]:
            raise ValueError(f"attribute {key}={value!r} is not in the vocabulary; "
                             f"use one of {', '.join(_CANONICAL[key])}")
    noun = attrs.get("name") or "object"
    adjectives = adjective_phrase(attrs)
    head = f"{adjectives} {noun}" if adjectives else noun
    phrase = f"{article(head)} {head}"
    if attrs.get("orientation"):
        phrase += f" oriented {attrs['orientation']}"
    if attrs.get("position"):
        phrase += f" in the {attrs['position']}"
    return phrase


def _term_pattern(terms: Iterable[str], plural_nouns: bool) -> re.Pattern[str]:
    parts = []
    for term in terms:  # already longest first, so alternation prefers the longest term
        body = re.escape(term.lower()).replace(r"\ ", r"[\s_]+").replace(r"\-", r"[-\s]?")
        parts.append(body + (r"(?:e?s)?" if plural_nouns else ""))
    # case-blind on the text as given, so a match's span indexes that text (`attribute_term`)
    return re.compile(r"(?<![\w-])(?:" + "|".join(f"({p})" for p in parts) + r")(?![\w-])", re.IGNORECASE)


def _build_matchers() -> dict[str, tuple[re.Pattern[str], list[str]]]:
    matchers = {}
    for key, canon in _CANONICAL.items():
        table = {t.lower(): t for t in canon}
        table.update({s.lower(): c for s, c in _SYNONYMS.get(key, {}).items()})
        surfaces = sorted(table, key=len, reverse=True)
        pattern = _term_pattern(surfaces, plural_nouns=(key == "name"))
        matchers[key] = (pattern, [table[s] for s in surfaces])
    return matchers


_MATCHERS = _build_matchers()


def parse_attributes(text: str) -> dict[str, str | None]:
    """Canonical attributes found in free text: the leftmost, longest vocabulary term per key.

    Returns every key of ATTRIBUTE_KEYS, None where the text names no value. Robust to extra
    words, plurals and American spellings ("gray", "center").
    """
    found: dict[str, str | None] = {}
    for key in ATTRIBUTE_KEYS:
        term = attribute_term(text, key)
        found[key] = None if term is None else term[0]
    return found


def attribute_term(text: str, key: str) -> tuple[str, int, int] | None:
    """The canonical value `parse_attributes` reads for `key`, with the (start, end) characters of
    the words that say it in `text` (how sure the model was of those words: mgimm_core/steps.py
    `score_objects`); None where the text names no value."""
    pattern, values = _MATCHERS[key]
    match = pattern.search(text)
    if match is None:
        return None
    group = next(i for i, g in enumerate(match.groups()) if g is not None)
    return values[group], match.start(), match.end()


#: The stage-1 answer for a region with no object that stands out, then its dominant land cover
#: (words the demo model's vocabulary already had: its descriptions say "No distinct objects stand out").
NO_OBJECT = "no distinct objects"
#: The `object` attribute of such a region in output rows.
NO_OBJECT_VALUE = "none"


def no_object_answer(cover: str | None = None) -> str:
    """"no distinct objects, mainly farmland": what a region without a distinct object is."""
    return f"{NO_OBJECT}, mainly {cover}" if cover else NO_OBJECT


def says_no_object(text: str | None) -> bool:
    """Whether an attribute answer says the region holds no distinct object."""
    return text is not None and "no distinct object" in text.lower()


def position_of(x: float, y: float, width: float, height: float) -> str:
    """The 3 x 3 cell name of point (x, y) in an image of width x height (pixels, y down)."""
    col = min(2, max(0, int(3 * x / width))) if width > 0 else 1
    row = min(2, max(0, int(3 * y / height))) if height > 0 else 1
    return POSITIONS[row * 3 + col]


def orientation_of(bearing_deg: float) -> str:
    """The axis name of a compass bearing in degrees (0 = north, 90 = east), direction-free."""
    b = bearing_deg % 180.0
    index = int(((b + 22.5) % 180.0) // 45.0)
    return ("north-south", "northeast-southwest", "east-west", "northwest-southeast")[index]
