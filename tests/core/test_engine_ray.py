"""The Ray engine on a real local Ray cluster (2 CPUs, 2 actors), real GeoTIFFs, a tiny random model.

Results must equal the local engine's region by region (greedy decoding is deterministic), an
interrupted run must resume without duplicates, and Ray must stay optional.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest
from click.testing import CliRunner

from batch.cli import cli
from mgimm_core.engines import LoadOptions, open_engine
from mgimm_core.errors import SceneError
from mgimm_core.output import RunInfo
from mgimm_core.pipeline import DescribeOptions, Timings, describe_to_output
from mgimm_core.planning import FeatureSpec, WorkUnit
from mgimm_core.regions import read_aoi
from mgimm_core.scene import Scene
from training.synthetic.demo_inputs import write_demo_inputs

import ray  # noqa: E402  (the dev extra installs it, pyproject.toml)
pytestmark = pytest.mark.slow      # over a few seconds each; runs in CI (`-m "not slow"` skips)

COMPARED = ("description", "object", "color", "shape", "size", "orientation", "valid_fraction", "gsd_m",
            "error", "kind", "model", "prompt")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The demo scene and its AOIs plus one AOI outside the scene (an error row)."""
    demo = write_demo_inputs(tmp_path_factory.mktemp("ray_inputs"), seed=7, size=512, objects=10)
    aoi = json.loads(Path(demo.aoi).read_text())
    aoi["features"].append({"type": "Feature", "properties": {"id": "far-away", "kind": "x"},
                            "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [10.01, 10], [10.01, 10.01],
                                                                              [10, 10]]]}})
    path = Path(demo.aoi).with_name("aoi_plus.geojson")
    path.write_text(json.dumps(aoi))
    return demo.scene, path, len(aoi["features"])


class Workers:
    """Two CPU actors shared by the tests of this module (loading them is the slow part);
    `release()` frees the 2-CPU cluster for a test that starts its own through the CLI."""

    def __init__(self, model_dir):
        self.model_dir, self._engine = model_dir, None

    def engine(self):
        if self._engine is None:
            self._engine = open_engine("ray", self.model_dir, LoadOptions(device="cpu", max_new_tokens=4), workers=2)
        return self._engine

    def release(self):
        if self._engine is not None:
            self._engine.close()
            self._engine = None


@pytest.fixture(scope="module")
def workers(ray_cluster, tiny_model_dir):
    pool = Workers(tiny_model_dir)
    yield pool
    pool.release()


@pytest.fixture
def ray_engine(workers):
    return workers.engine()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, tiny_model_dir, inputs):
    scene_path, aoi, _n = inputs
    engine = open_engine("local", tiny_model_dir, LoadOptions(device="cpu", max_new_tokens=4))
    out = tmp_path_factory.mktemp("local") / "local.gpkg"
    with Scene.open(str(scene_path)) as scene:
        describe_to_output([scene], read_aoi(str(aoi)), engine, str(out), "create", RunInfo(model_id="tiny"),
                           DescribeOptions(batch_size=4))
    return rows_by_key(out)


def rows_by_key(path):
    meta, _fids, geoms, values = pyogrio.raw.read(str(path), layer="regions")
    rows = [dict(zip(meta["fields"], row), geometry=g) for row, g in zip(zip(*values), geoms)]
    keys = [(r["scene"], r["region_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate regions in the output"
    return {k: r for k, r in zip(keys, rows)}


def assert_same_results(got: dict, expected: dict):
    assert set(got) == set(expected)
    for key, row in expected.items():
        for name in COMPARED:
            a, b = got[key][name], row[name]
            assert a == b or (a != a and b != b), (key, name, a, b)          # NaN (no value) equals NaN
        assert got[key]["geometry"] == row["geometry"], key          # same WKB: geometry untouched


def test_ray_engine_matches_the_local_engine_region_by_region(tmp_path, ray_engine, inputs, local_rows):
    scene_path, aoi, n = inputs
    out = tmp_path / "ray.gpkg"
    ray_engine.regions_per_unit = 3
    with Scene.open(str(scene_path)) as scene:
        summary = describe_to_output([scene], read_aoi(str(aoi)), ray_engine, str(out), "create",
                                     RunInfo(model_id="tiny"), DescribeOptions(batch_size=4))
    ray_engine.regions_per_unit = None
    assert summary["described"] == n - 1 and summary["failed"] == 1
    assert summary["workers"] == 2 and summary["work_units"] == 4       # 10 placed regions, 3 per unit
    assert set(summary["timings_s"]) >= {"plan", "read", "model", "write"}
    rows = rows_by_key(out)
    assert_same_results(rows, local_rows)
    assert "outside" in rows[(str(scene_path), "far-away")]["error"]


def test_a_scene_the_workers_cannot_see_fails_with_the_scene_error(ray_engine, inputs):
    _scene, aoi, _n = inputs
    unit = WorkUnit("/nonexistent/scene.tif", tuple(FeatureSpec.from_feature(f) for f in read_aoi(str(aoi))[:1]))
    with pytest.raises(SceneError, match="no such file"):
        list(ray_engine.stream([unit], DescribeOptions(batch_size=2), timings=Timings()))


def test_workers_that_cannot_fit_fail_clearly_instead_of_waiting(ray_engine, tiny_model_dir):
    from mgimm_core.errors import ModelError

    with pytest.raises(ModelError, match="free.*fewer --workers"):   # ray_engine holds both CPUs
        open_engine("ray", tiny_model_dir, LoadOptions(device="cpu"), workers=2)


def test_interrupted_ray_run_resumes_through_the_cli_without_duplicates(tmp_path, workers, tiny_model_dir,
                                                                         inputs, local_rows):
    ray_engine = workers.engine()
    scene_path, aoi, n = inputs
    out = tmp_path / "ray.gpkg"
    written = []
    ray_engine.regions_per_unit = 2
    with Scene.open(str(scene_path)) as scene:
        summary = describe_to_output(
            [scene], read_aoi(str(aoi)), ray_engine, str(out), "create", RunInfo(model_id="tiny"),
            DescribeOptions(batch_size=2), on_batch=lambda done, total: written.append(done),
            should_cancel=lambda: len(written) >= 2)
    assert summary["cancelled"] is True
    partial = rows_by_key(out)
    assert 0 < len(partial) < n                          # the first units were committed, not the rest
    workers.release()                                    # the interrupted run's workers are gone
    result = CliRunner().invoke(cli, ["describe", str(scene_path), "--aoi", str(aoi), "-o", str(out), "--resume",
                                      "--engine", "ray", "--workers", "2", "--device", "cpu", "--model",
                                      tiny_model_dir, "--max-new-tokens", "4", "--batch-size", "4", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 3, result.output                      # far-away failed, as it should
    summary = json.loads(result.stdout)
    assert summary["engine"] == "ray" and summary["already_done"] == len(
        [r for r in partial.values() if r["error"] is None])
    rows = rows_by_key(out)                                          # asserts no duplicates
    assert_same_results(rows, local_rows)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_local_describe_never_imports_ray(tmp_path, tiny_model_dir, inputs):
    scene_path, aoi, _n = inputs
    code = f"""
import sys
import mgimm_core, mgimm_core.engines, mgimm_core.planning
from click.testing import CliRunner
from batch.cli import cli
r = CliRunner().invoke(cli, ["describe", {str(scene_path)!r}, "--aoi", {str(aoi)!r}, "-o", {str(tmp_path / 'o.gpkg')!r},
                             "--model", {tiny_model_dir!r}, "--max-new-tokens", "2", "-q"])
assert r.exit_code == 3, r.output
assert "ray" not in sys.modules, "ray was imported"
print("ok")
"""
    proc = run_python(code)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_engine_ray_without_ray_installed_names_the_pip_command(tmp_path, inputs, tiny_model_dir):
    scene_path, aoi, _n = inputs
    # sys.modules["ray"] = None makes `import ray` raise ImportError, as on a machine without Ray.
    code = f"""
import sys
sys.modules["ray"] = None
from click.testing import CliRunner
from batch.cli import cli
r = CliRunner().invoke(cli, ["describe", {str(scene_path)!r}, "--aoi", {str(aoi)!r}, "-o", {str(tmp_path / 'o.gpkg')!r},
                             "--model", {tiny_model_dir!r}, "--engine", "ray"])
print(r.exit_code)
print(r.output)
"""
    proc = run_python(code)
    assert proc.stdout.splitlines()[0] == "1", proc.stdout + proc.stderr[-2000:]
    assert 'pip install "ray[default]"' in proc.stdout
    assert not (tmp_path / "o.gpkg").exists()


def test_compile_option_decodes_the_same_words_with_a_static_cache(tiny_model_dir):
    """--compile / Describer.load(compile=True): static KV cache (compiled on CUDA only); same greedy text."""
    from mgimm_core.describer import Describer
    from mgimm_core.model.testing_mgimm import random_chip

    plain = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=6)
    static = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=6, compile=True)
    assert static.generate_options == {"cache_implementation": "static"} and plain.generate_options == {}
    images = [random_chip(40, 40, i) for i in range(3)]
    args = (images, [(2.0, 2.0, 20.0, 30.0)] * 3, [None] * 3)
    got, expected = static.describe(*args), plain.describe(*args)
    assert [(r.description, r.attribute_text) for r in got] == [(r.description, r.attribute_text) for r in expected]
