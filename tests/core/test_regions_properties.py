"""Property tests of region placement (Hypothesis): random polygons (holes, several parts, slivers,
self-intersections, huge and tiny, across the antimeridian) on real GeoTIFFs in real EPSG CRSs with
random north-up geotransforms, given in a random AOI CRS.

The truth is drawn in scene pixels and sent to `place_region` the way a user's AOI arrives: densified
to one vertex per pixel and projected with pyproj into the AOI's CRS (longitudes wrapped into
-180..180 as a GeoJSON holds them). The reference is an independent rasterisation of the truth:
shapely's point-in-polygon test at every chip pixel centre. The selected pixels must match it except
for pixels whose centre lies within half a chip pixel of an edge, and `place_region` may raise
nothing but the documented region errors, each only when the truth says so.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

from mgimm_core.errors import RegionGeometryError, RegionOutsideError, RegionTooSmallError
from mgimm_core.regions import AOIFeature, ChipSettings, place_region, read_aoi
from mgimm_core.scene import Scene

#: Scene CRSs (EPSG) with a lon/lat inside each one's area of use; three straddle the antimeridian.
SCENE_CRSS = [
    (32633, (15.0, 45.0)),        # UTM 33N
    (32601, (-180.0, 10.0)),      # UTM 1N, at its western edge: the antimeridian
    (32760, (180.0, -20.0)),      # UTM 60S, at its eastern edge
    (3857, (2.35, 48.85)),        # Web Mercator
    (4326, (10.0, 50.0)),         # lon/lat
    (4326, (180.0, 5.0)),         # lon/lat scene across the antimeridian (longitudes past 180)
    (3035, (10.0, 52.0)),         # LAEA Europe
    (2154, (2.5, 46.5)),          # Lambert-93
    (3413, (-45.0, 75.0)),        # NSIDC polar stereographic north
]
#: Examples per run: 150 in CI (a few seconds); set MGIMM_PROPERTY_EXAMPLES=5000 for a longer hunt.
EXAMPLES = int(os.environ.get("MGIMM_PROPERTY_EXAMPLES", "150"))
CHIP = ChipSettings(input_size=48, context=0.25, min_window=8)   # small, so large regions are decimated
WGS84 = pyproj.CRS.from_epsg(4326)


@dataclass
class Case:
    scene_epsg: int
    aoi_epsg: int
    transform: Affine
    width: int
    height: int
    truth: shapely.Geometry          # in scene pixels (x = column, y = row)


def star(cx, cy, radius, radii, start) -> shapely.Polygon:
    """A simple polygon: vertices at increasing angles around (cx, cy), at radius * radii[i]."""
    angles = start + np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    r = radius * np.asarray(radii)
    return shapely.Polygon(np.column_stack([cx + r * np.cos(angles), cy + r * np.sin(angles)]))


@st.composite
def shapes(draw, width, height) -> shapely.Geometry:
    kind = draw(st.sampled_from(["star", "hole", "parts", "bowtie", "sliver", "huge", "tiny"]))
    cx = draw(st.floats(-0.2 * width, 1.2 * width))
    cy = draw(st.floats(-0.2 * height, 1.2 * height))
    radius = draw(st.floats(1.0, 0.6 * max(width, height)))
    radii = draw(st.lists(st.floats(0.3, 1.0), min_size=3, max_size=12))
    start = draw(st.floats(0, 2 * np.pi))
    if kind == "tiny":
        radius = draw(st.floats(0.05, 1.5))
    if kind == "huge":
        radius = draw(st.floats(max(width, height), 3 * max(width, height)))
    outer = star(cx, cy, radius, radii, start)
    if kind == "hole":
        return outer.difference(star(cx, cy, radius * draw(st.floats(0.1, 0.25)), radii, start))
    if kind == "parts":
        dx, dy = draw(st.floats(-2, 2)), draw(st.floats(-2, 2))
        other = star(cx + dx * radius * 1.5, cy + dy * radius * 1.5, radius * 0.5, radii[::-1], start)
        return shapely.MultiPolygon([outer, other]) if not outer.intersects(other) else outer.union(other)
    if kind == "bowtie":       # vertices in random order: a self-intersecting ring, repaired by make_valid
        coords = list(outer.exterior.coords)[:-1]
        order = draw(st.permutations(range(len(coords))))
        return shapely.Polygon([coords[i] for i in order])
    if kind == "sliver":
        thin = draw(st.floats(0.01, 0.6))
        box = shapely.box(-radius, -thin / 2, radius, thin / 2)
        return shapely.affinity.translate(shapely.affinity.rotate(box, draw(st.floats(0, 180))), cx, cy)
    return outer


@st.composite
def cases(draw) -> Case:
    epsg, (lon, lat) = draw(st.sampled_from(SCENE_CRSS))
    crs = pyproj.CRS.from_epsg(epsg)
    width, height = draw(st.integers(8, 160)), draw(st.integers(8, 160))
    metres = 1.0 if crs.is_projected else 1 / 111_000
    res_x = draw(st.floats(0.5, 60.0)) * metres
    res_y = res_x * draw(st.floats(0.5, 2.0))                   # pixels need not be square
    x, y = pyproj.Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon, lat)
    if epsg == 4326 and lon == 180.0:
        x = 180.0                                                 # the scene straddles it: 180 +- its width
    origin_x = x - draw(st.floats(0.0, 1.0)) * width * res_x
    origin_y = y + draw(st.floats(0.0, 1.0)) * height * res_y
    aoi_epsg = draw(st.sampled_from([4326, epsg] + ([3857] if abs(lon) < 170 else [])))
    return Case(epsg, aoi_epsg, Affine(res_x, 0, origin_x, 0, -res_y, origin_y), width, height,
                draw(shapes(width, height)))


def write_scene(folder: Path, case: Case) -> str:
    path = folder / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=case.width, height=case.height, count=1, dtype="uint8",
                       crs=f"EPSG:{case.scene_epsg}", transform=case.transform) as dst:
        dst.write(np.zeros((1, case.height, case.width), np.uint8))
    return str(path)


def as_aoi(case: Case) -> AOIFeature:
    """The truth as a user's AOI: one vertex per pixel, in the AOI CRS (longitudes within -180..180)."""
    scene_crs, aoi_crs = pyproj.CRS.from_epsg(case.scene_epsg), pyproj.CRS.from_epsg(case.aoi_epsg)
    to_aoi = pyproj.Transformer.from_crs(scene_crs, aoi_crs, always_xy=True)
    t = case.transform

    def project(xy):
        x, y = t.c + xy[:, 0] * t.a, t.f + xy[:, 1] * t.e
        if case.aoi_epsg != case.scene_epsg:
            x, y = to_aoi.transform(x, y)
        if aoi_crs.is_geographic:
            x = (np.asarray(x) + 180.0) % 360.0 - 180.0
        return np.column_stack([x, y])

    dense = shapely.transform(shapely.segmentize(case.truth, 1.0), project)
    # through read_aoi, as every caller does: it repairs the polygon (make_valid) in the AOI's CRS
    [feature] = read_aoi(shapely.to_wkt(dense, rounding_precision=-1), crs=aoi_crs)
    return feature


def polygonal(geom) -> shapely.Geometry:
    parts = [g for g in shapely.get_parts(shapely.make_valid(geom)) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_selected_pixels_match_an_independent_rasterisation(case):
    # GEOS repairs a self-intersecting ring differently once its edges are split, so the reference
    # repairs the ring the AOI carries (one vertex per pixel), as read_aoi does in the AOI's CRS.
    truth = polygonal(shapely.segmentize(case.truth, 1.0))
    assume(not truth.is_empty and truth.area > 1e-9)
    inside = polygonal(truth.intersection(shapely.box(0, 0, case.width, case.height)))
    note(f"scene EPSG:{case.scene_epsg} {case.width}x{case.height} {case.transform}; AOI EPSG:{case.aoi_epsg}; "
         f"truth {truth.wkt[:200]}; inside area {inside.area:.4g} of {truth.area:.4g}")
    with tempfile.TemporaryDirectory() as folder, Scene.open(write_scene(Path(folder), case)) as scene:
        event(f"scene EPSG:{case.scene_epsg}, AOI EPSG:{case.aoi_epsg}")
        try:
            placement = place_region(scene, as_aoi(case), CHIP)
        except RegionOutsideError:
            event("outside")
            assert inside.area <= 1e-6 * max(truth.area, 1.0)
            return
        except (RegionTooSmallError, RegionGeometryError):
            event("too small")
            assert truth.area < 1e-3 or inside.area < 1e-3
            return
    event("decimated" if placement.scale > 1 else "full resolution")
    # Shares agree up to edges moved by 0.01 pixel (PROJ's round trips are good to about a millimetre,
    # a visible share of a 0.25 m pixel).
    tolerance = 0.01 * (inside.length + truth.length * inside.area / truth.area) / truth.area
    assert placement.inside_share == pytest.approx(inside.area / truth.area, abs=max(tolerance, 1e-6))
    if inside.area == 0:       # touching the scene at a point: a rounding sliver inside is no error
        return
    window, scale = placement.window, placement.scale
    minx, miny, maxx, maxy = inside.bounds
    assert window.col_off <= minx + 1e-6 and window.row_off <= miny + 1e-6
    assert maxx <= window.col_off + window.width + 1e-6 and maxy <= window.row_off + window.height + 1e-6
    h, w = placement.out_shape
    cols, rows = np.meshgrid(window.col_off + (np.arange(w) + 0.5) * scale,
                             window.row_off + (np.arange(h) + 0.5) * scale)
    expected = shapely.contains_xy(inside, cols, rows)
    near_edge = shapely.distance(inside.boundary, shapely.points(cols, rows)) <= 0.5 * scale + 1e-6
    if not (expected & ~near_edge).any():
        # Every centre inside (if any) lies on an edge, within rounding: GDAL may find none and then
        # place_region takes every pixel the polygon touches.
        assert placement.mask.any()
        assert (shapely.distance(inside, shapely.points(cols, rows))[placement.mask]
                <= math.sqrt(0.5) * scale + 1e-6).all()
        return
    wrong = (placement.mask != expected) & ~near_edge
    assert not wrong.any(), f"{int(wrong.sum())} pixel(s) away from the edges differ, e.g. at {np.argwhere(wrong)[:3]}"
    x1, y1, x2, y2 = placement.box
    mask_rows, mask_cols = np.nonzero(placement.mask)
    assert x1 - 1 <= mask_cols.min() + 0.5 and mask_cols.max() + 0.5 <= x2 + 1     # the box holds the mask
    assert y1 - 1 <= mask_rows.min() + 0.5 and mask_rows.max() + 0.5 <= y2 + 1
