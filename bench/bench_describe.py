"""Benchmark `mgimm-geo describe` as a user runs it, quiet and under a competing CPU load, same run.

    python bench/bench_describe.py [--model DIR] [--regions 100] [--batch-size 16] [--workdir DIR]
                                   [--no-load]

Not a test: prints a JSON report. Every figure comes from the real CLI in a subprocess (start-up,
imports and model load included in the end-to-end time), on a synthetic UTM scene with AOIs in
EPSG:4326 (the inputs of `mgimm-geo demo`), with the shipped demo model unless --model is given:

- model_regions_per_s: regions described per second of model time (the summary's `per_second`);
- end_to_end_regions_per_s: regions / wall time of the whole command, start-up included;
- batched_vs_single: model throughput at --batch-size against --batch-size 1;
- reads_per_region: raster reads per described region (the summary's `reads`);
- resume_nothing_left_s: wall time of `--resume` on the finished output;
- every_core_model_regions_per_s: the batched run with `--threads <every core>` (torch's own
  default), the baseline for the default thread choice;
- free_decoding_model_regions_per_s, agree_vs_free: the batched run with `--no-agree`, the
  baseline of what the agreeing decoding (re-scoring and re-decoding disagreeing rows) costs;
- without_object_p_model_regions_per_s, object_p_vs_without: the batched run with the describe
  step that scores `object_p` (mgimm_core/steps.py `score_objects`) left out, which no option does:
  the baseline of what that step (one teacher-forced pass per batch) costs.

"Loaded" repeats everything while a second process spins on every core (the situation of a
shared 2-core machine), so the ratio loaded/quiet shows what a busy machine costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

SPIN = "while True: pass"
#: `mgimm-geo` with the `score_objects` step left out of every describe call (the benchmark's baseline only)
WITHOUT_OBJECT_P = ("from mgimm_core import steps; from mgimm_core.describer import Describer; "
                    "chosen = Describer.steps; "
                    "Describer.steps = lambda self, **kw: [s for s in chosen(self, **kw) if s is not steps.score_objects]; "
                    "from batch.cli import cli; cli()")


def cli(*args, timeout=1800, entry: str | None = None) -> tuple[dict, float]:
    """(JSON summary, wall seconds) of one `mgimm-geo` command in a fresh process (`entry`: Python
    code to run it with instead of the CLI module)."""
    started = time.perf_counter()
    command = [sys.executable, "-c", entry] if entry else [sys.executable, "-m", "batch.cli"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"mgimm-geo {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


@contextmanager
def competing_load(active: bool):
    """One process spinning per core while the block runs (nothing when not active). Separate
    processes, not a multiprocessing pool, so that killing them leaves no orphan spinning on."""
    if not active:
        yield
        return
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(os.cpu_count() or 2)]
    time.sleep(1.0)
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def random_squares(scene_path, count: int, seed: int = 0) -> list[dict]:
    """GeoJSON features: squares of 20-150 m at random places of the scene, in EPSG:4326, so any
    region count can be asked (the demo scene has only so many objects)."""
    import numpy as np
    import pyproj
    import rasterio
    import shapely
    import shapely.geometry

    rng = np.random.default_rng(seed)
    with rasterio.open(scene_path) as src:
        left, bottom, right, top = src.bounds
        to_lonlat = pyproj.Transformer.from_crs(src.crs.to_wkt(), "EPSG:4326", always_xy=True)
    out = []
    for i in range(max(0, count)):
        side = rng.uniform(20, 150)
        x, y = rng.uniform(left, right - side), rng.uniform(bottom, top - side)
        square = shapely.transform(shapely.box(x, y, x + side, y + side),
                                   lambda xs, ys: to_lonlat.transform(xs, ys), interleaved=False)
        out.append({"type": "Feature", "properties": {"id": f"square-{i}"},
                    "geometry": shapely.geometry.mapping(square)})
    return out


def measure(inputs, aoi: Path, work: Path, args, label: str) -> dict:
    model = ["--model", args.model] if args.model else []
    common = [str(inputs.scene), "--aoi", str(aoi), *model, "-q"]
    out = work / f"{label}_batched.gpkg"
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    batched, wall = cli("describe", *common, "-o", str(out), "--overwrite", *batch)
    single, _ = cli("describe", *common, "-o", str(work / f"{label}_single.gpkg"), "--overwrite",
                    "--batch-size", "1")
    _resumed, resume_wall = cli("describe", *common, "-o", str(out), "--resume")
    every_core, _ = cli("describe", *common, "-o", str(work / f"{label}_every_core.gpkg"), "--overwrite", *batch,
                        "--threads", str(os.cpu_count() or 1))
    free, _ = cli("describe", *common, "-o", str(work / f"{label}_free.gpkg"), "--overwrite", *batch, "--no-agree")
    plain, _ = cli("describe", *common, "-o", str(work / f"{label}_plain.gpkg"), "--overwrite", *batch,
                   entry=WITHOUT_OBJECT_P)
    regions = batched["described"] + batched["failed"]
    return {"regions": regions, "end_to_end_s": round(wall, 2),
            "end_to_end_regions_per_s": round(regions / wall, 2),
            "model_regions_per_s": batched["per_second"], "single_model_regions_per_s": single["per_second"],
            "every_core_model_regions_per_s": every_core["per_second"],
            "free_decoding_model_regions_per_s": free["per_second"],
            "agree_vs_free": round(batched["per_second"] / free["per_second"], 2),
            "without_object_p_model_regions_per_s": plain["per_second"],
            "object_p_vs_without": round(batched["per_second"] / plain["per_second"], 2),
            "batched_vs_single": round(batched["per_second"] / single["per_second"], 2),
            "reads_per_region": round(batched["reads"] / max(1, batched["described"]), 3),
            "resume_nothing_left_s": round(resume_wall, 2), "split_s": batched["timings_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--regions", type=int, default=100, help="AOI regions to describe")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="regions per model batch (default: the model's own default, as describe uses)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-load", action="store_true", help="skip the run under a competing load")
    args = parser.parse_args()

    from training.synthetic.demo_inputs import write_demo_inputs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_describe_"))
    inputs = write_demo_inputs(work / "inputs", seed=99, size=2048, objects=args.regions)
    features = json.loads(Path(inputs.aoi).read_text())["features"]
    features = (features + random_squares(inputs.scene, args.regions - len(features)))[: args.regions]
    aoi = work / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    report = {"model": args.model or "demo", "cores": os.cpu_count(), "batch_size": args.batch_size or "model default",
              "quiet": measure(inputs, aoi, work, args, "quiet")}
    if not args.no_load:
        with competing_load(True):
            report["loaded"] = measure(inputs, aoi, work, args, "loaded")
        quiet, loaded = report["quiet"], report["loaded"]
        report["loaded_slowdown"] = {
            key: round(quiet[key] / loaded[key], 2) if "per_s" in key or key == "batched_vs_single"
            else round(loaded[key] / quiet[key], 2)
            for key in ("end_to_end_s", "model_regions_per_s", "end_to_end_regions_per_s", "batched_vs_single",
                        "resume_nothing_left_s")}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
