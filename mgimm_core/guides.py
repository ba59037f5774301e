"""Guide objects: polygons of a second layer (footprints, detections) that become region prompts
inside a tile or AOI, the paper's multi-region mode.

A tile/AOI chip is placed as usual (`mgimm_core.regions.place_region`); every guide polygon whose
centre lies inside the tile/AOI polygon is mapped onto that chip's pixel grid exactly as the
region itself is (same window, same decimation), giving a box and a mask per guide. The largest
`max_regions` are kept, largest first; the rest are counted. Training (training/demo_data.py) cuts
its multi-region samples with this same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import geometry_mask

from mgimm_core.errors import RegionError
from mgimm_core.regions import AOIFeature, RegionPlacement, aoi_to_scene_pixels

if TYPE_CHECKING:
    from mgimm_core.scene import Scene

#: Guide regions per tile/AOI sequence unless asked otherwise (largest first).
DEFAULT_MAX_GUIDES = 8


@dataclass
class GuideRegion:
    """One guide object on a chip: its box and mask in chip pixels, its area in scene pixels."""

    id: str
    box: tuple[float, float, float, float]
    mask: np.ndarray
    area: float
    geometry: shapely.Geometry              # in the guide layer's CRS, as given
    crs: object
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class GuideIndex:
    """The guide layer on one scene: polygons in scene pixels, with a spatial index."""

    features: list[AOIFeature]
    pixels: list[shapely.Geometry]
    tree: shapely.STRtree

    @classmethod
    def build(cls, scene: Scene, features: list[AOIFeature]) -> "GuideIndex":
        kept, pixels = [], []
        for feature in features:
            try:
                geom = aoi_to_scene_pixels(scene, feature)
            except RegionError:
                continue
            if geom.is_empty or geom.area <= 0:
                continue
            kept.append(feature)
            pixels.append(geom)
        return cls(kept, pixels, shapely.STRtree(pixels))

    def inside(self, region_pixels: shapely.Geometry) -> list[int]:
        """Indexes of the guides whose centre lies inside `region_pixels` (scene pixels)."""
        candidates = self.tree.query(region_pixels)
        return [int(i) for i in candidates if region_pixels.contains(self.pixels[int(i)].centroid)]


def guides_on_chip(index: GuideIndex, placement: RegionPlacement, region_pixels: shapely.Geometry,
                   max_regions: int = DEFAULT_MAX_GUIDES) -> tuple[list[GuideRegion], int]:
    """(guides on the chip, largest first, at most max_regions; how many more were inside)."""
    window = placement.window
    scale = placement.scale
    chip_to_scene = Affine(scale, 0, window.col_off, 0, scale, window.row_off)
    found = sorted(index.inside(region_pixels), key=lambda i: -index.pixels[i].area)
    out = []
    for i in found[:max_regions]:
        geom = index.pixels[i]
        mask = geometry_mask([geom], out_shape=placement.out_shape, transform=chip_to_scene, invert=True)
        if not mask.any():
            mask = geometry_mask([geom], out_shape=placement.out_shape, transform=chip_to_scene,
                                 all_touched=True, invert=True)
        h, w = placement.out_shape
        minx, miny, maxx, maxy = geom.bounds
        box = (float(np.clip((minx - window.col_off) / scale, 0, w - 1e-3)),
               float(np.clip((miny - window.row_off) / scale, 0, h - 1e-3)),
               float(np.clip((maxx - window.col_off) / scale, 0, w)),
               float(np.clip((maxy - window.row_off) / scale, 0, h)))
        if not mask.any() or box[2] <= box[0] or box[3] <= box[1]:
            continue
        feature = index.features[i]
        out.append(GuideRegion(feature.id, box, mask, float(geom.area), feature.geometry, feature.crs,
                               dict(feature.properties)))
    return out, max(0, len(found) - len(out))
