"""Output layers: real GeoPackage / GeoJSON / FlatGeobuf / CSV files, read back with pyogrio (GDAL)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import pytest
import shapely

from mgimm_core.errors import OutputError
from mgimm_core.output import (RegionRecord, RunInfo, TileRecord, completed_region_keys, completed_tile_keys,
                               open_output, region_key, sha256_path)
from mgimm_core.output.gpkg import decode_geometry

UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 4_500_000.0


def region(i: int, *, scene: str = "scene.tif", error: str | None = None, crs=UTM, box=None, **props):
    geom = box if box is not None else shapely.box(X0 + 20 * i, Y0, X0 + 20 * i + 10, Y0 + 10)
    return RegionRecord(
        scene=scene, region_id=str(i), geometry=geom, crs=crs,
        description=None if error else f"a small white vehicle number {i}",
        attributes={} if error else {"name": "vehicle", "color": "white", "size": "small", "count": 2},
        properties={"id": i, "Description": f"drawn {i}", "area_ha": 0.01 * i, "checked": i % 2 == 0, **props},
        valid_fraction=0.75, gsd_m=0.5, model="tiny-mgimm", prompt="Describe the region.", error=error)


def read(path, layer="regions"):
    """Field name -> array, plus shapely geometries, via GDAL."""
    meta, _, geoms, values = pyogrio.raw.read(os.fspath(path), layer=layer)
    fields = dict(zip(meta["fields"].tolist(), values))
    return fields, [None if g is None else shapely.from_wkb(g) for g in (geoms if geoms is not None else [])], meta


# ------------------------------------------------------------------------------- round trip
def test_geopackage_round_trip_schema_values_runs_and_style(tmp_path):
    path = tmp_path / "out.gpkg"
    run = RunInfo(model_id="tiny-mgimm", model_sha256="ab" * 32, parameters={"batch_size": 4, "bands": [3, 2, 1]},
                  command_line="mgimm-geo describe scene.tif --aoi aoi.geojson -o out.gpkg")
    with open_output(path, run=run) as out:
        out.write_regions([region(0), region(1), region(2, error="RegionError: outside the scene")])
        out.write_tiles([TileRecord("scene.tif", 5, 1, 2, shapely.box(X0, Y0, X0 + 100, Y0 + 100), UTM,
                                    description="fields and a road", valid_fraction=1.0, gsd_m=0.5, model="tiny")])

    info = pyogrio.read_info(path, layer="regions")
    assert info["driver"] == "GPKG" and info["geometry_type"] == "MultiPolygon" and info["crs"] == UTM
    assert info["total_bounds"] == (X0, Y0, X0 + 50, Y0 + 10)           # extent from gpkg_contents
    fields, geoms, _ = read(path)
    # Ours first, then the input attributes; clashing ones prefixed, case-insensitively.
    for name in ("region_id", "scene", "description", "object", "color", "shape", "size", "orientation",
                 "valid_fraction", "gsd_m", "scene", "model", "prompt", "created", "error", "run_id",
                 "id", "in_Description", "area_ha", "checked", "extra_attributes"):
        assert name in fields, name
    assert list(fields["region_id"]) == ["0", "1", "2"]
    assert list(fields["object"]) == ["vehicle", "vehicle", None]           # vocabulary "name" -> object
    assert list(fields["color"]) == ["white", "white", None]
    assert json.loads(fields["extra_attributes"][0]) == {"count": 2}
    assert list(fields["in_Description"]) == ["drawn 0", "drawn 1", "drawn 2"]
    assert fields["id"].dtype == np.int64 and fields["checked"].dtype == np.bool_
    assert fields["area_ha"][2] == pytest.approx(0.02)
    assert list(fields["error"]) == [None, None, "RegionError: outside the scene"]
    assert fields["created"].dtype.kind == "M"                                # GDAL reads a DateTime field
    assert geoms[1].equals(shapely.MultiPolygon([shapely.box(X0 + 20, Y0, X0 + 30, Y0 + 10)]))

    tiles, tile_geoms, _ = read(path, "tiles")
    assert list(tiles["tile_index"]) == [5] and list(tiles["row"]) == [1] and list(tiles["col"]) == [2]
    assert tile_geoms[0].equals(shapely.box(X0, Y0, X0 + 100, Y0 + 100))

    runs, _, _ = read(path, "runs")
    assert list(runs["run_id"]) == [run.run_id] and list(runs["status"]) == ["finished"]
    assert runs["model_sha256"][0] == "ab" * 32 and runs["command_line"][0].startswith("mgimm-geo describe")
    assert json.loads(runs["parameters"][0]) == {"batch_size": 4, "bands": [3, 2, 1]}
    assert runs["rasterio_version"][0] and runs["gdal_version"][0] and runs["torch_version"][0]
    assert (runs["regions_written"][0], runs["regions_failed"][0], runs["tiles_written"][0]) == (2, 1, 1)
    assert not runs["finished"][0] < runs["started"][0]

    # The file is a single self-contained GeoPackage again, with the header GDAL/QGIS check.
    assert not os.path.exists(f"{path}-wal")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 10300
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        srs = {r[0] for r in conn.execute("SELECT srs_id FROM gpkg_spatial_ref_sys")}
        assert {-1, 0, 4326, 32633} <= srs
        blob = conn.execute("SELECT geom FROM regions WHERE region_id = '0'").fetchone()[0]
        assert blob[:2] == b"GP" and decode_geometry(blob).equals(geoms[0])
        styles = conn.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML, styleSLD "
                              "FROM layer_styles ORDER BY f_table_name").fetchall()
    assert [(s[0], s[1], s[2]) for s in styles] == [("regions", "geom", 1), ("tiles", "geom", 1)]
    qml = ET.fromstring(styles[0][3].split("\n", 1)[1])                      # after the DOCTYPE line
    assert qml.get("labelsEnabled") == "1"
    assert '"object"' in qml.find("labeling/settings/text-style").get("fieldName")
    fill = qml.find(".//layer[@class='SimpleFill']/Option/Option[@name='color']").get("value")
    assert 0 < int(fill.split(",")[3]) < 255                                  # semi-transparent
    ET.fromstring(styles[0][4].encode())                                      # the SLD is XML too


def test_mixed_crs_records_are_reprojected_to_the_layer_crs(tmp_path):
    path = tmp_path / "mixed.gpkg"
    lonlat = shapely.box(14.99, 40.6, 15.0, 40.61)
    expected = pyproj.Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(14.99, 40.6)
    with open_output(path) as out:
        out.write_regions([region(0)])
        out.write_regions([region(1, crs="EPSG:4326", box=lonlat)])
    _, geoms, _ = read(path)
    assert pyogrio.read_info(path, layer="regions")["crs"] == UTM
    corners = shapely.points(shapely.get_coordinates(geoms[1]))
    assert shapely.distance(shapely.Point(expected), corners).min() < 1e-6      # a reprojected vertex
    assert 0.9e6 < geoms[1].area < 1.0e6                                 # 0.01 x 0.01 degrees ~ 846 m x 1110 m


# ------------------------------------------------------------------------------ durability
def test_each_batch_is_visible_to_another_reader_before_close(tmp_path):
    path = tmp_path / "live.gpkg"
    with open_output(path) as out:
        out.write_regions([region(0), region(1)])
        fields, _, _ = read(path)                                        # a second reader: GDAL
        assert list(fields["region_id"]) == ["0", "1"]
        out.write_regions([region(2)])
        assert len(read(path)[0]["region_id"]) == 3
        runs, _, _ = read(path, "runs")
        assert list(runs["status"]) == ["running"] and runs["regions_written"][0] == 3


WRITER_SCRIPT = textwrap.dedent("""
    import sys, shapely
    from mgimm_core.output import open_output, RegionRecord
    with open_output(sys.argv[1], mode=sys.argv[2]) as out:
        done = out.completed_region_keys()
        for batch in range(int(sys.argv[3])):
            records = [RegionRecord("scene.tif", f"{batch}-{i}", shapely.box(i, batch, i + 1, batch + 1),
                                    "EPSG:32633", description="x" * 500, properties={"batch": batch})
                       for i in range(25) if ("scene.tif", f"{batch}-{i}") not in done]
            out.write_regions(records)
            print(batch, flush=True)
""")


def test_killed_writer_leaves_whole_batches_and_resume_finishes_without_duplicates(tmp_path):
    path, script = tmp_path / "killed.gpkg", tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(path), "create", "100000"], stdout=subprocess.PIPE)
    for count, _ in enumerate(proc.stdout, 1):
        if count == 12:
            break
    os.kill(proc.pid, signal.SIGKILL)                                   # while it keeps writing batches
    proc.wait()
    proc.stdout.close()

    fields, _, _ = read(path)                                           # GDAL opens it read-only
    per_batch = Counter(fields["batch"].tolist())
    assert len(per_batch) >= 12 and set(per_batch.values()) == {25}     # whole batches only
    assert list(read(path, "runs")[0]["status"]) == ["running"]         # never closed
    written = len(fields["batch"])
    keys = completed_region_keys(path)
    assert len(keys) == written

    batches = len(per_batch) + 3
    subprocess.run([sys.executable, str(script), str(path), "resume", str(batches)], check=True,
                   stdout=subprocess.DEVNULL)
    fields, _, _ = read(path)
    assert len(fields["region_id"]) == 25 * batches == len(set(fields["region_id"]))
    runs, _, _ = read(path, "runs")
    assert list(runs["status"]) == ["interrupted", "finished"]          # the killed run, known dead once
    assert runs["regions_written"][1] == 25 * batches - written        # the resume holds the lock; only the rest was described


def test_resume_retries_failed_regions_replacing_their_rows(tmp_path):
    path = tmp_path / "resume.gpkg"
    with open_output(path) as out:
        out.write_regions([region(0), region(1, error="ModelError: out of memory"), region(2)])
        out.write_tiles([TileRecord("scene.tif", 0, 0, 0, shapely.box(0, 0, 1, 1), UTM, error="boom"),
                         TileRecord("scene.tif", 1, 0, 1, shapely.box(1, 0, 2, 1), UTM, description="ok")])
    assert completed_region_keys(path) == {region_key("scene.tif", 0), region_key("scene.tif", 2)}
    assert completed_tile_keys(path) == {("scene.tif", 1)}
    assert completed_region_keys(tmp_path / "missing.gpkg") == set()

    with open_output(path, mode="resume") as out:
        assert out.completed_region_keys() == {("scene.tif", "0"), ("scene.tif", "2")}
        out.write_regions([region(1)])
        out.write_tiles([TileRecord("scene.tif", 0, 0, 0, shapely.box(0, 0, 1, 1), UTM, description="ok now")])
    fields, _, _ = read(path)
    assert sorted(fields["region_id"]) == ["0", "1", "2"]
    assert list(fields["error"]) == [None, None, None]
    assert completed_region_keys(path) == {("scene.tif", str(i)) for i in range(3)}
    tiles, _, _ = read(path, "tiles")
    assert sorted(tiles["tile_index"]) == [0, 1] and None not in tiles["description"]


# ------------------------------------------------------------------------- modes: no clobber
def test_existing_output_is_never_clobbered_without_overwrite(tmp_path):
    path = tmp_path / "out.gpkg"
    with open_output(path) as out:
        out.write_regions([region(0)])
    for target in (path, tmp_path / "x.geojson"):
        target.touch() if not target.exists() else None
        with pytest.raises(OutputError) as caught:
            open_output(target)
        message = str(caught.value)
        assert str(target) in message and "--overwrite" in message and "--append" in message
        assert "--resume" in message
    assert len(read(path)[0]["region_id"]) == 1                         # untouched

    with open_output(path, mode="overwrite") as out:
        out.write_regions([region(5), region(6)])
    fields, _, _ = read(path)
    assert list(fields["region_id"]) == ["5", "6"] and len(read(path, "runs")[0]["run_id"]) == 1


def test_append_adds_a_run_and_rejects_a_foreign_layer(tmp_path):
    path = tmp_path / "out.gpkg"
    with open_output(path) as out:
        out.write_regions([region(0)])
    with open_output(path, mode="append") as out:
        out.write_regions([region(0, extra_note="new column")])
    fields, _, _ = read(path)
    assert list(fields["region_id"]) == ["0", "0"] and list(fields["extra_note"]) == [None, "new column"]
    runs, _, _ = read(path, "runs")
    assert len(set(runs["run_id"])) == 2 and set(fields["run_id"]) == set(runs["run_id"])

    foreign = tmp_path / "foreign.gpkg"
    pyogrio.raw.write(str(foreign), np.array([shapely.to_wkb(shapely.box(0, 0, 1, 1))], dtype=object),
                      [np.array(["a"], dtype=object)], ["name"], layer="regions", driver="GPKG",
                      geometry_type="Polygon", crs=UTM)
    with pytest.raises(OutputError, match="regions.*not an mgimm-geo regions layer.*region_id"):
        open_output(foreign, mode="append")
    with open_output(foreign, mode="append", regions_layer="descriptions") as out:   # beside the AOIs: fine
        out.write_regions([region(0)])
    assert {"regions", "descriptions", "runs"} <= set(pyogrio.list_layers(foreign)[:, 0])

    not_gpkg = tmp_path / "notes.gpkg"
    not_gpkg.write_text("not a database")
    with pytest.raises(OutputError, match="not a readable GeoPackage"):
        open_output(not_gpkg, mode="append")


# ------------------------------------------------------------------------------ other formats
def test_geojson_is_rfc7946_lonlat_with_tiles_and_runs_beside_it(tmp_path):
    path = tmp_path / "out.geojson"
    with open_output(path) as out:
        out.write_regions([region(0), region(1, error="failed")])
        out.write_tiles([TileRecord("scene.tif", 0, 0, 0, shapely.box(X0, Y0, X0 + 100, Y0 + 100), UTM)])
    doc = json.loads(path.read_text())
    assert "crs" not in doc                                              # RFC 7946: always WGS 84
    lon, lat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(X0, Y0)
    ring = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert min(c[0] for c in ring) == pytest.approx(lon, abs=1e-6)
    assert min(c[1] for c in ring) == pytest.approx(lat, abs=1e-6)
    assert doc["features"][0]["properties"]["object"] == "vehicle"
    assert doc["features"][1]["properties"]["error"] == "failed"
    assert pyogrio.read_info(tmp_path / "out_tiles.geojson")["features"] == 1
    runs = json.loads((tmp_path / "out_runs.json").read_text())
    assert runs["status"] == "finished" and runs["regions_failed"] == 1
    with pytest.raises(OutputError, match="--resume needs a GeoPackage"):
        open_output(tmp_path / "new.geojson", mode="resume")


def test_flatgeobuf_keeps_the_layer_crs(tmp_path):
    path = tmp_path / "out.fgb"
    with open_output(path) as out:
        out.write_regions([region(0), region(1)])
    fields, geoms, meta = read(path)
    order = np.argsort(fields["id"])                                     # the spatial index reorders features
    assert meta["crs"] == UTM and list(fields["region_id"][order]) == ["0", "1"]
    assert fields["id"].dtype == np.int64 and fields["in_Description"][order][1] == "drawn 1"
    assert geoms[order[0]].equals(shapely.MultiPolygon([shapely.box(X0, Y0, X0 + 10, Y0 + 10)]))


def test_csv_has_a_wkt_column_in_lonlat(tmp_path):
    path = tmp_path / "out.csv"
    with open_output(path) as out:
        out.write_regions([region(0)])
    header, first = path.read_text().splitlines()[:2]
    assert header.split(",")[0] == "WKT" and "region_id" in header and first.startswith('"MULTIPOLYGON (((')
    geom = shapely.from_wkt(first.split('"')[1])
    assert -180 < geom.bounds[0] < 180 and -90 < geom.bounds[1] < 90


def test_tiles_only_export_goes_to_the_main_file_and_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "tiles.fgb"
    with open_output(path) as out:
        out.write_tiles([TileRecord("scene.tif", i, 0, i, shapely.box(i, 0, i + 1, 1), UTM) for i in range(3)])
    assert pyogrio.read_info(path)["features"] == 3 and not (tmp_path / "tiles_tiles.fgb").exists()
    with pytest.raises(OutputError, match=r"\.shp.*\.gpkg.*\.geojson.*\.fgb.*\.csv"):
        open_output(tmp_path / "out.shp")
    (tmp_path / "results").mkdir()                           # a folder without an extension: named as a folder
    with pytest.raises(OutputError, match=r"results is a folder.*results/descriptions\.gpkg"):
        open_output(tmp_path / "results")
    assert not list((tmp_path / "results").iterdir())


def test_sha256_of_a_model_folder_changes_with_its_files(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    first = sha256_path(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\0" * 10)
    assert sha256_path(tmp_path / "m") != first and len(first) == 64
