"""Training text: region answers (stage 1) and detailed tile descriptions (stage 2).

A description covers the objects whose centre lies in the tile, grouped by class and then by
(colour, shape); every class is named with its total count ("three buildings"), which tests and
the description metrics rely on. Sentence templates and synonyms are drawn from the given rng.
Windows are (col_off, row_off, width, height) in scene pixels.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from mgimm_core.vocabulary import (adjective_phrase, attribute_phrase, count_phrase, number_word, plural,
                                   position_of)

from .landcover import LANDCOVER_NAMES, RIVER, ROAD, SEA
from .objects import ObjectRecord

STAGE1_INSTRUCTION = ("Based on the provided region of the remote sensing image, describe the basic "
                      "attributes of the main objects in that region.")
DESCRIPTION_INSTRUCTIONS = (
    "Describe this remote sensing image in detail.",
    "Give a detailed description of the objects and land cover in this image.",
    "Provide a detailed description of this aerial image, including the attributes of the objects.",
)

#: How descriptions name each land cover (the benchmark reads them back: training/benchmark.py).
COVER_WORDS = {"sea": "the sea", "lake": "a lake", "river": "a river", "forest": "forest",
                "farmland": "farmland parcels", "grass": "grassland", "bare soil": "bare soil",
                "urban": "built-up urban blocks", "road": "roads", "paved": "paved ground",
                "mountain": "mountains"}
_REGION_NAMES = {"upper left": "the north-west", "upper centre": "the north", "upper right": "the north-east",
                 "centre left": "the west", "centre": "the centre", "centre right": "the east",
                 "lower left": "the south-west", "lower centre": "the south", "lower right": "the south-east"}
_OPENERS = ("This remote sensing image shows", "This aerial image shows", "The scene shows",
            "In this high-resolution image we see")
_COUNT_TEMPLATES = ("There {be} {count}.", "The image contains {count}.", "{Count} {can} be seen.",
                    "We can see {count}.")
_GROUP_TEMPLATES = ("{phrase} {lie} {where}", "{where} {lie} {phrase}")


def region_caption(obj: ObjectRecord, window) -> str:
    """The stage-1 answer for one object, its position taken relative to `window`."""
    return attribute_phrase(obj.attributes(window))


def objects_in(objects, window) -> list[ObjectRecord]:
    """Objects whose footprint centre lies inside the window."""
    x0, y0, w, h = window
    return [o for o in objects if x0 <= o.centroid[0] < x0 + w and y0 <= o.centroid[1] < y0 + h]


def _where(positions: list[str]) -> str:
    common = Counter(positions).most_common()
    if len(positions) == 1 or common[0][1] == len(positions):
        return f"in the {common[0][0]}"
    if len(common) == 2:
        return f"in the {common[0][0]} and the {common[1][0]}"
    return "scattered across the image"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sampled_pixels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the mask's pixels on every 4th row and column (cheap on large windows),
    or of all its pixels when that grid misses them (a thin class in a small window)."""
    ys, xs = np.nonzero(mask[::4, ::4])
    if xs.size:
        return ys * 4, xs * 4
    return np.nonzero(mask)


def _landcover_sentence(labels: np.ndarray, rng: np.random.Generator) -> str:
    h, w = labels.shape
    total = labels.size
    counts = np.bincount(labels.ravel(), minlength=len(LANDCOVER_NAMES)) / total
    parts = []
    for code in np.argsort(-counts)[:3]:
        if counts[code] < 0.08 or code == ROAD:
            continue
        mask = labels == code
        if counts[code] > 0.6:
            where = "most of the image"
        else:
            ys, xs = _sampled_pixels(mask)
            where = _REGION_NAMES[position_of(xs.mean(), ys.mean(), w, h)]
        name = COVER_WORDS[LANDCOVER_NAMES[code]]
        if code == RIVER:
            ys, xs = _sampled_pixels(mask)
            span_x, span_y = np.ptp(xs) if xs.size else 0, np.ptp(ys) if ys.size else 0
            parts.append("a river crosses " + ("from west to east" if span_x >= span_y else "from north to south"))
            continue
        verb = rng.choice(["covers", "occupies"]) if code != SEA else "occupies"
        if name.endswith("s") and code != SEA:
            verb = {"covers": "cover", "occupies": "occupy"}[verb]
        parts.append(f"{name} {verb} {where}")
    if (labels == ROAD).mean() > 0.03:
        parts.append(rng.choice(["roads cross the area", "a network of roads runs through the scene"]))
    if not parts:
        return ""
    return _cap("; ".join(parts)) + "."


def cloud_sentence(cloud: np.ndarray | None) -> str:
    """World v3: where clouds (opacity above 0.5) cover a window, or "" when under 8% of it."""
    if cloud is None:
        return ""
    thick = cloud > 0.5
    share = thick.mean()
    if share < 0.08:
        return ""
    if share > 0.6:
        return "Clouds cover most of the image."
    h, w = thick.shape
    ys, xs = _sampled_pixels(thick)
    return f"Clouds cover {_REGION_NAMES[position_of(xs.mean(), ys.mean(), w, h)]}."


def describe_objects(objects: list[ObjectRecord], window, rng: np.random.Generator) -> list[str]:
    """Sentences naming each class with its total count, then its attribute groups and positions."""
    by_class: dict[str, list[ObjectRecord]] = defaultdict(list)
    for o in objects:
        by_class[o.name].append(o)
    sentences = []
    for name in sorted(by_class, key=lambda n: -len(by_class[n])):
        members = by_class[name]
        n = len(members)
        groups: dict[tuple, list[ObjectRecord]] = defaultdict(list)
        for o in members:
            groups[(o.color, o.shape)].append(o)
        if len(groups) == 1:
            attrs = members[0].attributes(window)
            adjectives = adjective_phrase({"color": attrs["color"], "shape": attrs["shape"],
                                           "size": attrs["size"] if n == 1 else None})
            where = _where([o.attributes(window)["position"] for o in members])
            phrase = count_phrase(n, name, adjectives)
            template = _GROUP_TEMPLATES[rng.integers(2)]
            s = template.format(phrase=phrase, where=where, lie="lies" if n == 1 else "lie")
            sentences.append(_cap(s) + ".")
            continue
        count = count_phrase(n, name)
        template = _COUNT_TEMPLATES[rng.integers(len(_COUNT_TEMPLATES))]
        head = template.format(be="is" if n == 1 else "are", count=count, Count=_cap(count),
                               can="can" if n > 1 else "can")
        details = []
        for (color, shape), items in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:4]:
            where = _where([o.attributes(window)["position"] for o in items])
            details.append(f"{count_phrase(len(items), name, adjective_phrase({'color': color, 'shape': shape}))} {where}")
        rest = n - sum(len(items) for _, items in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:4])
        if rest:
            details.append(f"{number_word(rest)} other {name if rest == 1 else plural(name)}")
        lead = rng.choice(["They include", "Among them are", "These are"])
        body = ", ".join(details[:-1]) + (" and " if len(details) > 1 else "") + details[-1]
        sentences.append(f"{head} {lead} {body}.")
    return sentences


def describe_tile(scene, window, rng: np.random.Generator) -> str:
    """A detailed paragraph for one window of a scene: land cover, then objects by class."""
    x0, y0, w, h = [int(v) for v in window]
    labels = scene.landcover.labels[y0:y0 + h, x0:x0 + w]
    objs = objects_in(scene.objects, (x0, y0, w, h))
    cover = _landcover_sentence(labels, rng)
    cloud = getattr(scene, "cloud", None)
    clouded = cloud_sentence(None if cloud is None else cloud[y0:y0 + h, x0:x0 + w])
    opener = _OPENERS[rng.integers(len(_OPENERS))]
    first = f"{opener} a {'mainly ' + rng.choice(['rural', 'agricultural']) if (labels == 7).mean() < 0.2 else 'built-up'} area."
    body = describe_objects(objs, (x0, y0, w, h), rng)
    if not objs:
        body = [rng.choice(["No distinct objects stand out.", "There are no notable objects."])]
    return " ".join([first] + ([cover] if cover else []) + ([clouded] if clouded else []) + body)
