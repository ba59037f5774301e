"""A ready-to-describe demo: one synthetic scene, AOIs over its objects, and the ground truth.

Used by `mgimm-geo demo` and by the end-to-end tests. AOIs are written the way a user would draw
them: polygons in lon/lat (EPSG:4326 GeoJSON), over a scene in a projected CRS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import shapely
from shapely import affinity

from .export import write_geotiff, write_objects
from .scene import draw_look, generate_scene

TRUTH_PREFIX = "truth_"


@dataclass
class DemoInputs:
    scene: Path          # GeoTIFF
    aoi: Path            # GeoJSON, EPSG:4326, one polygon per chosen object + one area
    truth: Path          # GeoPackage of every object with its attributes
    objects: int         # AOIs over objects


def _pick_objects(objects, rng, count: int):
    """Up to `count` objects, classes taken in turn so rare classes are not crowded out."""
    by_class: dict[str, list] = {}
    for obj in objects:
        by_class.setdefault(obj.name, []).append(obj)
    for items in by_class.values():
        rng.shuffle(items)
    picked = []
    while len(picked) < count and any(by_class.values()):
        for name in sorted(by_class):
            if by_class[name] and len(picked) < count:
                picked.append(by_class[name].pop())
    return picked


def write_demo_inputs(directory, *, seed: int = 2024, size: int = 1024, gsd: float = 0.5,
                      crs: str | None = "EPSG:32631", objects: int = 12, world: int = 2) -> DemoInputs:
    """Write scene.tif, aoi.geojson and truth.gpkg into `directory` (created if missing).

    world: 2, a world-v2 scene at `gsd`; 3, a world-v3 scene at the GSD and look its seed draws."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    look = None
    if world == 3:
        gsd, look = draw_look(seed)
    scene = generate_scene(seed, size=size, gsd=gsd, crs=crs, look=look)
    paths = DemoInputs(directory / "scene.tif", directory / "aoi.geojson", directory / "truth.gpkg", 0)
    write_geotiff(scene, paths.scene)
    write_objects(scene, paths.truth)
    to_lonlat = pyproj.Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True)
    t = scene.transform
    rng = np.random.default_rng(seed)
    features = []
    for obj in _pick_objects(scene.objects, rng, objects):
        footprint = affinity.affine_transform(obj.footprint, [t.a, t.b, t.d, t.e, t.c, t.f])
        lonlat = shapely.transform(footprint, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
        props = {"id": f"object-{obj.id}", "kind": "object"}
        props.update({TRUTH_PREFIX + k: getattr(obj, k) for k in ("name", "color", "shape", "size")})
        features.append({"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(lonlat)})
    paths.objects = len(features)
    h, w = scene.size
    area = affinity.affine_transform(shapely.box(w * 0.25, h * 0.25, w * 0.6, h * 0.6),
                                     [t.a, t.b, t.d, t.e, t.c, t.f])
    area = shapely.transform(area.segmentize(t.a * 16),
                             lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    features.append({"type": "Feature", "properties": {"id": "area-1", "kind": "area"},
                     "geometry": shapely.geometry.mapping(area)})
    paths.aoi.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return paths
