"""Rows are written in the run's own order (AOI order; tiles in grid order), although batches are
cut by answer length and errors come first (mgimm_core/pipeline.py `row_order`, the writer's
`follow_order`): a user reads the layer in the order of the AOI they drew."""

from __future__ import annotations

import sqlite3

import geopandas
import pyogrio
import pytest
import rasterio
import shapely

import mgimm_core
from training.synthetic.demo_inputs import write_demo_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("order_inputs"), seed=5, size=256, objects=2)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = mgimm_core.load_model(tiny_model_dir, max_new_tokens=2, threads=1)
    yield engine
    engine.close()


def regions(scene) -> geopandas.GeoDataFrame:
    """Seven regions whose sizes alternate (batches of two group them by size, not AOI order), the
    fourth outside the scene (an error row, written before any batch)."""
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    step = (right - left) / 8
    boxes = []
    for i in range(7):
        side = step * (0.3 if i % 2 else 2.5)
        x, y = left + step * (i % 4 + 0.5), top - step * (i // 4 + 0.5) * 3
        boxes.append(shapely.box(x, y - side, x + side, y))
    boxes[3] = shapely.box(right + 10 * step, top, right + 11 * step, top + step)     # outside
    ids = ["g", "b", "e", "a", "f", "c", "d"]                  # not sorted: the order is the AOI's
    return geopandas.GeoDataFrame({"id": ids}, geometry=boxes, crs=crs)


def fid_order(path, layer="regions") -> list[str]:
    with sqlite3.connect(path) as db:
        return [r for (r,) in db.execute(f"SELECT region_id FROM {layer} ORDER BY fid")]


def test_rows_follow_the_aoi_order_in_a_geopackage_and_a_geojson(tmp_path, inputs, engine):
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    mgimm_core.describe(inputs.scene, aoi, model=engine, output=out, batch_size=2)
    assert fid_order(out) == list(aoi["id"])
    with sqlite3.connect(out) as db:
        assert [fid for (fid,) in db.execute("SELECT fid FROM regions ORDER BY fid")] == list(range(1, 8))
        assert db.execute("SELECT error_code FROM regions WHERE region_id = 'a'").fetchone()[0] == "region_outside"
    geojson = tmp_path / "o.geojson"
    mgimm_core.describe(inputs.scene, aoi, model=engine, output=geojson, batch_size=2)
    assert list(pyogrio.read_dataframe(geojson)["region_id"]) == list(aoi["id"])


def test_an_appended_run_follows_the_rows_there_in_its_own_order(tmp_path, inputs, engine):
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    mgimm_core.describe(inputs.scene, aoi, model=engine, output=out, batch_size=2)
    mgimm_core.describe(inputs.scene, aoi.iloc[::-1], model=engine, output=out, mode="append", batch_size=2)
    assert fid_order(out) == list(aoi["id"]) + list(aoi["id"])[::-1]


def test_a_resumed_run_puts_the_missing_rows_back_in_their_places(tmp_path, inputs, engine):
    """The rows an interrupted run had not written (deleted here) come back with the ids of their
    places; the rows kept are not rewritten."""
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    mgimm_core.describe(inputs.scene, aoi, model=engine, output=out, batch_size=2)
    with sqlite3.connect(out) as db:
        kept = dict(db.execute("SELECT region_id, created FROM regions WHERE region_id IN ('g', 'f')"))
        db.execute("DELETE FROM regions WHERE region_id IN ('b', 'e', 'c', 'd')")
    mgimm_core.describe(inputs.scene, aoi, model=engine, output=out, mode="resume", batch_size=2)
    assert fid_order(out) == list(aoi["id"])
    with sqlite3.connect(out) as db:
        assert [fid for (fid,) in db.execute("SELECT fid FROM regions ORDER BY fid")] == list(range(1, 8))
        assert dict(db.execute("SELECT region_id, created FROM regions WHERE region_id IN ('g', 'f')")) == kept


def test_tiles_follow_the_grid_order(tmp_path, inputs, engine):
    out = tmp_path / "t.gpkg"
    mgimm_core.describe(inputs.scene, tiles=True, tile_size=64, model=engine, output=out, batch_size=3)
    with sqlite3.connect(out) as db:
        rows = db.execute("SELECT fid, tile_index FROM tiles ORDER BY fid").fetchall()
    assert len(rows) == 16 and [index for _, index in rows] == list(range(16))
    assert [fid for fid, _ in rows] == list(range(1, 17))
