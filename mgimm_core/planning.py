"""Work planning for distributed describe: which regions go together, and in what order.

Read each raster block once: regions are grouped by scene, then ordered along a Hilbert curve over
the scene's block grid (the GeoTIFF's internal tiles, or strips), keyed by the centre of each
region's chip window. Consecutive regions then share blocks, and a work unit (a run of consecutive
regions) goes to one worker, whose GDAL block cache serves the shared blocks. Only blocks
straddling two units can be read twice.

Work units are plain data (hex WKB + CRS WKT + properties + id per feature) so they travel to other
processes or machines; workers open the scene themselves by path.

Units: windows and blocks are scene pixels.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, cast

import pyproj
import shapely

from mgimm_core.regions import AOIFeature

if TYPE_CHECKING:
    from rasterio.windows import Window

    from mgimm_core.output.schema import ResumeKey
    from mgimm_core.pipeline import WorkItem
    from mgimm_core.regions import RegionPlacement
    from mgimm_core.scene import Scene


# ============================================================================ serialisable features
@dataclass(frozen=True)
class FeatureSpec:
    """An AOIFeature as plain data: the geometry as hex WKB (exact: WKT text, even at full
    precision, can change the last bit of a coordinate), the CRS as WKT, properties, id."""

    id: str
    wkb_hex: str
    crs_wkt: str
    properties: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_feature(cls, feature: AOIFeature) -> "FeatureSpec":
        return cls(str(feature.id), shapely.to_wkb(feature.geometry, hex=True), feature.crs.to_wkt(),
                   dict(feature.properties))

    def to_feature(self) -> AOIFeature:
        return AOIFeature(self.id, shapely.from_wkb(self.wkb_hex), pyproj.CRS.from_wkt(self.crs_wkt),
                          dict(self.properties))


@dataclass(frozen=True)
class WorkUnit:
    """Regions of one scene for one worker: the worker opens `scene` (a path or GDAL /vsi path it
    can see) and describes `features` in this order."""

    scene: str
    features: tuple[FeatureSpec, ...]
    index: int = 0                 # position in the plan (for logs)

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class Plan:
    """Work units plus the regions that no scene covers (recorded as errors by the driver)."""

    units: list[WorkUnit]
    errors: list[WorkItem]         # work items carrying the error of a region no scene covers

    @property
    def regions(self) -> int:
        return sum(len(u) for u in self.units)


# ============================================================================ locality
def hilbert_index(x: int, y: int, order: int) -> int:
    """Position of cell (x, y) along a Hilbert curve filling a 2**order x 2**order grid.

    Neighbouring positions are neighbouring cells, so sorting by it keeps nearby windows together
    (rows of a raster sorted row-major would jump back across the whole scene at each row).
    """
    side = 1 << order
    if not (0 <= x < side and 0 <= y < side):
        raise ValueError(f"cell ({x}, {y}) outside a {side} x {side} grid")
    index = 0
    s = side >> 1
    while s > 0:
        rx = 1 if x & s else 0
        ry = 1 if y & s else 0
        index += s * s * ((3 * rx) ^ ry)
        if ry == 0:                      # rotate the quadrant so the curve stays continuous
            if rx == 1:
                x, y = side - 1 - x, side - 1 - y
            x, y = y, x
        s >>= 1
    return index


def block_cell(window: Window, block_shape: tuple[int, int], scene_width: int, scene_height: int) -> tuple[int, int]:
    """(column, row) of the raster block holding the window's centre, clamped to the scene."""
    rows, cols = block_shape
    cx = min(max(window.col_off + window.width / 2, 0), scene_width - 1)
    cy = min(max(window.row_off + window.height / 2, 0), scene_height - 1)
    return int(cx // cols), int(cy // rows)


def locality_key(window: Window, scene: Scene) -> tuple[int, int, int]:
    """Sort key: Hilbert position of the window's block, then the window's offsets (ties)."""
    rows, cols = scene.block_shape
    grid = max(-(-scene.width // cols), -(-scene.height // rows), 1)
    order = max(1, (grid - 1).bit_length())
    cx, cy = block_cell(window, scene.block_shape, scene.width, scene.height)
    return hilbert_index(cx, cy, order), int(window.row_off), int(window.col_off)


def plan_units(work: Iterable[WorkItem], *, regions_per_unit: int = 32,
               skip: AbstractSet[ResumeKey] = frozenset()) -> Plan:
    """Group placed work items (`mgimm_core.pipeline.region_work`) by scene and block locality
    into work units of at most `regions_per_unit`.

    skip: resume keys (scene, region_id) already written; neither described nor reported again.
    Items that carry an error (a region no scene covers) are returned as `Plan.errors`.
    """
    if regions_per_unit < 1:
        raise ValueError(f"regions_per_unit={regions_per_unit}: need at least 1")
    per_scene: dict[str, list[tuple[tuple[int, int, int], AOIFeature]]] = {}
    scenes: dict[str, object] = {}
    errors: list[WorkItem] = []
    for item in work:
        if item.key in skip:
            continue
        if item.error is not None:
            errors.append(item)
            continue
        # placed without error: a scene, a placement and (regions only: tiles never reach here) a feature
        scene, placement = cast("Scene", item.scene), cast("RegionPlacement", item.placement)
        scenes.setdefault(scene.path, scene)
        per_scene.setdefault(scene.path, []).append(
            (locality_key(placement.window, scene), cast(AOIFeature, item.subject)))
    units: list[WorkUnit] = []
    for path, keyed in per_scene.items():
        ordered = [f for _key, f in sorted(keyed, key=lambda pair: pair[0])]
        for start in range(0, len(ordered), regions_per_unit):
            chunk = tuple(FeatureSpec.from_feature(f) for f in ordered[start:start + regions_per_unit])
            units.append(WorkUnit(path, chunk, len(units)))
    return Plan(units, errors)

