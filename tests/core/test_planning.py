"""Work planning: regions grouped by scene and ordered by raster-block locality; padding sort."""

from __future__ import annotations

import random

import numpy as np
import pyproj
import pytest
import shapely

from mgimm_core.errors import RegionOutsideError
from mgimm_core.pipeline import region_work
from mgimm_core.planning import FeatureSpec, Plan, WorkUnit, hilbert_index, plan_units
from mgimm_core.regions import AOIFeature, ChipSettings, place_region
from mgimm_core.scene import Scene

CHIP = ChipSettings(input_size=32, context=0.25, min_window=8)

UTM = pyproj.CRS("EPSG:32633")
ORIGIN = (500000.0, 4_500_000.0)      # make_raster's default upper-left corner, 10 m pixels


def square(fid: str, col: float, row: float, side: float = 6.0, origin=ORIGIN) -> AOIFeature:
    """A square AOI whose top-left corner is at scene pixel (col, row), side in pixels."""
    x0, y0 = origin[0] + col * 10, origin[1] - row * 10
    return AOIFeature(fid, shapely.box(x0, y0 - side * 10, x0 + side * 10, y0), UTM, {"id": fid})


def block_reads(plan, scene) -> tuple[int, int]:
    """(block reads summed over units, distinct blocks): a unit reads each block its windows touch."""
    rows, cols = scene.block_shape
    per_unit = []
    for unit in plan.units:
        blocks = set()
        for spec in unit.features:
            w = place_region(scene, spec.to_feature(), CHIP).window
            for r in range(max(0, w.row_off) // rows, (min(scene.height, w.row_off + w.height) - 1) // rows + 1):
                for c in range(max(0, w.col_off) // cols, (min(scene.width, w.col_off + w.width) - 1) // cols + 1):
                    blocks.add((r, c))
        per_unit.append(blocks)
    return sum(len(b) for b in per_unit), len(set().union(*per_unit))


def test_hilbert_index_visits_every_cell_once_moving_to_a_neighbour_each_step():
    order = 3
    cells = {hilbert_index(x, y, order): (x, y) for x in range(8) for y in range(8)}
    assert sorted(cells) == list(range(64))
    path = [cells[i] for i in range(64)]
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(path, path[1:]))
    with pytest.raises(ValueError):
        hilbert_index(8, 0, order)


def test_feature_spec_round_trips_geometry_crs_and_properties_exactly():
    geom = shapely.Polygon([(0.1 + 1e-13, 0.2), (1 / 3, 0.2), (1 / 3, 2 / 7), (0.1, 2 / 7)])
    feature = AOIFeature("a", geom, pyproj.CRS("EPSG:4326"), {"kind": "tank", "n": 3})
    back = FeatureSpec.from_feature(feature).to_feature()
    assert np.array_equal(shapely.get_coordinates(back.geometry), shapely.get_coordinates(geom))
    assert back.crs == feature.crs and back.id == "a" and back.properties == feature.properties


def test_plan_orders_regions_by_block_locality_so_blocks_are_read_about_once(make_raster):
    path = make_raster(width=256, height=256, tiled=True, blocksize=32)
    rng = random.Random(0)
    features = [square(f"r{r}-{c}", c * 16 + 5, r * 16 + 5) for r in range(16) for c in range(16)]
    rng.shuffle(features)                                     # input order: no locality at all
    with Scene.open(path) as scene:
        plan = plan_units(region_work([scene], features, CHIP), regions_per_unit=16)
        assert plan.regions == 256 and not plan.errors and {len(u) for u in plan.units} == {16}
        sorted_reads, distinct = block_reads(plan, scene)
        # Units of the same size cut from the input order, for comparison.
        unsorted = Plan([WorkUnit(path, tuple(FeatureSpec.from_feature(f) for f in features[i:i + 16]))
                         for i in range(0, 256, 16)], [])
        unsorted_reads, _ = block_reads(unsorted, scene)
    assert distinct == 64
    assert sorted_reads <= 1.5 * distinct            # each 32-px block read by ~one unit only
    assert unsorted_reads > 3 * sorted_reads          # the shuffled order reads blocks many times over


def test_plan_groups_by_scene_skips_done_regions_and_reports_uncovered_ones(make_raster):
    left = make_raster("left.tif", width=64, height=64)
    right = make_raster("right.tif", width=64, height=64, origin=(ORIGIN[0] + 640, ORIGIN[1]))
    features = [square("in-left", 5, 5), square("in-right", 70, 5), square("both", 60, 20),
                square("nowhere", 500, 500), square("done", 10, 30)]
    with Scene.open(left) as a, Scene.open(right) as b:
        plan = plan_units(region_work([a, b], features, CHIP), regions_per_unit=8, skip={(a.path, "done")})
    by_scene = {u.scene: sorted(f.id for f in u.features) for u in plan.units}
    assert by_scene == {left: ["both", "in-left"], right: ["both", "in-right"]}
    assert [(item.scene_name, item.subject.id) for item in plan.errors] == [("", "nowhere")]
    assert isinstance(plan.errors[0].error, RegionOutsideError) and plan.errors[0].error.code == "region_outside"

