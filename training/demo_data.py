"""Training samples for the demo model, cut from synthetic scenes by the same geo core as inference.

Each synthetic scene is written to an in-memory GeoTIFF and opened as a `Scene`; every sample is then
a `prepare_region` (placement + one read) of a polygon, exactly as `mgimm-geo describe` prepares a user's
AOI. Chip size, context margin, decimation and masks therefore match at training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyproj
import rasterio
import shapely
from rasterio.io import MemoryFile
from shapely.geometry import box as shapely_box

from mgimm_core.families.base import DEFAULT_MIN_WINDOW
from mgimm_core.guides import DEFAULT_MAX_GUIDES, GuideIndex, guides_on_chip
from mgimm_core.prompts import ATTRIBUTE_PROMPT, guided_description_prompt, with_gsd
from mgimm_core.regions import AOIFeature, ChipSettings, prepare_region
from mgimm_core.scene import Scene
from mgimm_core.vocabulary import attribute_phrase, no_object_answer
from training.synthetic import SceneSample, describe_tile
from training.synthetic.objects import box_with_margins, neighbour_group
from training.synthetic.scene import world_scene
from training.synthetic.landcover import LANDCOVER_NAMES, ROAD

REGION_ATTRIBUTES = ("name", "color", "shape", "size", "orientation")
#: The smallest side of the recipe's empty squares ("no distinct objects"), as the shipped models saw them.
EMPTY_SQUARE_MIN_SIDE = 48


@dataclass
class ChipSample:
    """One training example: what the model sees, where the region is, and the target text."""

    image: np.ndarray            # uint8 (h, w, 3), as read by the geo core
    box: tuple[float, float, float, float]   # x1, y1, x2, y2 in chip pixels
    mask: np.ndarray             # bool (h, w): pixel centres inside the region polygon
    prompt: str
    answer: str
    kind: str                    # "region" (stage 1) or "description" (stage 2)
    attributes: dict | None = None
    guides: list = field(default_factory=list)   # (box, mask) of guide objects after the region
    guide_attributes: list = field(default_factory=list)   # their attribute dicts, same order

#: The smallest side of the recipe's empty squares ("no distinct objects"), as the shipped models saw them.
EMPTY_SQUARE_MIN_SIDE = 48


def region_answer(obj) -> tuple[str, dict]:
    """The stage-1 target: the object's attribute phrase, without a position (the region is given)."""
    attrs = {k: getattr(obj, k) for k in REGION_ATTRIBUTES}
    return attribute_phrase(attrs), attrs


def _pixels_to_crs(geom: shapely.Geometry, transform) -> shapely.Geometry:
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return shapely.affinity.affine_transform(geom, [a, b, d, e, c, f])


def _open_in_memory(scene: SceneSample, memfile: MemoryFile) -> Scene:
    h, w = scene.size
    gray = scene.bands == "gray"     # one band, read by the geo core as a user's grayscale file is
    with memfile.open(driver="GTiff", width=w, height=h, count=1 if gray else 3, dtype="uint8", crs=scene.crs,
                      transform=scene.transform, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(np.moveaxis(scene.image[..., :1] if gray else scene.image, -1, 0))
        dst.colorinterp = [rasterio.enums.ColorInterp.gray] if gray else [
            rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green, rasterio.enums.ColorInterp.blue]
    return Scene.open(memfile.name)


def _chip(geo_scene: Scene, geom_px, crs, transform, *, model_input, context, min_window, guides=None):
    """(image, box, mask, guides on the chip, chip GSD in metres) of a region given in scene pixels, cut
    by the geo core as `describe` cuts an AOI; with a GuideIndex, the guide objects inside it (largest
    first), else []."""
    feature = AOIFeature(id="0", geometry=_pixels_to_crs(geom_px, transform), crs=crs)
    chip = prepare_region(geo_scene, feature, ChipSettings(input_size=model_input, context=context,
                                                           min_window=min_window))
    found = guides_on_chip(guides, chip.placement, geom_px, DEFAULT_MAX_GUIDES)[0] if guides else []
    return chip.image, tuple(float(v) for v in chip.box), chip.mask, found, chip.gsd_m


#: Land-cover names as the answers say them (the words the descriptions use).
COVER_ANSWER_WORDS = {"grass": "grassland", "urban": "urban blocks", "paved": "paved ground", "road": "roads",
                      "mountain": "mountains"}


def dominant_cover(scene: SceneSample, window) -> str:
    """The land cover covering most of a window (roads only when nothing else is there), in the
    descriptions' words; "clouds" when thick cloud (world v3) covers most of it."""
    x0, y0, w, h = [int(v) for v in window]
    if scene.cloud is not None and (scene.cloud[y0:y0 + h, x0:x0 + w] > 0.5).mean() > 0.5:
        return "clouds"
    counts = np.bincount(scene.landcover.labels[y0:y0 + h, x0:x0 + w].ravel(), minlength=len(LANDCOVER_NAMES))
    if counts.sum() > counts[ROAD]:
        counts[ROAD] = 0
    name = LANDCOVER_NAMES[int(np.argmax(counts))]
    return COVER_ANSWER_WORDS.get(name, name)


def main_object(scene: SceneSample, window):
    """The largest object whose centre lies in a window, or None: what the stage-1 answer names."""
    from training.synthetic.text import objects_in

    inside = objects_in(scene.objects, window)
    return max(inside, key=lambda o: o.footprint.area) if inside else None


def window_answer(scene: SceneSample, window) -> tuple[str, dict | None]:
    """The stage-1 answer for a square region: its main object's attributes, or that there is none
    (with the dominant land cover)."""
    obj = main_object(scene, window)
    if obj is None:
        return no_object_answer(dominant_cover(scene, window)), None
    return region_answer(obj)


def scene_samples(scene: SceneSample, rng: np.random.Generator, *, model_input: int,
                  descriptions: int, object_descriptions: int = 0, max_per_class: int = 6,
                  min_window: int = DEFAULT_MIN_WINDOW, region_side: tuple[int, int] = (96, 320),
                  no_object_regions: int = 0, gsd_prompt: bool = False,
                  no_object_min_side: int = EMPTY_SQUARE_MIN_SIDE,
                  object_box_share: float = 0.0, group_descriptions: int = 0) -> list[ChipSample]:
    """Region samples (one per object, classes capped per scene) and description samples.

    descriptions: how many random square regions (side drawn from `region_side`, scene pixels) to
        describe with `describe_tile`; the description covers the objects whose centre is inside.
    object_descriptions: how many description samples centred on an object, the way a user draws an
        AOI around one thing: the region is the object's footprint or a square a little larger, and
        the text describes a window around it (its surroundings and the objects inside).
    no_object_regions: stage-1 samples of squares holding no object, answered "no distinct object,
        mostly <land cover>".

    Every random square also gives a stage-1 sample (its largest object's attributes, or none), and
    every description question carries the attribute answers it must agree with
    (`guided_description_prompt`): the region's own, or, for half of the squares (the paper's
    multi-region mode), those of the square's objects, which are then region prompts too.
    gsd_prompt: every question begins with the chip's GSD (`with_gsd`), as `describe` asks a model
    whose processor has gsd_prompt.
    object_box_share: this share of the per-object attribute samples have as their region a box
    drawn around the object with margins of 0.1-0.8 of its extent per side (`box_with_margins`: an
    AOI as a user draws it), the others the object's footprint. 0 draws nothing more from `rng`
    (the samples of earlier recipes stay as they were).
    group_descriptions: up to this many boxes drawn with margins (0.1-0.4 of their extent) around an
        object and one to three of its neighbours (`neighbour_group`, as the benchmark's multi AOIs),
        each a stage-1 and a description sample: the texts count the objects inside. 0 draws nothing.
    """

    def ask(question: str, gsd: float) -> str:
        return with_gsd(question, gsd) if gsd_prompt else question

    crs = pyproj.CRS.from_user_input(scene.crs)
    samples: list[ChipSample] = []
    with MemoryFile() as memfile, _open_in_memory(scene, memfile) as geo_scene:
        per_class: dict[str, int] = {}
        h, w = scene.size
        for index in rng.permutation(len(scene.objects)):
            obj = scene.objects[index]
            if per_class.get(obj.name, 0) >= max_per_class:
                continue
            per_class[obj.name] = per_class.get(obj.name, 0) + 1
            context = float(rng.uniform(0.1, 0.8))
            region = obj.footprint
            if object_box_share and rng.random() < object_box_share:
                region = box_with_margins(obj.footprint, rng, 0.1, 0.8).intersection(shapely_box(0, 0, w, h))
            image, box, mask, _, gsd = _chip(geo_scene, region, crs, scene.transform,
                                        model_input=model_input, context=context, min_window=min_window)
            answer, attrs = region_answer(obj)
            samples.append(ChipSample(image, box, mask, ask(ATTRIBUTE_PROMPT, gsd), answer, "region", attrs))
        guides = GuideIndex.build(geo_scene, [
            AOIFeature(id=str(i), geometry=_pixels_to_crs(o.footprint, scene.transform), crs=crs)
            for i, o in enumerate(scene.objects)]) if scene.objects else None
        by_id = {str(i): o for i, o in enumerate(scene.objects)}

        def describe_window(window, context: tuple[float, float]) -> None:
            """A stage-1 sample and a description sample of a rectangular window (x0, y0, w, h)."""
            x0, y0, ww, wh = window
            text = describe_tile(scene, window, rng)
            guided = bool(guides) and rng.random() < 0.5
            image, box, mask, found, gsd = _chip(geo_scene, shapely_box(x0, y0, x0 + ww, y0 + wh), crs,
                                            scene.transform, model_input=model_input,
                                            context=float(rng.uniform(*context)), min_window=min_window,
                                            guides=guides if guided else None)
            answer, attrs = window_answer(scene, window)
            samples.append(ChipSample(image, box, mask, ask(ATTRIBUTE_PROMPT, gsd), answer, "region", attrs))
            if guided and found:
                # the paper's multi-region mode: the window's objects as region prompts, each
                # with its attributes in the question
                guide_attrs = [region_answer(by_id[g.id])[1] for g in found]
                prompt = guided_description_prompt([attribute_phrase(a) for a in guide_attrs])
                samples.append(ChipSample(image, box, mask, ask(prompt, gsd), text, "description", None,
                                          [(g.box, g.mask) for g in found], guide_attrs))
            else:
                samples.append(ChipSample(image, box, mask, ask(guided_description_prompt([answer]), gsd), text,
                                          "description", None))

        for _ in range(descriptions):
            side = int(rng.integers(region_side[0], min(region_side[1], h, w) + 1))
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            describe_window((x0, y0, side, side), (0.05, 0.3))
        for _ in range(no_object_regions):
            window = _empty_window(scene, rng, region_side, min_side=no_object_min_side)
            if window is None:
                break
            x0, y0, side, _ = window
            image, box, mask, _, gsd = _chip(geo_scene, shapely_box(x0, y0, x0 + side, y0 + side), crs,
                                        scene.transform, model_input=model_input,
                                        context=float(rng.uniform(0.05, 0.3)), min_window=min_window)
            samples.append(ChipSample(image, box, mask, ask(ATTRIBUTE_PROMPT, gsd),
                                      no_object_answer(dominant_cover(scene, window)), "region", None))
        count = min(object_descriptions, len(scene.objects))
        for index in rng.choice(len(scene.objects), size=count, replace=False) if count else []:
            obj = scene.objects[index]
            window = _window_around(obj.footprint.bounds, (h, w), rng)
            text = describe_tile(scene, window, rng)
            x0, y0, side, _ = window
            region = obj.footprint if rng.random() < 0.5 else shapely_box(x0, y0, x0 + side, y0 + side)
            image, box, mask, _, gsd = _chip(geo_scene, region, crs, scene.transform, model_input=model_input,
                                        context=float(rng.uniform(0.1, 0.8)), min_window=min_window)
            answer, attrs = region_answer(obj)
            samples.append(ChipSample(image, box, mask, ask(guided_description_prompt([answer]), gsd), text,
                                      "description", attrs))
        frame = shapely_box(0, 0, w, h)
        for index in rng.permutation(len(scene.objects))[:group_descriptions] if group_descriptions else []:
            group = neighbour_group(scene.objects, scene.objects[int(index)], rng)
            if not group:
                continue
            union = shapely.union_all([o.footprint for o in group])
            bx0, by0, bx1, by1 = box_with_margins(union, rng, 0.1, 0.4).intersection(frame).bounds
            x0, y0 = int(np.floor(bx0)), int(np.floor(by0))
            describe_window((x0, y0, max(1, int(np.ceil(bx1)) - x0), max(1, int(np.ceil(by1)) - y0)), (0.1, 0.8))
    return samples


def _empty_window(scene: SceneSample, rng: np.random.Generator, region_side, tries: int = 12,
                  min_side: int = EMPTY_SQUARE_MIN_SIDE):
    """A square window (x0, y0, side, side) that no object footprint touches, or None.

    min_side under EMPTY_SQUARE_MIN_SIDE: sides drawn log-uniformly from min_side, so object-sized empty squares (what
    the guide check asks about, mgimm_core/describer.py `guide_no_object_probabilities`) are seen as often as large ones."""
    from shapely.strtree import STRtree

    h, w = scene.size
    tree = STRtree([o.footprint for o in scene.objects]) if scene.objects else None
    for _ in range(tries):
        high = min(region_side[0] * 2, h, w)
        if min_side < EMPTY_SQUARE_MIN_SIDE:
            side = int(round(np.exp(rng.uniform(np.log(min_side), np.log(high)))))
        else:
            side = int(rng.integers(min(EMPTY_SQUARE_MIN_SIDE, region_side[0]), high + 1))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        if tree is None or not len(tree.query(shapely_box(x0, y0, x0 + side, y0 + side))):
            return x0, y0, side, side
    return None


def _window_around(bounds, scene_hw, rng: np.random.Generator, min_side: int = 24) -> tuple[int, int, int, int]:
    """A square window (x0, y0, side, side) holding an object with a random margin, inside the scene."""
    h, w = scene_hw
    bx0, by0, bx1, by1 = bounds
    extent = max(bx1 - bx0, by1 - by0)
    side = int(min(max(min_side, extent * (1 + 2 * rng.uniform(0.15, 1.0))), h, w))
    cx = (bx0 + bx1) / 2 + rng.uniform(-0.1, 0.1) * side
    cy = (by0 + by1) / 2 + rng.uniform(-0.1, 0.1) * side
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, side, side


def scene_world(seed: int, world: int, v2_share: float) -> int:
    """The world of scene `seed` in a recipe of `world` that mixes in `v2_share` of world-v2 scenes."""
    if world == 3 and v2_share > 0 and np.random.default_rng([seed, 23]).random() < v2_share:
        return 2
    return world


def generate_samples(seeds, *, scene_size: int, model_input: int, descriptions_per_scene: int,
                     object_descriptions_per_scene: int = 0, no_object_regions_per_scene: int = 0,
                     gsd: float = 0.5, world: int = 2, gsd_prompt: bool = False,
                     no_object_min_side: int = EMPTY_SQUARE_MIN_SIDE, v2_share: float = 0.0,
                     min_window: int = DEFAULT_MIN_WINDOW, object_box_share: float = 0.0,
                     group_descriptions_per_scene: int = 0) -> list[ChipSample]:
    """Samples from the scenes of `seeds` (deterministic: sample draws are seeded per scene).

    world: 2, scenes at `gsd` (the shipped demo model's world); 3, world-v3 scenes, each at the GSD
    and look its seed draws (`world_scene`). gsd_prompt: questions carry the chip's GSD.
    v2_share: with world 3, this share of the seeds (drawn from the seed) gives a world-v2 scene at
    `gsd` instead, so a v3 model keeps v2's 0.5 m look (docs/demo_v3.md). min_window: the smallest
    chip window in scene pixels (the model's `chip_min_window`, as `describe` cuts its chips).
    object_box_share, group_descriptions_per_scene: `scene_samples`' object_box_share, group_descriptions."""
    out: list[ChipSample] = []
    for seed in seeds:
        scene = world_scene(int(seed), scene_size, scene_world(int(seed), world, v2_share), gsd)
        rng = np.random.default_rng([int(seed), 7])
        out.extend(scene_samples(scene, rng, model_input=model_input, descriptions=descriptions_per_scene,
                                 object_descriptions=object_descriptions_per_scene,
                                 no_object_regions=no_object_regions_per_scene, gsd_prompt=gsd_prompt,
                                 no_object_min_side=no_object_min_side, min_window=min_window,
                                 object_box_share=object_box_share, group_descriptions=group_descriptions_per_scene))
    return out
