"""Where a region's chip lies on a raster, the way the geo core places it, for server mode.

The server cannot see the user's files, and a whole raster is far too big for a request, so in
server mode the plugin cuts each region's chip itself and sends only that (request_data.py). For the
server to describe exactly what a local worker would, the chip must be the window the core reads:
mgimm_core/regions.py `chip_window` and `place_region` (region bounds in scene pixels, a square with
the context margin, at least `min_window`, read decimated to the model's input size when larger) and
mgimm_core/scene.py `Scene.read` (a window passing the raster's edges: the part inside read on its
own rounded sub-grid, the rest invalid). The plugin must not import mgimm_core, so this module
repeats that arithmetic; tests/plugin/test_plugin_chips.py checks it against the core for many regions and
scenes, and that the server, placing the region on the chip, takes the whole chip as its window.

Pure Python (no Qt, no GDAL), so the project's own tests load it by file path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class ChipSettings:
    """The model's chip settings as the server reports them (`chip_settings` request)."""

    input_size: int
    context: float
    min_window: int

    @classmethod
    def from_reply(cls, reply: dict) -> "ChipSettings":
        return cls(int(reply["chip_size"]), float(reply["chip_context"]), int(reply["chip_min_window"]))


@dataclass(frozen=True)
class ChipPlan:
    """One region's window (scene pixels: col_off, row_off, side; square) and its read shape."""

    col_off: int
    row_off: int
    side: int
    read: int

    @property
    def scale(self) -> float:
        """Scene pixels per chip pixel."""
        return self.side / self.read

    def inside_scene(self, width: int, height: int) -> bool:
        return (self.col_off >= 0 and self.row_off >= 0 and self.col_off + self.side <= width
                and self.row_off + self.side <= height)


def inverse_geotransform(gt) -> Tuple[float, float, float, float, float, float]:
    """(a, b, c, d, e, f) mapping CRS x/y to pixel col/row, computed as affine's Affine.__invert__
    (what the core applies to a region, mgimm_core/regions.py aoi_to_scene_pixels), so the pixel
    coordinates agree to the last bit. `gt` is GDAL's (x0, a, b, y0, d, e)."""
    sa, sb, sc, sd, se, sf = gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]
    idet = 1.0 / (sa * se - sb * sd)
    ra, rb, rd, re = se * idet, -sb * idet, -sd * idet, sa * idet
    return ra, rb, -sc * ra - sf * rb, rd, re, -sc * rd - sf * re


def chip_window(bounds, *, scene_width: int, scene_height: int, settings: ChipSettings) -> ChipPlan:
    """mgimm_core/regions.py chip_window: a square integer window around a region's pixel bounds
    (minx, miny, maxx, maxy of the region clipped to the scene), kept inside the scene when it fits."""
    minx, miny, maxx, maxy = bounds
    extent = max(maxx - minx, maxy - miny)
    side = max(math.ceil(extent * (1 + 2 * settings.context) - 1e-9), int(settings.min_window),
               math.ceil(maxx) - math.floor(minx), math.ceil(maxy) - math.floor(miny), 1)

    def offset(lo, hi, size):
        off = math.floor((lo + hi) / 2 - side / 2)
        off = min(off, math.floor(lo))
        off = max(off, math.ceil(hi) - side)
        if side <= size:
            off = min(max(off, 0), size - side)
        return off

    read = side if side <= settings.input_size else int(settings.input_size)
    return ChipPlan(offset(minx, maxx, scene_width), offset(miny, maxy, scene_height), side, read)


def inner_read(plan: ChipPlan, width: int, height: int
               ) -> Optional[Tuple[Tuple[int, int, int, int], Tuple[int, int, int, int]]]:
    """For a window passing the scene's edges, mgimm_core/scene.py Scene.read's split: the part
    inside the scene (col, row, width, height in scene pixels) and where it lands in the chip
    (c0, r0, c1, r1 in chip pixels); None when nothing of the window is on the scene."""
    col, row, side, read = plan.col_off, plan.row_off, plan.side, plan.read
    if not (col < width and row < height and col + side > 0 and row + side > 0):
        return None
    c_lo, r_lo = max(col, 0), max(row, 0)
    c_hi, r_hi = min(col + side, width), min(row + side, height)
    sy = sx = read / side
    r0, r1 = int(round((r_lo - row) * sy)), int(round((r_hi - row) * sy))
    c0, c1 = int(round((c_lo - col) * sx)), int(round((c_hi - col) * sx))
    if r1 <= r0 or c1 <= c0:
        return None
    return (c_lo, r_lo, c_hi - c_lo, r_hi - r_lo), (c0, r0, c1, r1)


def chip_geotransform(gt, plan: ChipPlan) -> Tuple[float, float, float, float, float, float]:
    """GDAL geotransform of the chip: the window's corner, pixels `plan.scale` times larger."""
    s = plan.scale
    return (gt[0] + plan.col_off * gt[1] + plan.row_off * gt[2], gt[1] * s, gt[2] * s,
            gt[3] + plan.col_off * gt[4] + plan.row_off * gt[5], gt[4] * s, gt[5] * s)


#: the largest chip side (pixels) sent at full resolution when the decimated chip cannot be used:
#: 2048 x 2048 x 3 bytes is 12 MiB before compression and base64, well inside the server's default
#: 64 MB request limit (docs/protocol.md)
FULL_RESOLUTION_MAX_SIDE = 2048


def server_chip(bounds, *, scene_width: int, scene_height: int, settings: ChipSettings
                ) -> Tuple[ChipPlan, bool]:
    """The chip to send for a region (bounds as for chip_window) and whether the server, placing the
    region on it, reads exactly the pixels the core reads from the whole raster.

    The chip covers the core's window, at one of three resolutions, the first that works:
    1. the core's read shape (decimated to the model input), when the server's placement on that
       chip is the whole chip at the same size (the usual case: a window larger than the model input
       and a minimum window no larger than it), so the server reads the chip as it is;
    2. full resolution (up to FULL_RESOLUTION_MAX_SIDE), so the server places the same window and
       decimates it as the core does (exact when the window lies on the raster);
    3. else FULL_RESOLUTION_MAX_SIDE pixels across: close, not exact (decimated twice).
    """
    plan = chip_window(bounds, scene_width=scene_width, scene_height=scene_height, settings=settings)
    inside = plan.inside_scene(scene_width, scene_height)
    if plan.read == plan.side:
        return plan, True
    scale = plan.scale
    chip_bounds = ((bounds[0] - plan.col_off) / scale, (bounds[1] - plan.row_off) / scale,
                   (bounds[2] - plan.col_off) / scale, (bounds[3] - plan.row_off) / scale)
    again = chip_window(chip_bounds, scene_width=plan.read, scene_height=plan.read, settings=settings)
    if (again.col_off, again.row_off, again.side, again.read) == (0, 0, plan.read, plan.read):
        return plan, True
    if plan.side <= FULL_RESOLUTION_MAX_SIDE:
        return ChipPlan(plan.col_off, plan.row_off, plan.side, plan.side), inside
    return ChipPlan(plan.col_off, plan.row_off, plan.side, FULL_RESOLUTION_MAX_SIDE), False
