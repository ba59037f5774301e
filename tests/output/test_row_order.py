"""Rows are written in the run's own order (AOI order; tiles in grid order), although batches are
cut by answer length and errors come first (mgimm_core/pipeline.py `row_order`, the writer's
`follow_order`): a user reads the layer in the order of the AOI they drew."""

from __future__ import annotations

import sqlite3

import pyogrio
import shapely

import mgimm_core
from tests.output.conftest import regions


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


def test_resuming_with_another_aoi_order_never_reuses_an_id(tmp_path, inputs, engine):
    """A resumed run whose AOI was reordered and grew (a region failed before, one is new) writes
    every row once; ids that clash get fresh ones instead of stopping the run (a review's case)."""
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    first = aoi.iloc[[0, 3, 1, 2]]                        # g, a (outside: an error row), b, e
    mgimm_core.describe(inputs.scene, first, model=engine, output=out, batch_size=2)
    again = aoi.iloc[[1, 3, 0, 2, 4, 5]]                  # b, a, g, e, f, c: reordered, two new
    mgimm_core.describe(inputs.scene, again, model=engine, output=out, mode="resume", batch_size=2)
    with sqlite3.connect(out) as db:
        ids = [r for (r,) in db.execute("SELECT region_id FROM regions")]
        fids = [f for (f,) in db.execute("SELECT fid FROM regions")]
    assert sorted(ids) == sorted(["g", "a", "b", "e", "f", "c"]) and len(set(fids)) == len(fids)


def test_a_scene_given_twice_is_described_once(tmp_path, inputs, engine, caplog):
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    mgimm_core.describe([inputs.scene, inputs.scene], aoi, model=engine, output=out, batch_size=2)
    assert fid_order(out) == list(aoi["id"]) and "given more than once" in caplog.text


def test_appending_after_deleted_rows_gives_new_ids(tmp_path, inputs, engine):
    """Append numbers its rows after every id the layer has held (its AUTOINCREMENT sequence), so a
    deleted row's id never comes back for another row."""
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    mgimm_core.describe(inputs.scene, aoi, model=engine, output=out, batch_size=2)
    with sqlite3.connect(out) as db:
        db.execute("DELETE FROM regions WHERE fid > 5")
    mgimm_core.describe(inputs.scene, aoi.iloc[:2], model=engine, output=out, mode="append", batch_size=2)
    with sqlite3.connect(out) as db:
        assert [f for (f,) in db.execute("SELECT fid FROM regions ORDER BY fid")] == [1, 2, 3, 4, 5, 8, 9]


def test_chips_of_one_raster_are_one_scene_in_the_order():
    """The server's per-region chips all carry the raster's name: places are 0, 1, 2 ..., not
    spread out as if each chip were another scene."""
    from types import SimpleNamespace

    from mgimm_core.pipeline import DescribeOptions, row_order
    from mgimm_core.regions import AOIFeature

    chips = [SimpleNamespace(path="raster_b64") for _ in range(4)]
    features = [AOIFeature(str(i), shapely.box(0, 0, 1, 1), None, {}) for i in range(4)]
    place = row_order(chips, features, DescribeOptions())
    assert [place(("raster_b64", str(i))) for i in range(4)] == [0, 1, 2, 3]
    assert place(("raster_b64", "not in the run")) is None
    assert place(("another.tif", "0")) is None and place(("", "2")) == 2     # "": outside every scene


def test_a_row_without_a_place_never_takes_the_id_a_later_row_of_its_batch_wants(tmp_path):
    """The writer on its own: in one batch, a row with no place (or a taken id) and a row whose place
    is the next id. SQLite's next id would be that one; the writer gives the first an id after it."""
    from mgimm_core.output import RegionRecord, RunInfo, open_output

    def record(ident):
        return RegionRecord(scene="s.tif", region_id=ident, geometry=shapely.box(0, 0, 1, 1), crs="EPSG:32633",
                            description=ident)

    out = tmp_path / "o.gpkg"
    with open_output(out, mode="create", run=RunInfo()) as writer:
        writer.follow_order(lambda key: "abc".find(key[1]))
        writer.write_regions([record("a"), record("b"), record("c")])
    with open_output(out, mode="resume", run=RunInfo()) as writer:
        writer.follow_order(lambda key: {"c": 0, "z": 1}.get(key[1]))   # c written at fid 3: base 2
        writer.write_regions([record("y"), record("z")])                # y: no place; z: its place, fid 4
    assert fid_order(out) == ["a", "b", "c", "z", "y"]
