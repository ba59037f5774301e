"""Bad and hostile inputs to `mgimm-geo describe` and the request service: each gets a per-row error
with its code, or one clear message and a non-zero exit, and nothing written is lost. Real GeoTIFFs,
real GeoJSON/GeoPackage files read back with pyogrio, the tiny random MGIMM."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner

from batch.cli import cli

UTM = "EPSG:32633"
X0, Y0 = 500000.0, 4_500_000.0         # make_raster's default origin: 10 m pixels, 64 x 48


def square(x, y, side=100.0) -> list:
    """A closed ring (UTM metres) of a square with its lower-left corner at scene pixel offsets."""
    return [[X0 + x, Y0 - y - side], [X0 + x + side, Y0 - y - side], [X0 + x + side, Y0 - y],
            [X0 + x, Y0 - y], [X0 + x, Y0 - y - side]]


def write_aoi(path, features: list[tuple[dict, dict]]) -> str:
    """A GeoJSON file of (properties, geometry) in EPSG:32633 (given to describe as --aoi-crs)."""
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props, "geometry": geom} for props, geom in features]}))
    return str(path)


def polygon(x, y, side=100.0) -> dict:
    return {"type": "Polygon", "coordinates": [square(x, y, side)]}


def describe(args, model, catch=True):
    base = ["describe", *args, "--model", model, "--max-new-tokens", "2", "--aoi-crs", UTM, "-q"]
    return CliRunner().invoke(cli, base, catch_exceptions=catch)


def rows_of(path) -> list[dict]:
    meta, _fids, geoms, values = pyogrio.raw.read(str(path), layer="regions")
    rows = [dict(zip(meta["fields"], row)) for row in zip(*values)]
    for row, geom in zip(rows, geoms):
        row["_geometry"] = geom
    return rows


# ================================================================== AOI ids, scene names, geometries
def test_duplicate_aoi_ids_are_refused_before_anything_is_written(tmp_path, tiny_model_dir, make_raster):
    scene = make_raster()
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "AB"[i % 2]}, polygon(20 + 20 * i, 20)) for i in range(8)])
    out = tmp_path / "out.gpkg"
    for mode in ([], ["--resume"]):
        result = describe([scene, "--aoi", aoi, "-o", str(out), *mode], tiny_model_dir)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "4 features share the id 'A'" in result.output and "unique 'id'" in result.output
        assert not out.exists()


def test_resume_with_the_scene_named_another_way_skips_what_is_done(tmp_path, tiny_model_dir, make_raster,
                                                                      monkeypatch):
    make_raster("rgb.tif")
    monkeypatch.chdir(tmp_path)
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": f"r{i}"}, polygon(20 + 40 * i, 20)) for i in range(4)])
    assert describe(["rgb.tif", "--aoi", aoi, "-o", "out.gpkg"], tiny_model_dir).exit_code == 0
    result = describe(["./sub/../rgb.tif", "--aoi", aoi, "-o", "out.gpkg", "--resume"], tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["already_done"] == 4
    rows = rows_of(tmp_path / "out.gpkg")
    assert len(rows) == 4 and {r["scene"] for r in rows} == {str(tmp_path / "rgb.tif")}


def test_points_lines_and_nan_coordinates_are_error_rows_and_the_run_goes_on(tmp_path, tiny_model_dir,
                                                                             make_raster):
    scene = make_raster()
    features = [({"id": f"p{i}"}, polygon(20 + 40 * i, 20)) for i in range(5)]
    features[2] = ({"id": "pt"}, {"type": "Point", "coordinates": [X0 + 50, Y0 - 50]})
    features[3] = ({"id": "ln"}, {"type": "LineString", "coordinates": [[X0 + 50, Y0 - 50], [X0 + 90, Y0 - 90]]})
    nan_ring = square(0, 0)
    nan_ring[1][0] = float("nan")       # Python's json writes NaN, and GDAL reads it
    features.append(({"id": "nan"}, {"type": "Polygon", "coordinates": [nan_ring]}))
    aoi = write_aoi(tmp_path / "aoi.geojson", features)
    out = tmp_path / "out.gpkg"
    for mode in ([], ["--resume"]):
        result = describe([scene, "--aoi", aoi, "-o", str(out), *mode], tiny_model_dir)
        assert result.exit_code == 3, result.output
        assert "Traceback" not in result.output
        rows = {r["region_id"]: r for r in rows_of(out)}
        assert sorted(rows) == ["ln", "nan", "p0", "p1", "p4", "pt"]
        for bad in ("pt", "ln", "nan"):
            assert rows[bad]["error_code"] == "region_geometry" and rows[bad]["_geometry"] is None
            assert rows[bad]["description"] is None
        assert "not finite" in rows["nan"]["error"]
        assert all(rows[good]["error"] is None for good in ("p0", "p1", "p4"))


def test_an_all_nodata_region_is_an_error_row_without_a_description(tmp_path, tiny_model_dir, make_raster):
    data = np.full((3, 48, 64), 40, np.uint8)
    data[:, :, 32:] = 0                              # the east half is nodata
    scene = make_raster(data=data, nodata=0)
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "data"}, polygon(20, 20)), ({"id": "empty"}, polygon(400, 20))])
    out = tmp_path / "out.gpkg"
    result = describe([scene, "--aoi", aoi, "-o", str(out)], tiny_model_dir)
    assert result.exit_code == 3, result.output
    rows = {r["region_id"]: r for r in rows_of(out)}
    assert rows["empty"]["error_code"] == "region_nodata" and rows["empty"]["description"] is None
    assert rows["empty"]["valid_fraction"] == 0.0 and rows["empty"]["_geometry"] is not None
    assert rows["data"]["error"] is None and rows["data"]["description"] is not None


# ================================================================== outputs
def test_aoi_properties_that_differ_only_by_case_or_clash_with_ours_keep_every_value(tmp_path, tiny_model_dir,
                                                                                     make_raster):
    scene = make_raster()
    props = {"id": "r1", "Name": "upper", "name": "lower", "description": "theirs", "in_description": "real"}
    aoi = write_aoi(tmp_path / "aoi.geojson", [(props, polygon(20, 20))])
    for suffix in (".gpkg", ".geojson"):
        out = tmp_path / f"out{suffix}"
        result = describe([scene, "--aoi", aoi, "-o", str(out)], tiny_model_dir)
        assert result.exit_code == 0, result.output
        meta, _, _, values = pyogrio.raw.read(str(out))
        row = dict(zip(meta["fields"], (v[0] for v in values)))
        assert (row["Name"], row["in_name"]) == ("upper", "lower")
        assert (row["in_description"], row["in_in_description"]) == ("real", "theirs")
        assert row["description"] != "theirs"                 # ours: what the model said


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write in: chmod 555, or for root (whom modes do not stop) a read-only tmpfs."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".csv"])
def test_a_read_only_output_folder_fails_before_anything_is_described(read_only_folder, tiny_model_dir,
                                                                       make_raster, tmp_path, suffix):
    scene = make_raster()
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "r1"}, polygon(20, 20))])
    result = subprocess.run([sys.executable, "-m", "batch.cli", "-v", "describe", scene, "--aoi", aoi, "-o",
                             str(read_only_folder / f"out{suffix}"), "--model", tiny_model_dir, "--aoi-crs", UTM],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Error: Output" in result.stderr and str(read_only_folder) in result.stderr
    assert "loaded on" not in result.stderr                  # failed before the model was even loaded


def test_a_second_writer_of_one_geopackage_gets_a_clear_error_and_loses_nothing(tmp_path, tiny_model_dir,
                                                                                 make_raster):
    from mgimm_core.output import RegionRecord, open_output

    scene = make_raster()
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": f"r{i}"}, polygon(20 + 40 * i, 20)) for i in range(3)])
    out = tmp_path / "out.gpkg"
    with open_output(out, mode="create") as first:            # a run that is writing now (this process)
        first.write_regions([RegionRecord(scene="s", region_id="x", geometry=None, crs=UTM, description="d")])
        for mode in ("--resume", "--append", "--overwrite"):
            result = describe([scene, "--aoi", aoi, "-o", str(out), mode], tiny_model_dir)
            assert result.exit_code == 1, result.output
            assert "being written by another mgimm-geo run" in result.output and "Traceback" not in result.output
        first.write_regions([RegionRecord(scene="s", region_id="y", geometry=None, crs=UTM, description="d")])
    assert [r["region_id"] for r in rows_of(out)] == ["x", "y"]
    result = describe([scene, "--aoi", aoi, "-o", str(out), "--resume"], tiny_model_dir)   # free again
    assert result.exit_code == 0 and len(rows_of(out)) == 5


def test_disk_full_reports_the_write_error_and_keeps_committed_batches(tmp_path, tiny_model_dir, make_raster):
    scene = make_raster(width=640, height=480)
    aoi = write_aoi(tmp_path / "aoi.geojson",
                    [({"id": f"r{i}", "note": "x" * 2000}, polygon(100 * (i % 60), 100 * (i // 60)))
                     for i in range(600)])
    out = tmp_path / "out.gpkg"
    cmd = [sys.executable, "-m", "batch.cli", "describe", scene, "--aoi", aoi, "-o", str(out), "--model",
           tiny_model_dir, "--max-new-tokens", "1", "--batch-size", "8", "--aoi-crs", UTM, "-q"]

    def limit_file_size():       # a full disk, as SQLite sees it: writes past 600 kB fail (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))

    result = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Error: Output" in result.stderr
    assert "full" in result.stderr and "rolled back" in result.stderr
    kept = rows_of(out)                                      # a valid GeoPackage of whole batches
    assert 0 < len(kept) < 600 and len(kept) % 8 == 0
    result = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ids = [r["region_id"] for r in rows_of(out)]
    assert len(ids) == 600 and len(set(ids)) == 600


# ================================================================== models
class _RunsCode:
    """Unpickling this runs a command: what a hostile pytorch_model.bin can hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_model_folder_with_only_a_pickled_bin_is_a_clear_model_error_and_runs_nothing(tmp_path, tiny_model_dir,
                                                                                         make_raster):
    import pickle
    import shutil

    model = tmp_path / "pickled_model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    marker = tmp_path / "code_ran"
    with open(model / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": _RunsCode(marker)}, f)
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "r1"}, polygon(20, 20))])
    result = describe([make_raster(), "--aoi", aoi, "-o", str(tmp_path / "out.gpkg")], str(model))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "never unpickles code" in result.output and str(model) in result.output
    assert not marker.exists()


def test_a_reader_holding_the_geopackage_open_at_the_end_does_not_fail_the_run(tmp_path, caplog):
    from mgimm_core.output import RegionRecord, open_output

    out = tmp_path / "out.gpkg"
    reader = None
    with caplog.at_level("WARNING", logger="mgimm_core.output.writer"):
        with open_output(out, mode="create") as writer:
            writer.write_regions([RegionRecord(scene="s", region_id="x", geometry=None, crs=UTM, description="d")])
            reader = sqlite3.connect(out)         # QGIS showing the layer while the run ends
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM regions").fetchone() == (1,)
    assert "write-ahead-log mode" in caplog.text
    reader.close()
    assert [r["region_id"] for r in rows_of(out)] == ["x"]
    with sqlite3.connect(out) as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("finished",)]


@pytest.mark.parametrize("suffix", [".geojson", ".fgb", ".csv", ".gpkg"])
@pytest.mark.parametrize("mode", [[], ["--overwrite"]])
def test_an_output_path_that_is_a_folder_fails_before_anything_is_described(tmp_path, tiny_model_dir, make_raster,
                                                                            monkeypatch, suffix, mode):
    from mgimm_core.describer import Describer

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded: the run described before it failed")

    monkeypatch.setattr(Describer, "load", load)
    folder = tmp_path / f"out{suffix}"
    folder.mkdir()
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "r1"}, polygon(20, 20))])
    result = describe([make_raster(), "--aoi", aoi, "-o", str(folder), *mode], tiny_model_dir)
    assert result.exit_code == 1, result.output        # an output that cannot be written (README: 1)
    assert f"Output {folder} is a folder" in result.output and "-o" in result.output
    assert "Traceback" not in result.output and "--overwrite" not in result.output
    assert folder.is_dir() and not any(folder.iterdir())


def test_a_folder_where_a_file_beside_the_output_goes_fails_before_anything_is_described(tmp_path, tiny_model_dir,
                                                                                        make_raster):
    (tmp_path / "out_runs.json").mkdir()
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "r1"}, polygon(20, 20))])
    result = describe([make_raster(), "--aoi", aoi, "-o", str(tmp_path / "out.geojson"), "--overwrite"],
                      tiny_model_dir)
    assert result.exit_code == 1 and f"{tmp_path / 'out_runs.json'}, which is written beside it, is a folder" \
        in result.output, result.output
    assert not (tmp_path / "out.geojson").exists()
