"""Training samples for the demo model, cut from synthetic scenes by the same geo core as inference.

Each synthetic scene is written to an in-memory GeoTIFF and opened as a `Scene`; every sample is then
a `prepare_region` (placement + one read) of a polygon, exactly as `mgimm-geo describe` prepares a user's
AOI. Chip size, context margin, decimation and masks therefore match at training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyproj
import rasterio
import shapely
from rasterio.io import MemoryFile
from shapely.geometry import box as shapely_box

from mgimm_core.prompts import ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT
from mgimm_core.regions import AOIFeature, ChipSettings, prepare_region
from mgimm_core.scene import Scene
from mgimm_core.vocabulary import attribute_phrase
from training.synthetic import SceneSample, describe_tile, generate_scene

REGION_ATTRIBUTES = ("name", "color", "shape", "size", "orientation")


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


def region_answer(obj) -> tuple[str, dict]:
    """The stage-1 target: the object's attribute phrase, without a position (the region is given)."""
    attrs = {k: getattr(obj, k) for k in REGION_ATTRIBUTES}
    return attribute_phrase(attrs), attrs


def _pixels_to_crs(geom: shapely.Geometry, transform) -> shapely.Geometry:
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return shapely.affinity.affine_transform(geom, [a, b, d, e, c, f])


def _open_in_memory(scene: SceneSample, memfile: MemoryFile) -> Scene:
    h, w = scene.size
    with memfile.open(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=scene.crs,
                      transform=scene.transform, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(np.moveaxis(scene.image, -1, 0))
        dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.blue]
    return Scene.open(memfile.name)


def _chip(geo_scene: Scene, geom_px, crs, transform, *, model_input, context, min_window):
    feature = AOIFeature(id="0", geometry=_pixels_to_crs(geom_px, transform), crs=crs)
    chip = prepare_region(geo_scene, feature, ChipSettings(input_size=model_input, context=context,
                                                           min_window=min_window))
    return chip.image, tuple(float(v) for v in chip.box), chip.mask


def scene_samples(scene: SceneSample, rng: np.random.Generator, *, model_input: int,
                  descriptions: int, object_descriptions: int = 0, max_per_class: int = 6,
                  min_window: int = 48, region_side: tuple[int, int] = (96, 320)) -> list[ChipSample]:
    """Region samples (one per object, classes capped per scene) and description samples.

    descriptions: how many random square regions (side drawn from `region_side`, scene pixels) to
        describe with `describe_tile`; the description covers the objects whose centre is inside.
    object_descriptions: how many description samples centred on an object, the way a user draws an
        AOI around one thing: the region is the object's footprint or a square a little larger, and
        the text describes a window around it (its surroundings and the objects inside). Drawn after
        the others, so 0 gives exactly the samples of earlier recipes.
    """
    crs = pyproj.CRS.from_user_input(scene.crs)
    samples: list[ChipSample] = []
    with MemoryFile() as memfile, _open_in_memory(scene, memfile) as geo_scene:
        per_class: dict[str, int] = {}
        for index in rng.permutation(len(scene.objects)):
            obj = scene.objects[index]
            if per_class.get(obj.name, 0) >= max_per_class:
                continue
            per_class[obj.name] = per_class.get(obj.name, 0) + 1
            image, box, mask = _chip(geo_scene, obj.footprint, crs, scene.transform,
                                     model_input=model_input, context=float(rng.uniform(0.1, 0.8)),
                                     min_window=min_window)
            answer, attrs = region_answer(obj)
            samples.append(ChipSample(image, box, mask, ATTRIBUTE_PROMPT, answer, "region", attrs))
        h, w = scene.size
        for _ in range(descriptions):
            side = int(rng.integers(region_side[0], min(region_side[1], h, w) + 1))
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            text = describe_tile(scene, (x0, y0, side, side), rng)
            image, box, mask = _chip(geo_scene, shapely_box(x0, y0, x0 + side, y0 + side), crs,
                                     scene.transform, model_input=model_input,
                                     context=float(rng.uniform(0.05, 0.3)), min_window=min_window)
            samples.append(ChipSample(image, box, mask, DESCRIPTION_PROMPT, text, "description"))
        count = min(object_descriptions, len(scene.objects))
        for index in rng.choice(len(scene.objects), size=count, replace=False) if count else []:
            obj = scene.objects[index]
            window = _window_around(obj.footprint.bounds, (h, w), rng)
            text = describe_tile(scene, window, rng)
            x0, y0, side, _ = window
            region = obj.footprint if rng.random() < 0.5 else shapely_box(x0, y0, x0 + side, y0 + side)
            image, box, mask = _chip(geo_scene, region, crs, scene.transform, model_input=model_input,
                                     context=float(rng.uniform(0.1, 0.8)), min_window=min_window)
            samples.append(ChipSample(image, box, mask, DESCRIPTION_PROMPT, text, "description",
                                      region_answer(obj)[1]))
    return samples


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


def generate_samples(seeds, *, scene_size: int, model_input: int, descriptions_per_scene: int,
                     object_descriptions_per_scene: int = 0, gsd: float = 0.5) -> list[ChipSample]:
    """Samples from the scenes of `seeds` (deterministic: sample draws are seeded per scene)."""
    out: list[ChipSample] = []
    for seed in seeds:
        scene = generate_scene(int(seed), size=scene_size, gsd=gsd)
        rng = np.random.default_rng([int(seed), 7])
        out.extend(scene_samples(scene, rng, model_input=model_input, descriptions=descriptions_per_scene,
                                 object_descriptions=object_descriptions_per_scene))
    return out
