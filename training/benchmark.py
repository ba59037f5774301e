"""The truth benchmark: descriptions measured against the synthetic world's ground truth, on the product path.

    python -m training.benchmark [--split test|dev|test-v3|dev-v3] [--scenes 6] [--model DIR] [--decoding both|free|agree]
                                 [--out report.json] [--threads 1]

Scenes come from a frozen split of seeds that training and tuning never use (`SPLITS`; the seeds
they do use are `used_seeds()`, and tests/training/test_benchmark.py checks the two never meet): "test" is
reported once per model and never tuned on; "dev" is for tuning (thresholds, decoding choices), and
a figure from it is labelled so. "test"/"dev" are world-v2 scenes (0.5 m, RGB: demo model v2's
world); "test-v3"/"dev-v3" are world-v3 scenes (training/synthetic `generate_scene_v3`: GSD 0.3-30 m
drawn by seed, a quarter grayscale, relief, clouds, crowds). Each scene (512-1024 px, drawn by seed)
is written as a GeoTIFF (one band when gray) with its true footprints, and AOIs in EPSG:4326 are drawn over it with random margins:

- single: around one object (margins 0.1-0.8 of its extent per side, drawn per side);
- partial: cutting one object (35-65% of its box along one side);
- multi: around two to four neighbouring objects;
- empty: squares of land no object touches;
- shifted: around one object and a copy of its footprint moved onto empty land beside it.

Every AOI is described with `mgimm_core.describe`, as `mgimm-geo describe` does: unguided; guided
by the true footprints (`--guide`, the AOIs holding objects); guided by wrong footprints (the shifted
copies, and object-shaped footprints put on the empty squares). Each run is made with free decoding
(`--no-agree`) and with the agreeing decoding (the default). The metrics read the truth, not the
model's agreement with itself (text is read with mgimm_core/mentions.py; a class is "named" where its
singular or plural stands in the text):

- attributes: class, colour, shape, size right, and all four, on single and shifted AOIs whose
  object is the only one mostly inside (50% of its footprint); class right on partial AOIs;
- description names the true object (its class), and names it with its true attributes (a mention of
  the true class carrying the true colour and shape and no other size);
- invented objects: descriptions naming a class no object touching the AOI has (any class on empty land);
- counts (multi AOIs): the count word before each true class named is the number of those objects inside;
- "no distinct objects": precision and recall of the attribute answer `none` for empty AOIs, and the
  same for descriptions that name no object;
- grammar: descriptions with a word twice in a row, a clause said twice, and with a broken phrase: a pair of neighbouring
  words the world's description generator (training/synthetic/text.py) never writes, read with
  colours, shapes, sizes, numbers and class names as their kind (`Grammar`);
- land cover: AOIs whose dominant cover (ignoring roads; "clouds" where thick cloud covers over 60%)
  covers at least 40% of them, and how often the description names it (the generator's words,
  training/synthetic/text.py `COVER_WORDS`); and descriptions naming a cover under 5% of their AOI;
- localisation: single AOIs whose description names the class of a neighbour just outside (within one
  AOI extent) that no object touching the AOI has;
- guides: the share of guide objects confirmed (`guide_status`), true vs shifted vs on empty land;
  recall and precision of the classes named against the truth inside, guided by true and by wrong
  footprints, and how often an empty AOI with a guide on it is described as holding an object.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely import affinity

from mgimm_core.mentions import ObjectSpec, mentions, words
from mgimm_core.vocabulary import CLASS_NAMES, COLORS, NO_OBJECT_VALUE, SHAPES, SIZES, number_word, plural, size_surface
from training.agreement import _rate, tile_scores
from training.synthetic.objects import box_with_margins, neighbour_group, object_extent
from training.synthetic.scene import world_scene

TEST_SEED_BASE = 7_000_000
DEV_SEED_BASE = 6_000_000
V3_OFFSET = 500_000
SPLIT_SCENES = 200
#: The frozen splits: scene seeds that no training or tuning run draws.
SPLITS = {"test": range(TEST_SEED_BASE, TEST_SEED_BASE + SPLIT_SCENES),
          "dev": range(DEV_SEED_BASE, DEV_SEED_BASE + SPLIT_SCENES),
          "test-v3": range(TEST_SEED_BASE + V3_OFFSET, TEST_SEED_BASE + V3_OFFSET + SPLIT_SCENES),
          "dev-v3": range(DEV_SEED_BASE + V3_OFFSET, DEV_SEED_BASE + V3_OFFSET + SPLIT_SCENES)}
#: The splits figures are reported on, run once per model: never tuned on.
TEST_SPLITS = ("test", "test-v3")
#: The synthetic world each split's scenes are drawn from.
SPLIT_WORLD = {"test": 2, "dev": 2, "test-v3": 3, "dev-v3": 3}
#: A cover dominates an AOI from this share; a cover named under NAMED_COVER_MIN is invented.
DOMINANT_COVER_MIN, NAMED_COVER_MIN = 0.4, 0.05
#: AOIs per scene by kind.
AOI_COUNTS = {"single": 4, "partial": 2, "multi": 3, "empty": 3, "shifted": 2}
#: Object sizes in scene pixels (longest side of the object's footprint; for a wrong "no distinct
#: objects" answer, of the largest object part inside the AOI) the figures are broken down by: a
#: few-pixel object at a coarse GSD cannot be named from its pixels, a large one can.
PIXEL_BUCKETS = ((8.0, "under 8 px"), (24.0, "8-24 px"), (math.inf, "24 px and over"))
#: How sure the model must be of the class it named (`object_p`, mgimm_core/steps.py score_objects)
#: for an attribute AOI to be kept in the `by_object_p` breakdown. Chosen on dev-v3 (40 scenes), where
#: the demo model puts over 0.9 on 80% of its class answers: the steps are where its answers differ.
SURE_LADDER = (0.9, 0.99, 0.999)
#: A guide object is believed where its guide_status says so.
CONFIRMED = "confirmed"


def used_seeds() -> dict[str, range]:
    """The scene seeds training and tuning draw, by who draws them (training/demo_recipe.py presets,
    its held-out evaluation, training/agreement.py, the demo scene of `mgimm-geo demo`, the fitting
    scenes of training/tower_probe.py)."""
    from training.demo_recipe import HELDOUT_SEED_BASE, PRESETS
    from training.tower_probe import PROBE_SEEDS

    train = max(p.train_scenes for p in PRESETS.values())
    heldout = max(p.heldout_scenes for p in PRESETS.values())
    return {"train (demo_recipe split_seeds)": range(1, train + 1),
            "held-out evaluation (demo_recipe, evaluate)": range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + heldout),
            "agreement (training.agreement, tuned on)": range(HELDOUT_SEED_BASE + 500, HELDOUT_SEED_BASE + 1500),
            "demo scene (synthetic.demo_inputs)": range(2024, 2025),
            "tower probes (training.tower_probe, fitted on)": PROBE_SEEDS}


# ------------------------------------------------------------------------------------- grammar
_KINDS = ({c: "<colour>" for c in COLORS} | {s.lower(): "<shape>" for s in SHAPES}
          | {w: "<size>" for s in SIZES for w in (s, str(size_surface(s)))}
          | {number_word(n): "<number>" for n in range(0, 21)}
          | {f"{a}-{b}" if a else b: "<direction>" for a in ("", "north", "south") for b in ("north", "south", "east",
                                                                                        "west") if a != b})
_CLASS_FORMS = sorted({tuple(f.lower().split()) for n in CLASS_NAMES for f in (n, plural(n))}, key=lambda f: -len(f))


def kinds(text: str | None) -> list[str]:
    """The words of `text`, colours, shapes, sizes, numbers and class names (one word each) as their kind."""
    found, out, i = words(text), [], 0
    while i < len(found):
        for form in _CLASS_FORMS:
            if tuple(found[i:i + len(form)]) == form:
                out.append("<class>")
                i += len(form)
                break
        else:
            out.append("<number>" if found[i].isdigit() else _KINDS.get(found[i], found[i]))
            i += 1
    return out


def doubled_words(text: str | None) -> list[str]:
    """Words standing twice in a row ("in in")."""
    found = words(text)
    return [a for a, b in zip(found, found[1:]) if a == b]


def repeated_clauses(text: str | None) -> list[str]:
    """Clauses (between , ; . ! ?) said twice in one description ("mountains occupy the centre;
    mountains occupy the centre")."""
    seen: set[tuple[str, ...]] = set()
    repeated = []
    for clause in re.split(r"[,;.!?]", text or ""):
        found = tuple(words(clause))
        if found and found in seen:
            repeated.append(" ".join(found))
        seen.add(found)
    return repeated


def doubled_phrases(text: str | None) -> list[str]:
    """Phrases said twice around an "and" ("the lower left and the lower left"), up to six words."""
    found = words(text)
    doubled = []
    for k, word in enumerate(found):
        if word != "and":
            continue
        n = next((n for n in range(min(6, k, len(found) - k - 1), 0, -1)
                  if found[k - n:k] == found[k + 1:k + 1 + n]), 0)
        if n:
            doubled.append(" ".join(found[k - n:k + 1 + n]))
    return doubled


def _is_count(word: str) -> bool:
    return word.isdigit() or _KINDS.get(word) == "<number>"


def repeated_items(text: str | None) -> list[str]:
    """List items said twice in one sentence but for their count ("seventeen white rectangular
    buildings scattered across the image, fifteen white rectangular buildings scattered across the
    image"). Items lie between , ; and an "and" before a count; one is compared from its first count
    on, that count masked, and is a repeat when it begins with its count and an earlier item of the
    sentence reads the same."""
    repeated = []
    for sentence in re.split(r"[.!?]", text or ""):
        seen: set[tuple[str, ...]] = set()
        for clause in re.split(r"[,;]", sentence):
            found = words(clause)
            starts = [0] + [k + 1 for k, w in enumerate(found[:-1]) if w == "and" and _is_count(found[k + 1])]
            for start, end in zip(starts, starts[1:] + [len(found) + 1]):
                item = found[start:end - 1] if end <= len(found) else found[start:]
                first = next((k for k, w in enumerate(item) if _is_count(w)), None)
                if first is None:
                    continue
                key = ("<number>", *item[first + 1:])
                if first == 0 and key in seen:
                    repeated.append(" ".join(item))
                seen.add(key)
    return repeated


@dataclass
class Grammar:
    """The word pairs the world's description generator writes (training/synthetic/text.py
    `describe_tile`, the text every description was trained on), read as `kinds`."""

    pairs: set = field(default_factory=set)

    @classmethod
    def from_generator(cls, seeds=range(1, 31), windows: int = 100, world: int = 2) -> "Grammar":
        """Pairs of the generator's descriptions of random windows of training scenes of `world`."""
        from training.synthetic import describe_tile

        grammar = cls()
        for seed in seeds:
            scene = world_scene(int(seed), 512, world)
            rng = np.random.default_rng([int(seed), 23])
            for _ in range(windows):
                side = int(rng.integers(24, 512))
                x0, y0 = int(rng.integers(0, 512 - side + 1)), int(rng.integers(0, 512 - side + 1))
                grammar.add(describe_tile(scene, (x0, y0, side, side), rng))
        return grammar

    def add(self, text: str) -> None:
        seq = ["<start>"] + kinds(text) + ["<end>"]
        self.pairs.update(zip(seq, seq[1:]))

    def broken(self, text: str | None) -> list[str]:
        """The neighbouring word pairs of `text` the generator never writes ("high-shaped resolution")."""
        seq = ["<start>"] + kinds(text) + ["<end>"]
        return [f"{a} {b}" for a, b in zip(seq, seq[1:]) if (a, b) not in self.pairs]


# ------------------------------------------------------------------------------------- scenes
@dataclass
class Region:
    """One benchmark AOI (scene pixels) and its truth."""

    id: str
    kind: str
    box: shapely.Geometry
    inside: list = field(default_factory=list)      # objects with >= half their footprint inside
    touching: list = field(default_factory=list)    # objects the AOI touches at all
    neighbours: list = field(default_factory=list)  # objects outside it within one AOI extent
    target: object = None                           # the object it was drawn around (single/partial/shifted)
    guide: shapely.Geometry | None = None           # its wrong guide (shifted/empty), scene pixels
    covers: dict = field(default_factory=dict)      # land cover (or "clouds") -> share of the AOI's pixels


def cover_shares(scene, box) -> dict:
    """Shares of the land covers (roads left out: they cross everything) and of thick cloud in `box`."""
    from training.synthetic.landcover import LANDCOVER_NAMES, ROAD

    x0, y0, x1, y1 = (int(round(v)) for v in box.bounds)
    labels = scene.landcover.labels[max(y0, 0):y1, max(x0, 0):x1]
    if not labels.size:
        return {}
    counts = np.bincount(labels.ravel(), minlength=len(LANDCOVER_NAMES)) / labels.size
    shares = {LANDCOVER_NAMES[c]: float(v) for c, v in enumerate(counts) if v > 0 and c != ROAD}
    if scene.cloud is not None:
        shares["clouds"] = float((scene.cloud[max(y0, 0):y1, max(x0, 0):x1] > 0.5).mean())
    return shares


def dominant_cover(covers: dict) -> str | None:
    """The AOI's dominant cover: clouds where they hide over 60% of it, else the largest cover at or
    above DOMINANT_COVER_MIN; None when no cover dominates."""
    if covers.get("clouds", 0.0) > 0.6:
        return "clouds"
    land = {k: v for k, v in covers.items() if k != "clouds"}
    best = max(land, key=land.get, default=None)
    return best if best is not None and land[best] >= DOMINANT_COVER_MIN else None


def covers_named(text: str | None) -> set[str]:
    """The land covers (and "clouds") a description names, in the generator's words."""
    from training.synthetic.text import COVER_WORDS

    low = f" {(text or '').lower()} "
    named = {cover for cover, phrase in COVER_WORDS.items()
             if f" {phrase.removeprefix('the ').removeprefix('a ')}" in low}
    return named | ({"clouds"} if "cloud" in low else set())


def _truth(region: Region, objects, tree) -> Region:
    box = region.box
    region.touching = [objects[int(i)] for i in tree.query(box) if objects[int(i)].footprint.intersects(box)]
    region.inside = [o for o in region.touching
                     if o.footprint.intersection(box).area >= 0.5 * max(o.footprint.area, 1e-9)]
    minx, miny, maxx, maxy = box.bounds
    ring = box.buffer(max(maxx - minx, maxy - miny))
    region.neighbours = [objects[int(i)] for i in tree.query(ring)
                         if objects[int(i)] not in region.touching and objects[int(i)].footprint.intersects(ring)]
    return region


def _free(box, tree, objects, pad: float = 2.0) -> bool:
    """No object touches `box` grown by `pad` pixels."""
    grown = box.buffer(pad)
    return not any(objects[int(i)].footprint.intersects(grown) for i in tree.query(grown))


def draw_regions(scene, rng: np.random.Generator) -> list[Region]:
    """The AOIs of one scene (AOI_COUNTS by kind), in scene pixels, with their truth."""
    objects = scene.objects
    h, w = scene.size
    frame = shapely.box(0, 0, w, h)
    tree = shapely.STRtree([o.footprint for o in objects])
    regions: list[Region] = []

    def margin_box(geom, low: float, high: float):
        return box_with_margins(geom, rng, low, high).intersection(frame)

    order = [objects[int(i)] for i in rng.permutation(len(objects))]
    for obj in order[:AOI_COUNTS["single"]]:
        regions.append(Region(f"single-{obj.id}", "single", margin_box(obj.footprint, 0.1, 0.8), target=obj))
    big = [o for o in order if object_extent(o.footprint) >= 12]
    for obj in big[:AOI_COUNTS["partial"]]:
        minx, miny, maxx, maxy = obj.footprint.bounds
        keep = float(rng.uniform(0.35, 0.65))
        side = int(rng.integers(4))
        cut = {0: (minx, miny, minx + keep * (maxx - minx), maxy), 1: (maxx - keep * (maxx - minx), miny, maxx, maxy),
               2: (minx, miny, maxx, miny + keep * (maxy - miny)), 3: (minx, maxy - keep * (maxy - miny), maxx, maxy)}
        part = shapely.box(*cut[side])
        m = rng.uniform(0.1, 0.5, size=4) * object_extent(obj.footprint)
        grow = [m[0] if side != 1 else 0, m[1] if side != 3 else 0, m[2] if side != 0 else 0, m[3] if side != 2 else 0]
        px0, py0, px1, py1 = part.bounds
        box = shapely.box(px0 - grow[0], py0 - grow[1], px1 + grow[2], py1 + grow[3]).intersection(frame)
        regions.append(Region(f"partial-{obj.id}", "partial", box, target=obj))
    for obj in order[AOI_COUNTS["single"]:]:
        if sum(r.kind == "multi" for r in regions) >= AOI_COUNTS["multi"]:
            break
        group = neighbour_group(objects, obj, rng)
        if not group:
            continue
        union = shapely.union_all([o.footprint for o in group])
        regions.append(Region(f"multi-{obj.id}", "multi", margin_box(union, 0.1, 0.4)))
    for obj in order:
        if sum(r.kind == "shifted" for r in regions) >= AOI_COUNTS["shifted"]:
            break
        e = object_extent(obj.footprint)
        angle = float(rng.uniform(0, 2 * math.pi))
        d = float(rng.uniform(1.3, 2.0)) * e
        moved = affinity.translate(obj.footprint, d * math.cos(angle), d * math.sin(angle))
        if not frame.contains(moved) or not _free(moved, tree, objects):
            continue
        box = margin_box(shapely.union_all([obj.footprint, moved]), 0.1, 0.4)
        regions.append(Region(f"shifted-{obj.id}", "shifted", box, target=obj, guide=moved))
    # wrong guides on empty land are object-shaped: the scene's own, or a 24 x 14 px block in a scene
    # without objects (coarse world-v3 GSDs)
    shapes = [o.footprint for o in order[:8]] or [shapely.box(0, 0, 24, 14)]
    for k in range(AOI_COUNTS["empty"] * 20):
        if sum(r.kind == "empty" for r in regions) >= AOI_COUNTS["empty"]:
            break
        side = int(rng.integers(48, min(200, w, h)))
        x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        box = shapely.box(x0, y0, x0 + side, y0 + side)
        if not _free(box, tree, objects):
            continue
        shape = shapes[k % len(shapes)]
        scale = min(1.0, 0.6 * side / object_extent(shape))
        c = shape.centroid
        guide = affinity.translate(affinity.scale(shape, scale, scale, origin=c), x0 + side / 2 - c.x,
                                   y0 + side / 2 - c.y)
        regions.append(Region(f"empty-{k}", "empty", box, guide=guide))
    for r in regions:
        r.covers = cover_shares(scene, r.box)
    return [_truth(r, objects, tree) for r in regions]


def _to_lonlat(scene, geom_px):
    """A scene-pixel geometry in EPSG:4326 (lon, lat)."""
    import pyproj

    t = scene.transform
    in_crs = affinity.affine_transform(geom_px, [t.a, t.b, t.d, t.e, t.c, t.f])
    to_lonlat = pyproj.Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True)
    return shapely.transform(in_crs, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))


def _write_layer(path: Path, features: list[tuple[str, shapely.Geometry]]) -> str | None:
    """A GeoJSON of the features, or None when there are none (a world-v3 scene without objects has
    no AOIs to guide)."""
    if not features:
        return None
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": fid}, "geometry": shapely.geometry.mapping(geom)}
        for fid, geom in features]}))
    return str(path)


def split_scene(seed: int, world: int = 2):
    """Scene `seed` of a split (512-1024 px, drawn by seed) and the generator its AOIs are drawn with."""
    rng = np.random.default_rng([seed, 22])
    return world_scene(seed, int(rng.integers(8, 17)) * 64, world), rng


def scene_case(seed: int, directory: Path, world: int = 2):
    """scene.tif, truth.gpkg (the true footprints) and the AOI / wrong-guide layers of one split seed."""
    from training.synthetic.export import write_geotiff, write_objects

    directory.mkdir(parents=True, exist_ok=True)
    scene, rng = split_scene(seed, world)
    write_geotiff(scene, directory / "scene.tif")
    write_objects(scene, directory / "truth.gpkg")
    regions = draw_regions(scene, rng)
    layers = {
        "all": _write_layer(directory / "aoi.geojson", [(r.id, _to_lonlat(scene, r.box)) for r in regions]),
        "objects": _write_layer(directory / "aoi_objects.geojson",
                                [(r.id, _to_lonlat(scene, r.box)) for r in regions if r.kind != "empty"]),
        "wrong": _write_layer(directory / "aoi_wrong.geojson",
                              [(r.id, _to_lonlat(scene, r.box)) for r in regions if r.guide is not None]),
        "wrong_guides": _write_layer(directory / "wrong_guides.geojson",
                                     [(f"guide-{r.id}", _to_lonlat(scene, r.guide)) for r in regions
                                      if r.guide is not None]),
    }
    return scene, regions, layers


# ------------------------------------------------------------------------------------- running
def run_case(engine, directory: Path, layers: dict) -> dict:
    """The three describe runs of one scene: {run: (rows by AOI id, objects rows by parent id)}."""
    import mgimm_core

    scene = str(directory / "scene.tif")
    runs = {"unguided": (layers["all"], None), "true_guides": (layers["objects"], str(directory / "truth.gpkg")),
            "wrong_guides": (layers["wrong"], layers["wrong_guides"])}
    out = {}
    for name, (aoi, guide) in runs.items():
        if aoi is None:
            out[name] = ({}, {})
            continue
        frame = mgimm_core.describe(scene, aoi, model=engine, guide=guide)
        rows = {str(r["id"]): r for r in frame.to_dict("records")}
        objects: dict[str, list] = {}
        if "objects" in frame.attrs:
            for r in frame.attrs["objects"].to_dict("records"):
                objects.setdefault(str(r["parent_id"]), []).append(r)
        out[name] = (rows, objects)
    return out


@dataclass
class Tally:
    """Counts of one decoding over the split; `report` turns them into rates."""

    n: Counter = field(default_factory=Counter)
    tiles: dict = field(default_factory=lambda: {"unguided": Counter(), "true_guides": Counter(),
                                                 "wrong_guides": Counter()})
    examples: dict = field(default_factory=dict)
    guides: list = field(default_factory=list)   # per guide object: (kind, guide_no_object_p, answered "none")
    answers: list = field(default_factory=list)  # per unguided region: (no_object_p, answered "none", empty)
    scenes: dict = field(default_factory=dict)   # per scene seed: its own counts {"n": ..., "tiles": ...}

    def add_scene(self, seed: int, before: "Tally") -> None:
        """Keep what the scene `seed` added since `before` (a copy taken before it was scored), so two
        models can be compared scene by scene (training/compare.py)."""
        self.scenes[seed] = {"n": dict(self.n - before.n),
                             "tiles": {run: dict(t - before.tiles[run]) for run, t in self.tiles.items()}}

    def snapshot(self) -> "Tally":
        return Tally(n=Counter(self.n), tiles={run: Counter(t) for run, t in self.tiles.items()})

    @classmethod
    def from_scenes(cls, scenes: list[dict]) -> "Tally":
        """The tally of several scenes' counts (`add_scene`), for `report`."""
        tally = cls()
        for scene in scenes:
            tally.n.update(scene["n"])
            for run, counts in scene["tiles"].items():
                tally.tiles.setdefault(run, Counter()).update(counts)
        return tally

    def example(self, key: str, value) -> None:
        self.examples.setdefault(key, [])
        if len(self.examples[key]) < 3:
            self.examples[key].append(value)


def pixel_bucket(geom) -> str:
    """The PIXEL_BUCKETS label of a scene-pixel geometry's longest side."""
    minx, miny, maxx, maxy = geom.bounds
    side = max(maxx - minx, maxy - miny)
    return next(label for limit, label in PIXEL_BUCKETS if side < limit)


def _names(text) -> set[str]:
    return {m.name for m in mentions(text)}


def score_case(regions: list[Region], runs: dict, tally: Tally, grammar: Grammar) -> None:
    """Add one scene's rows to the tally, against its truth."""
    n = tally.n
    by_id = {r.id: r for r in regions}
    rows, _ = runs["unguided"]
    for rid, row in rows.items():
        region = by_id[rid]
        if row.get("error"):
            n["errors"] += 1
            continue
        text, said = row["description"], _names(row["description"])
        touching = {o.name for o in region.touching}
        empty = not region.touching
        n["described"] += 1
        invented = bool(said - touching)
        n["invented"] += invented
        n[f"described:{region.kind}"] += 1
        n[f"invented:{region.kind}"] += invented
        if invented:
            tally.example("invented", {"id": rid, "truth": sorted(touching), "description": text})
        none_answer = row["object"] == NO_OBJECT_VALUE
        n["none_said"] += none_answer
        n["none_right"] += none_answer and empty
        if none_answer and not empty:      # what it missed: the largest object part inside the AOI
            seen = max((o.footprint.intersection(region.box) for o in region.touching), key=lambda g: g.area)
            n[f"none_wrong:{pixel_bucket(seen)}"] += 1
        n["empty"] += empty
        tally.answers.append((row.get("no_object_p"), none_answer, empty))
        n["no_objects_described"] += not said
        n["no_objects_described_right"] += (not said) and empty
        if region.kind in ("single", "shifted") and [o.id for o in region.inside] == [region.target.id]:
            t = region.target
            n["attribute_regions"] += 1
            right = {"name": row["object"] == t.name, "color": row["color"] == t.color,
                     "shape": row["shape"] == t.shape, "size": row["size"] == t.size}
            for key, ok in right.items():
                n[f"attr_{key}"] += ok
            n["attr_all"] += all(right.values())
            n["desc_names_true"] += t.name in said
            bucket = pixel_bucket(t.footprint)
            n[f"attribute_regions:{bucket}"] += 1
            n[f"attr_name:{bucket}"] += right["name"]
            n[f"desc_names_true:{bucket}"] += t.name in said
            sure = row.get("object_p")
            for level in SURE_LADDER:      # "none" answers and models without object_p are never kept
                if sure is not None and not math.isnan(sure) and sure >= level:
                    n[f"sure:{level}"] += 1
                    n[f"sure_name:{level}"] += right["name"]
                    n[f"sure_all:{level}"] += all(right.values())
                    n[f"sure_desc_names_true:{level}"] += t.name in said
            spec = ObjectSpec(t.name, t.color, t.shape, t.size)
            n["desc_names_true_attributes"] += any(
                spec.carried_by(m) and t.color in m.carried("color") and t.shape in m.carried("shape")
                for m in mentions(text))
            near = {o.name for o in region.neighbours} - touching
            if near:
                n["localisation_regions"] += 1
                n["localisation_errors"] += bool(said & near)
                if said & near:
                    tally.example("neighbour described", {"id": rid, "truth": sorted(touching),
                                                          "neighbours": sorted(near), "description": text})
        dominant, named = dominant_cover(region.covers), covers_named(text)
        if dominant:
            n["cover_regions"] += 1
            n["cover_named"] += dominant in named
        n["cover_invented"] += bool({c for c in named if region.covers.get(c, 0.0) < NAMED_COVER_MIN})
        if region.kind == "partial":
            n["partial"] += 1
            n["partial_class_right"] += row["object"] == region.target.name
    for run, (rows, objects) in runs.items():
        for rid, row in rows.items():
            if row.get("error"):
                continue
            text = row["description"]
            n["texts"] += 1
            doubled, broken, again = doubled_words(text), grammar.broken(text), repeated_clauses(text)
            items_again, twice = repeated_items(text), doubled_phrases(text)
            n["doubled_phrase"] += bool(twice)
            n["doubled"] += bool(doubled)
            n["broken"] += bool(broken)
            n["repeated_clause"] += bool(again)
            n["repeated_item"] += bool(items_again)
            if again:
                tally.example("repeated clause", {"clauses": again[:3], "description": text})
            if items_again:
                tally.example("repeated list item", {"items": items_again[:3], "description": text})
            if twice:
                tally.example("doubled phrase", {"phrases": twice[:3], "description": text})
            if broken:
                tally.example("broken phrase", {"pairs": broken[:3], "description": text})
            if doubled:
                tally.example("doubled word", {"words": doubled[:3], "description": text})
            region = by_id[rid]
            if region.kind == "multi" and run != "wrong_guides":
                s = tile_scores(text, Counter(o.name for o in region.inside))
                n[f"count_given_{run}"] += s["counted"]
                n[f"count_right_{run}"] += s["count_right"]
            if region.kind != "empty":
                s = tile_scores(text, Counter(o.name for o in region.inside))
                tally.tiles[run].update({k: s[k] for k in ("truth", "mentioned", "hit", "hallucinated")})
            if run == "unguided":
                continue
            for obj in objects.get(rid, []):
                kind = ("true" if run == "true_guides" else "empty_land" if region.kind == "empty" else "shifted")
                n[f"guides_{kind}"] += 1
                # no guide_status (a describe path that does not check guides): believed
                n[f"guides_{kind}_confirmed"] += obj.get("guide_status", CONFIRMED) in (CONFIRMED, None)
                tally.guides.append((kind, obj.get("guide_no_object_p"), obj.get("object") == NO_OBJECT_VALUE))
            if run == "wrong_guides" and region.kind == "empty":
                n["empty_guided"] += 1
                n["empty_guided_described_object"] += bool(_names(text))
                if _names(text):
                    tally.example("object described on empty land with a guide", {"id": rid, "description": text})


def report(tally: Tally) -> dict:
    """The rates of one decoding."""
    n = tally.n
    out = {
        "regions_described": n["described"], "region_errors": n["errors"],
        "attribute_regions": n["attribute_regions"],
        **{f"attribute_{k}_right": _rate(n[f"attr_{k}"], n["attribute_regions"])
           for k in ("name", "color", "shape", "size", "all")},
        "partial_regions": n["partial"], "partial_class_right": _rate(n["partial_class_right"], n["partial"]),
        "description_names_true_object": _rate(n["desc_names_true"], n["attribute_regions"]),
        "description_names_true_object_with_attributes": _rate(n["desc_names_true_attributes"],
                                                               n["attribute_regions"]),
        "invented_objects": _rate(n["invented"], n["described"]),
        "counts_right": _rate(n["count_right_unguided"], n["count_given_unguided"]),
        "counts_given": n["count_given_unguided"],
        "counts_right_true_guides": _rate(n["count_right_true_guides"], n["count_given_true_guides"]),
        "counts_given_true_guides": n["count_given_true_guides"],
        "empty_regions": n["empty"],
        "no_object_answer_precision": _rate(n["none_right"], n["none_said"]),
        "no_object_answer_recall": _rate(n["none_right"], n["empty"]),
        "no_object_description_precision": _rate(n["no_objects_described_right"], n["no_objects_described"]),
        "no_object_description_recall": _rate(n["no_objects_described_right"], n["empty"]),
        "texts": n["texts"], "doubled_words": _rate(n["doubled"], n["texts"]),
        "broken_phrases": _rate(n["broken"], n["texts"]),
        "repeated_clauses": _rate(n["repeated_clause"], n["texts"]),
        "repeated_list_items": _rate(n["repeated_item"], n["texts"]),
        "doubled_phrases": _rate(n["doubled_phrase"], n["texts"]),
        "cover_regions": n["cover_regions"],
        "dominant_cover_named": _rate(n["cover_named"], n["cover_regions"]),
        "cover_invented": _rate(n["cover_invented"], n["described"]),
        "localisation_regions": n["localisation_regions"],
        "neighbour_described": _rate(n["localisation_errors"], n["localisation_regions"]),
        "guides_true": n["guides_true"], "guides_true_confirmed": _rate(n["guides_true_confirmed"], n["guides_true"]),
        "guides_shifted": n["guides_shifted"],
        "guides_shifted_confirmed": _rate(n["guides_shifted_confirmed"], n["guides_shifted"]),
        "guides_empty_land": n["guides_empty_land"],
        "guides_empty_land_confirmed": _rate(n["guides_empty_land_confirmed"], n["guides_empty_land"]),
        "empty_with_guide_described_object": _rate(n["empty_guided_described_object"], n["empty_guided"]),
    }
    # where the misses are: attribute regions by the object's size in pixels, and wrong "no distinct
    # objects" answers by the size of the largest object part they missed
    out["by_object_pixels"] = {label: {"attribute_regions": n[f"attribute_regions:{label}"],
                                       "attribute_name_right": _rate(n[f"attr_name:{label}"],
                                                                     n[f"attribute_regions:{label}"]),
                                       "description_names_true_object": _rate(n[f"desc_names_true:{label}"],
                                                                              n[f"attribute_regions:{label}"]),
                                       "no_object_answers_wrong": n[f"none_wrong:{label}"]}
                               for _, label in PIXEL_BUCKETS}
    # what a user keeps by filtering on object_p: attribute AOIs whose class the model was sure of
    out["by_object_p"] = {f">= {level}": {"kept": _rate(n[f"sure:{level}"], n["attribute_regions"]),
                                          "attribute_name_right": _rate(n[f"sure_name:{level}"], n[f"sure:{level}"]),
                                          "attribute_all_right": _rate(n[f"sure_all:{level}"], n[f"sure:{level}"]),
                                          "description_names_true_object": _rate(n[f"sure_desc_names_true:{level}"],
                                                                                 n[f"sure:{level}"])}
                          for level in SURE_LADDER}
    # where the invented objects are: per kind of AOI (single, partial, multi, empty, shifted)
    out["invented_by_aoi_kind"] = {kind: {"regions": n[f"described:{kind}"],
                                          "invented_objects": _rate(n[f"invented:{kind}"], n[f"described:{kind}"])}
                                   for kind in AOI_COUNTS}
    for run, t in tally.tiles.items():
        out[f"{run}_recall"] = _rate(t["hit"], t["truth"])
        out[f"{run}_precision"] = _rate(t["hit"], t["mentioned"])
    out["examples"] = tally.examples
    out["scene_counts"] = {str(seed): counts for seed, counts in tally.scenes.items()}
    return out


def benchmark_tallies(model=None, *, split: str = "test", scenes: int = 24, decodings=("free", "agree"),
                      workdir: str | None = None, threads: int | None = None,
                      max_new_tokens: int = 160) -> tuple[dict, dict[str, Tally]]:
    """The counts of `model` (a directory; None: the demo model) on the first `scenes` seeds of
    `split`, per decoding, and what was run."""
    import mgimm_core

    seeds = list(SPLITS[split])[:scenes]
    world = SPLIT_WORLD[split]
    work = Path(workdir or tempfile.mkdtemp(prefix="benchmark_"))
    started = time.perf_counter()
    grammar = Grammar.from_generator(world=world)
    cases = [(seed, *scene_case(seed, work / f"scene_{seed}", world)) for seed in seeds]
    tallies = {}
    for decoding in decodings:
        engine = mgimm_core.load_model(model, max_new_tokens=max_new_tokens, threads=threads,
                                       agree=decoding == "agree")
        tally = Tally()
        try:
            for seed, _, regions, layers in cases:
                before = tally.snapshot()
                score_case(regions, run_case(engine, work / f"scene_{seed}", layers), tally, grammar)
                tally.add_scene(seed, before)
        finally:
            engine.close()
        tallies[decoding] = tally
    meta = {"model": str(model or "demo"), "split": split, "world": world,
            "seeds": [seeds[0], seeds[-1]] if seeds else [], "scenes": len(seeds), "aois_per_scene": AOI_COUNTS,
            "wall_s": round(time.perf_counter() - started, 1)}
    return meta, tallies


def run_benchmark(model=None, **options) -> dict:
    """The benchmark report of `model` (`benchmark_tallies`' options)."""
    meta, tallies = benchmark_tallies(model, **options)
    return {**meta, "results": {decoding: report(tally) for decoding, tally in tallies.items()}}


ROWS = (("attribute class / colour / shape / size right (single-object AOIs)",
         ("attribute_name_right", "attribute_color_right", "attribute_shape_right", "attribute_size_right"), ""),
        ("all four attributes right", ("attribute_all_right",), ""),
        ("class right on partial AOIs", ("partial_class_right",), ""),
        ("description names the true object", ("description_names_true_object",), ""),
        ("... with its true colour and shape", ("description_names_true_object_with_attributes",), ""),
        ("invented objects (descriptions naming a class not in the AOI)", ("invented_objects",), ""),
        ("counts right (multi-object AOIs; count words given)", ("counts_right", "counts_given"), ""),
        ("... guided by the true footprints", ("counts_right_true_guides", "counts_given_true_guides"), ""),
        ("\"no distinct objects\" answer: precision / recall", ("no_object_answer_precision",
                                                               "no_object_answer_recall"), ""),
        ("description names no object: precision / recall", ("no_object_description_precision",
                                                              "no_object_description_recall"), ""),
        ("doubled words / broken phrases / repeated clauses (all descriptions)",
         ("doubled_words", "broken_phrases", "repeated_clauses"), "0 / 0 / 0"),
        ("list items repeated but for their count / phrases doubled around \"and\" (all descriptions)",
         ("repeated_list_items", "doubled_phrases"), "0 / 0"),
        ("dominant land cover named (AOIs where one covers >= 40%)", ("dominant_cover_named",), ""),
        ("descriptions naming a cover under 5% of the AOI", ("cover_invented",), ""),
        ("neighbour described (localisation errors)", ("neighbour_described",), ""),
        ("unguided: class recall / precision", ("unguided_recall", "unguided_precision"), ""),
        ("true guides: confirmed / recall / precision", ("guides_true_confirmed", "true_guides_recall",
                                                          "true_guides_precision"), ""),
        ("wrong guides: recall / precision", ("wrong_guides_recall", "wrong_guides_precision"), ""),
        ("shifted guides confirmed", ("guides_shifted_confirmed",), ""),
        ("guides on empty land confirmed", ("guides_empty_land_confirmed",), "<= 0.10"),
        ("empty AOI with a guide described as holding an object", ("empty_with_guide_described_object",), ""))


def breakdown_table(result: dict, field: str, title: str, rows: list[str], columns: dict[str, str]) -> list[str]:
    """The markdown lines of one breakdown of the report (`field`: row -> column -> value), each cell
    holding every decoding's value."""
    decodings = list(result["results"])
    lines = ["", f"| {title} ({' / '.join(decodings)}) | " + " | ".join(columns.values()) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = [" / ".join(str(result["results"][d][field][row][k]) for d in decodings) for k in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    decodings = list(result["results"])
    lines = [f"| figure ({result['split']} split, {result['scenes']} scenes) | " + " | ".join(decodings)
             + " | target |", "|---" * (len(decodings) + 2) + "|"]
    for label, keys, target in ROWS:
        values = [" / ".join(str(result["results"][d][k]) for k in keys) for d in decodings]
        lines.append(f"| {label} | " + " | ".join(values) + f" | {target} |")
    lines += breakdown_table(result, "by_object_pixels", "object size in scene pixels",
                             [label for _, label in PIXEL_BUCKETS],
                             {"attribute_regions": "single-object AOIs", "attribute_name_right": "class right",
                              "description_names_true_object": "description names it",
                              "no_object_answers_wrong": "wrong \"no distinct objects\" answers"})
    lines += breakdown_table(result, "by_object_p", "object_p of the class named (single-object AOIs kept)",
                             [f">= {level}" for level in SURE_LADDER],
                             {"kept": "share kept", "attribute_name_right": "class right",
                              "attribute_all_right": "all four right",
                              "description_names_true_object": "description names it"})
    lines += breakdown_table(result, "invented_by_aoi_kind", "kind of AOI", list(AOI_COUNTS),
                             {"regions": "AOIs described", "invented_objects": "invented objects"})
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--scenes", type=int, default=24, help="the first N scenes of the split")
    parser.add_argument("--decoding", choices=("both", "free", "agree"), default="both")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None, help="write the JSON report here too")
    args = parser.parse_args(argv)
    decodings = ("free", "agree") if args.decoding == "both" else (args.decoding,)
    result = run_benchmark(args.model, split=args.split, scenes=args.scenes, decodings=decodings,
                           workdir=args.workdir, threads=args.threads)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
