"""Write scenes to files: GeoTIFF, GeoPackage of objects, chips, and the reference-format text files.

Reference formats (docs/training.md): a COCO-like region file ({images, annotations} with
bbox [x, y, w, h] and caption) and description files (a list of {image_id, file_name, width,
height, bbox, conversations}). The project's own format is JSON lines, one record per chip:
{image, width, height, regions: [{bbox, polygon, attributes, caption}], description}. Chip boxes and
polygons are in chip pixels.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import rasterio.errors
import shapely
from rasterio.enums import ColorInterp, Resampling
from shapely import affinity

from mgimm_core.model_card import SYNTHETIC_SCENE_TAG

from .scene import SceneSample
from .text import DESCRIPTION_INSTRUCTIONS, STAGE1_INSTRUCTION, describe_tile, objects_in, region_caption

OBJECT_FIELDS = ("id", "name", "color", "shape", "size", "orientation", "position", "length_m",
                 "width_m", "caption")


def write_geotiff(scene: SceneSample, path) -> None:
    """Tiled, deflate-compressed GeoTIFF with the scene's CRS, transform and overviews: RGB, or one
    gray band for a grayscale (world-v3 bands="gray") scene, as a panchromatic file is."""
    h, w = scene.size
    gray = getattr(scene, "bands", "rgb") == "gray"
    profile = dict(driver="GTiff", width=w, height=h, count=1 if gray else 3, dtype="uint8", crs=scene.crs,
                   transform=scene.transform, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", interleave="pixel", **({} if gray else {"photometric": "RGB"}))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene.image[..., :1].transpose(2, 0, 1) if gray else scene.image.transpose(2, 0, 1))
        dst.colorinterp = [ColorInterp.gray] if gray else [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.update_tags(**dict([SYNTHETIC_SCENE_TAG]), seed=str(scene.seed), gsd_m=str(scene.gsd))
        factors = [f for f in (2, 4, 8) if min(h, w) // f >= 64]
        if factors:
            dst.build_overviews(factors, Resampling.average)


def write_objects(scene: SceneSample, path, layer: str = "objects") -> None:
    """Ground-truth footprints as a GeoPackage polygon layer in the scene CRS, with all attributes."""
    h, w = scene.size
    window = (0, 0, w, h)
    t = scene.transform
    geoms = [affinity.affine_transform(o.footprint, [t.a, t.b, t.d, t.e, t.c, t.f]) for o in scene.objects]
    columns = {k: [] for k in OBJECT_FIELDS}
    for o in scene.objects:
        attrs = o.attributes(window)
        row = dict(attrs, id=o.id, length_m=o.length_m, width_m=o.width_m, caption=region_caption(o, window))
        for k in OBJECT_FIELDS:
            columns[k].append(row[k])
    field_data = []
    for k in OBJECT_FIELDS:
        if k == "id":
            field_data.append(np.array(columns[k], dtype=np.int64))
        elif k.endswith("_m"):
            field_data.append(np.array(columns[k], dtype=np.float64))
        else:
            field_data.append(np.array(["" if v is None else v for v in columns[k]], dtype=object))
    wkb = np.array(shapely.to_wkb(geoms), dtype=object) if geoms else np.array([], dtype=object)
    pyogrio.raw.write(str(path), wkb, field_data, list(OBJECT_FIELDS), layer=layer, driver="GPKG",
                      geometry_type="Polygon", crs=rasterio.crs.CRS.from_user_input(scene.crs).to_wkt())


def _write_png(array: np.ndarray, path) -> None:
    """Chips are plain PNGs (pixel coordinates only), so GDAL's not-georeferenced warning is moot."""
    h, w = array.shape[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        _png(array, path, h, w)


def _png(array, path, h, w) -> None:
    with rasterio.open(path, "w", driver="PNG", width=w, height=h, count=3, dtype="uint8") as dst:
        dst.write(array.transpose(2, 0, 1))


def _region(o, window) -> dict:
    ox, oy = window[0], window[1]
    poly = affinity.translate(o.footprint, -ox, -oy)
    return {"bbox": [round(v, 2) for v in o.bbox(window)],
            "polygon": [[round(x, 2), round(y, 2)] for x, y in poly.exterior.coords],
            "attributes": o.attributes(window), "caption": region_caption(o, window)}


def object_chip_window(scene: SceneSample, obj, rng, min_size: int = 64) -> tuple[int, int, int, int]:
    """A window around one object with a random context margin, clipped to the scene (pixels)."""
    h, w = scene.size
    x, y, bw, bh = obj.bbox()
    side = int(max(min_size, max(bw, bh) * rng.uniform(1.5, 3.0)))
    side = min(side, w, h)
    cx = x + bw / 2 + rng.uniform(-0.25, 0.25) * (side - bw)
    cy = y + bh / 2 + rng.uniform(-0.25, 0.25) * (side - bh)
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    return x0, y0, side, side


def _clipped_bbox(o, window):
    x, y, bw, bh = o.bbox(window)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(window[2], x + bw), min(window[3], y + bh)
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def export_scenes(scenes, out_dir, rng: np.random.Generator, tile: int = 512) -> dict:
    """Write every scene's files and the text files for all of them; returns counts per kind.

    out_dir gets: scenes/<seed>.tif and .gpkg, chips/*.png, regions.json (COCO-like),
    descriptions.json (conversations), samples.jsonl (project format).
    """
    out = Path(out_dir)
    for sub in ("scenes", "chips"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    images, annotations, descriptions, records = [], [], [], []
    for scene in scenes:
        stem = f"scene_{scene.seed:06d}"
        write_geotiff(scene, out / "scenes" / f"{stem}.tif")
        write_objects(scene, out / "scenes" / f"{stem}.gpkg")
        h, w = scene.size
        for o in scene.objects:           # region chips: one object, its attribute phrase
            window = object_chip_window(scene, o, rng)
            name = f"{stem}_obj{o.id:04d}.png"
            x0, y0, cw, ch = window
            _write_png(scene.image[y0:y0 + ch, x0:x0 + cw], out / "chips" / name)
            image_id = len(images)
            images.append({"id": image_id, "file_name": name, "width": cw, "height": ch})
            caption = region_caption(o, window)
            annotations.append({"id": len(annotations), "image_id": image_id,
                                "bbox": _clipped_bbox(o, window), "caption": caption})
            records.append({"image": f"chips/{name}", "width": cw, "height": ch,
                            "regions": [_region(o, window)], "description": None})
        t = min(tile, h, w)
        for y0 in range(0, h - t + 1, t):  # tiles: every object inside, a detailed description
            for x0 in range(0, w - t + 1, t):
                window = (x0, y0, t, t)
                name = f"{stem}_tile_{y0:05d}_{x0:05d}.png"
                _write_png(scene.image[y0:y0 + t, x0:x0 + t], out / "chips" / name)
                inside = objects_in(scene.objects, window)
                text = describe_tile(scene, window, rng)
                instruction = DESCRIPTION_INSTRUCTIONS[rng.integers(len(DESCRIPTION_INSTRUCTIONS))]
                descriptions.append({
                    "image_id": name.rsplit(".", 1)[0], "file_name": name, "width": t, "height": t,
                    "bbox": [_clipped_bbox(o, window) for o in inside],
                    "conversations": [{"from": "human", "value": "<image>\n" + instruction},
                                      {"from": "gpt", "value": text}]})
                records.append({"image": f"chips/{name}", "width": t, "height": t,
                                "regions": [_region(o, window) for o in inside], "description": text})
    with open(out / "regions.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "instruction": STAGE1_INSTRUCTION}, f)
    with open(out / "descriptions.json", "w") as f:
        json.dump(descriptions, f)
    with open(out / "samples.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return {"scenes": len({d for d in (out / 'scenes').glob('*.tif')}), "region_chips": len(images),
            "tiles": len(descriptions), "records": len(records)}
