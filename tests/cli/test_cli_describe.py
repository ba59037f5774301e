"""`mgimm-geo describe` end to end: real GeoTIFFs, real model weights (tiny, random), real GeoPackages.

The tiny model's words are random; these tests check the plumbing (regions, layers, durability, errors).
What the trained demo model says is checked in test_demo_model.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner

from batch.cli import cli
from training.synthetic.demo_inputs import write_demo_inputs


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("demo_inputs"), seed=7, size=512, objects=10)


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def read_regions(path):
    meta, _fids, geoms, values = pyogrio.raw.read(str(path), layer="regions")
    return [dict(zip(meta["fields"], row)) for row in zip(*values)], geoms, meta


def test_regions_layer_keeps_aoi_geometry_attributes_and_adds_results(tmp_path, tiny_model_dir, demo_inputs):
    out = tmp_path / "out.gpkg"
    result = run(["describe", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi), "-o", str(out),
                  "--model", tiny_model_dir, "--max-new-tokens", "4", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["described"] == demo_inputs.objects + 1 and summary["failed"] == 0
    assert set(summary["timings_s"]) >= {"read", "model", "write"}
    rows, geoms, meta = read_regions(out)
    assert len(rows) == demo_inputs.objects + 1
    assert "4326" in meta["crs"]                       # the AOI's CRS, not the scene's UTM
    aoi = json.loads(Path(demo_inputs.aoi).read_text())["features"]
    by_id = {r["region_id"]: r for r in rows}
    for feature in aoi:
        row = by_id[feature["properties"]["id"]]
        assert row["kind"] == feature["properties"]["kind"]          # input attributes kept
        assert row["description"] is not None and row["error"] is None   # random weights may say ""
        assert 0.99 <= row["valid_fraction"] <= 1.0 and row["gsd_m"] >= 0.5
        assert row["model"] and row["prompt"] and row["created"]
        assert 0.0 <= row["no_object_p"] <= 1.0       # a region-token model measures it for every region
    with sqlite3.connect(out) as db:
        runs = db.execute("SELECT model_sha256, parameters FROM runs").fetchall()
        styles = db.execute("SELECT count(*) FROM layer_styles WHERE f_table_name='regions'").fetchone()
    assert len(runs) == 1 and len(runs[0][0]) == 64 and json.loads(runs[0][1])["batch_size"] == 4
    assert styles[0] == 1


def test_existing_output_is_not_clobbered_and_overwrite_replaces(tmp_path, tiny_model_dir, demo_inputs):
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"precious")
    args = ["describe", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi), "-o", str(out),
            "--model", tiny_model_dir, "--max-new-tokens", "2"]
    result = run(args)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert out.read_bytes() == b"precious"
    assert run(args + ["--overwrite"]).exit_code == 0
    assert len(read_regions(out)[0]) == demo_inputs.objects + 1


def test_region_outside_the_scene_is_recorded_and_exit_code_says_so(tmp_path, tiny_model_dir, demo_inputs):
    aoi = json.loads(Path(demo_inputs.aoi).read_text())
    aoi["features"].append({"type": "Feature", "properties": {"id": "far-away", "kind": "x"},
                            "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [10.01, 10], [10.01, 10.01],
                                                                              [10, 10]]]}})
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(aoi))
    out = tmp_path / "out.gpkg"
    result = run(["describe", str(demo_inputs.scene), "--aoi", str(path), "-o", str(out),
                  "--model", tiny_model_dir, "--max-new-tokens", "2"])
    assert result.exit_code == 3
    rows = {r["region_id"]: r for r in read_regions(out)[0]}
    assert "outside" in rows["far-away"]["error"] and rows["far-away"]["description"] is None
    assert rows["far-away"]["error_code"] == "region_outside"
    assert rows["area-1"]["error"] is None and rows["area-1"]["error_code"] is None


def test_regions_previews_exactly_the_chips_describe_reads(tmp_path, tiny_model_dir, demo_inputs):
    preview = CliRunner().invoke(cli, ["regions", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi),
                                       "--model", tiny_model_dir, "--json"])
    assert preview.exit_code == 0, preview.output
    out = tmp_path / "out.gpkg"
    result = run(["describe", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi), "-o", str(out),
                  "--model", tiny_model_dir, "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["reads"] == summary["described"] == demo_inputs.objects + 1    # one read per region
    rows = {r["region_id"]: r for r in read_regions(out)[0]}
    for region in json.loads(preview.stdout)["regions"]:
        row = rows[region["id"]]
        assert row["gsd_m"] == pytest.approx(region["gsd_m"], rel=1e-6)
        assert row["valid_fraction"] == pytest.approx(region["valid_fraction"], abs=1e-6)


def test_regions_defaults_to_the_demo_models_chip_settings(demo_inputs):
    from mgimm_core.model_dir import ModelDirectory

    preview = CliRunner().invoke(cli, ["regions", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi), "--json"])
    assert preview.exit_code == 0, preview.output
    report = json.loads(preview.stdout)
    chip = ModelDirectory.resolve().chip
    assert report["model"] == "demo" and report["chip"]["input_size"] == chip.input_size == 126   # demo model v3: DINOv2-S, patch 14
    assert all(max(r["out_shape"]) <= 126 for r in report["regions"] if r["status"] == "ok")


def test_describe_takes_the_scene_stretch_options(tmp_path, tiny_model_dir, make_raster, monkeypatch):
    """--value-range / --percentiles reach the scenes describe reads (README "Values"), and the runs
    table records them. The stretch is read through a spy on the real Scene.stretch property."""
    from mgimm_core.scene import Scene

    seen = []
    real = Scene.stretch

    def recording(self):
        stretch = real.fget(self)
        seen.append((stretch.source, tuple(stretch.low), tuple(stretch.high)))
        return stretch

    monkeypatch.setattr(Scene, "stretch", property(recording))
    data = np.arange(3 * 48 * 64, dtype="uint16").reshape(3, 48, 64)
    scene = make_raster("u16.tif", dtype="uint16", data=data)
    out = tmp_path / "out.gpkg"
    result = run(["describe", scene, "--aoi", "bbox:500100,4499700,500300,4499900", "--aoi-crs", "EPSG:32633",
                  "-o", str(out), "--model", tiny_model_dir, "--max-new-tokens", "2", "--value-range", "0,1000"])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {("value_range", (0.0,) * 3, (1000.0,) * 3)}
    with sqlite3.connect(out) as db:
        (parameters,) = db.execute("SELECT parameters FROM runs").fetchone()
    assert json.loads(parameters)["value_range"] == [0.0, 1000.0]
    seen.clear()
    result = run(["describe", scene, "--aoi", "bbox:500100,4499700,500300,4499900", "--aoi-crs", "EPSG:32633",
                  "-o", str(tmp_path / "p.gpkg"), "--model", tiny_model_dir, "--max-new-tokens", "2",
                  "--percentiles", "0,100"])
    assert result.exit_code == 0, result.output
    kind, low, high = seen[0]
    assert kind != "value_range" and low[0] == 0 and high[2] == data[2].max()     # 0-100 %: the full range


def test_model_demo_names_the_demo_model_unless_a_model_folder_is_called_demo(demo_inputs, tmp_path, monkeypatch,
                                                                              tiny_model_dir):
    """`--model demo` is the shipped demo model; a model folder named demo in the working folder wins."""
    from mgimm_core.model_dir import DEMO_MODEL_DIR

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()                           # a folder of that name, but no model in it
    preview = CliRunner().invoke(cli, ["regions", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi),
                                       "--json", "--model", "demo"])
    assert preview.exit_code == 0, preview.output
    assert json.loads(preview.stdout)["model"] == "demo"
    assert json.loads(CliRunner().invoke(cli, ["model-info", "demo", "--json"]).stdout)["path"] == str(DEMO_MODEL_DIR)
    (tmp_path / "demo").rmdir()
    os.symlink(tiny_model_dir, tmp_path / "demo")
    assert json.loads(CliRunner().invoke(cli, ["model-info", "demo", "--json"]).stdout)["path"] != str(DEMO_MODEL_DIR)


@pytest.mark.parametrize("args, flag", [
    (["--tiles", "--tile-size", "256", "--tile-overlap", "256"], "--tile-overlap"),
    (["--tiles", "--aoi", "AOI"], "--aoi / --tiles"),
])
def test_contradicting_options_are_usage_errors_naming_the_flag(tmp_path, demo_inputs, args, flag):
    out = tmp_path / "out.gpkg"
    args = [str(demo_inputs.aoi) if a == "AOI" else a for a in args]
    result = CliRunner().invoke(cli, ["describe", str(demo_inputs.scene), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_verbose_logs_mgimm_geos_own_steps_and_not_library_debug(tmp_path, tiny_model_dir, demo_inputs):
    out = tmp_path / "out.gpkg"
    args = ["describe", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi), "-o", str(out), "--model",
            tiny_model_dir, "--max-new-tokens", "2", "-q"]
    done = subprocess.run([sys.executable, "-m", "batch.cli", "-v", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "INFO mgimm_core.jobs: scene" in done.stderr and "already done" in done.stderr
    assert "DEBUG" not in done.stderr                       # -v is not -vvv: no rasterio/GDAL debug


def test_resume_with_nothing_left_never_imports_torch(tmp_path, tiny_model_dir, demo_inputs):
    out = tmp_path / "out.gpkg"
    args = ["describe", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi), "-o", str(out),
            "--model", tiny_model_dir, "--max-new-tokens", "2"]
    assert run(args).exit_code == 0
    code = ("import sys, json; from batch.cli import cli\n"
            "try:\n    cli(sys.argv[1:], standalone_mode=False)\nfinally:\n"
            "    print(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args, "--resume", "-q"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["described"] == 0 and summary["already_done"] == demo_inputs.objects + 1
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"torch": False}


def test_tiles_mode_writes_one_polygon_per_tile(tmp_path, tiny_model_dir, demo_inputs):
    out = tmp_path / "tiles.gpkg"
    result = run(["describe", str(demo_inputs.scene), "--tiles", "--tile-size", "256", "-o", str(out),
                  "--model", tiny_model_dir, "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    meta, _fids, geoms, values = pyogrio.raw.read(str(out), layer="tiles")
    assert len(geoms) == 4                                   # 512 x 512 scene, 256 px tiles
    info = pyogrio.read_info(str(out), layer="tiles")
    minx, miny, maxx, maxy = info["total_bounds"]
    import rasterio

    with rasterio.open(demo_inputs.scene) as src:
        assert np.allclose((minx, miny, maxx, maxy), tuple(src.bounds), atol=1e-6)


def test_a_scene_smaller_than_one_tile_is_one_clipped_tile(tmp_path, tiny_model_dir, make_raster):
    scene = make_raster(width=100, height=80)
    out = tmp_path / "tiles.gpkg"
    result = run(["describe", scene, "--tiles", "--tile-size", "512", "-o", str(out), "--model", tiny_model_dir,
                  "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["described"] == 1
    frame = pyogrio.read_dataframe(out, layer="tiles")
    assert len(frame) == 1 and frame.loc[0, "valid_fraction"] == 1.0
    import rasterio

    with rasterio.open(scene) as src:
        assert np.allclose(frame.total_bounds, tuple(src.bounds))     # the scene's extent, not 512 px


@pytest.mark.parametrize("suffix", [".geojson", ".csv"])
def test_other_formats_by_extension(tmp_path, tiny_model_dir, demo_inputs, suffix):
    out = tmp_path / f"out{suffix}"
    result = run(["describe", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi), "-o", str(out),
                  "--model", tiny_model_dir, "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert len(pyogrio.raw.read(str(out))[3][0]) == demo_inputs.objects + 1


@pytest.mark.parametrize("case", ["missing_scene", "not_a_raster", "missing_aoi", "bad_band", "bad_model",
                                  "no_aoi_no_tiles", "geographic_aoi_on_raster_without_crs"])
def test_bad_input_fails_cleanly_without_output(tmp_path, tiny_model_dir, demo_inputs, make_raster, case):
    scene, aoi, extra = str(demo_inputs.scene), str(demo_inputs.aoi), []
    model = tiny_model_dir
    if case == "missing_scene":
        scene = str(tmp_path / "nope.tif")
    elif case == "not_a_raster":
        scene = str(tmp_path / "notes.tif")
        Path(scene).write_text("not a raster")
    elif case == "missing_aoi":
        aoi = str(tmp_path / "missing.geojson")
    elif case == "bad_band":
        extra = ["-b", "9"]
    elif case == "bad_model":
        model = str(tmp_path)
    elif case == "geographic_aoi_on_raster_without_crs":
        scene = make_raster(crs=None, count=3)
    out = tmp_path / "out.gpkg"
    args = ["describe", scene, "-o", str(out), "--model", model] + extra
    if case != "no_aoi_no_tiles":
        args += ["--aoi", aoi]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output and "Error" in result.output
    assert not out.exists()
    named = {"missing_scene": "nope.tif", "not_a_raster": "notes.tif", "missing_aoi": "missing.geojson",
             "bad_band": "-b", "bad_model": str(tmp_path), "no_aoi_no_tiles": "--aoi",
             "geographic_aoi_on_raster_without_crs": "CRS"}[case]
    assert named in result.output


@pytest.mark.parametrize("command", ["describe", "regions"])
def test_six_bands_without_a_band_choice_is_a_usage_error(tmp_path, tiny_model_dir, demo_inputs, make_raster,
                                                          command):
    """A 6-band raster without RGB colour interpretation needs -b: the option's usage error (exit 2),
    naming -b/--bands, before anything is written."""
    scene = make_raster("landsat6.tif", count=6, colorinterp="gray,undefined,undefined,undefined,undefined,undefined")
    out = tmp_path / "out.gpkg"
    args = [command, scene, "--aoi", str(demo_inputs.aoi), "--model", tiny_model_dir]
    result = CliRunner().invoke(cli, args + (["-o", str(out)] if command == "describe" else []))
    assert result.exit_code == 2, result.output
    assert "-b/--bands" in result.output and "6 bands" in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_leaves_a_valid_file_and_resume_finishes_without_duplicates(tmp_path, tiny_model_dir, signum):
    inputs = write_demo_inputs(tmp_path / "in", seed=11, size=512, objects=40)
    out = tmp_path / "out.gpkg"
    cmd = [sys.executable, "-m", "batch.cli", "describe", str(inputs.scene), "--aoi", str(inputs.aoi),
           "-o", str(out), "--model", tiny_model_dir, "--batch-size", "2", "--max-new-tokens", "60", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    written = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if out.exists():
            try:
                written = len(pyogrio.raw.read(str(out), layer="regions")[2])
            except Exception:  # the layer may not be created yet
                written = 0
            if written >= 2:
                break
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
    os.kill(proc.pid, signum)
    code = proc.wait()
    if signum == signal.SIGTERM:           # unwound: the run is recorded as interrupted, not running
        assert code == 128 + signal.SIGTERM
        with sqlite3.connect(out) as db:
            assert db.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
    partial = len(pyogrio.raw.read(str(out), layer="regions")[2])
    total = inputs.objects + 1
    assert 2 <= partial < total
    result = subprocess.run(cmd[:-3] + ["--max-new-tokens", "2", "--resume", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["already_done"] == partial
    rows = read_regions(out)[0]
    ids = [r["region_id"] for r in rows]
    assert len(ids) == total and len(set(ids)) == total


def test_region_as_on_an_mgimm_model_says_to_leave_it_out(tiny_model_dir, demo_inputs, tmp_path):
    """MGIMM reads a region one way (its region tokens), which is no --region-as choice: the message
    says to drop the option rather than offering 'tokens' (found by a user's trial)."""
    result = CliRunner().invoke(cli, ["describe", str(demo_inputs.scene), "--aoi", str(demo_inputs.aoi),
                                      "-o", str(tmp_path / "o.gpkg"), "--model", tiny_model_dir,
                                      "--region-as", "text"])
    assert result.exit_code == 2 and "one way only (tokens); leave the option out" in result.output
    assert not (tmp_path / "o.gpkg").exists()
