"""Benchmark the local engine against the Ray engine on the same inputs, in the same run.

    python bench/bench_engines.py [--model DIR] [--regions 48] [--batch-size 8] [--workers 2]

Not a test: prints a JSON report (regions/s of each engine, Ray start-up cost, the time split,
and whether both wrote the same descriptions). Inputs: a synthetic UTM scene (as `mgimm-geo demo`),
its AOIs in EPSG:4326 plus random squares up to --regions. Model: --model DIR, else the shipped demo model, else a random
"small" MGIMM (64 px input, LM 256 wide x 4 layers) whose answers are noise but cost real compute.

The Ray engine runs on a local cluster of --workers CPUs (one actor per CPU, one torch thread
each); the local engine gets the same number of torch threads, so both use the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def small_random_model(directory: Path) -> str:
    """Save a random MGIMM big enough that the model, not the plumbing, dominates."""
    from mgimm_core.model.testing_mgimm import tiny_model, tiny_processor

    model = tiny_model(seed=1, image_size=64,
                       vision_config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                          image_size=64, patch_size=8, projection_dim=128),
                       text_config=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                        num_attention_heads=8, num_key_value_heads=8))
    model.save_pretrained(str(directory))
    tiny_processor(model.config).save_pretrained(str(directory))
    return str(directory)


def random_squares(scene_path, count: int, seed: int = 0) -> list:
    """`count` square AOIs (20-120 px, in the scene's CRS) at random places over the scene."""
    import numpy as np
    import pyproj
    import rasterio
    import shapely

    from mgimm_core.regions import AOIFeature

    rng = np.random.default_rng(seed)
    with rasterio.open(str(scene_path)) as src:
        t, crs, width, height = src.transform, pyproj.CRS(src.crs.to_wkt()), src.width, src.height
    features = []
    for i in range(count):
        side = float(rng.uniform(20, 120))
        col, row = rng.uniform(0, width - side), rng.uniform(0, height - side)
        x0, y0 = t * (col, row)
        x1, y1 = t * (col + side, row + side)
        features.append(AOIFeature(f"sq-{i}", shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                                   crs, {"id": f"sq-{i}"}))
    return features


def descriptions(path) -> dict:
    import pyogrio

    meta, _fids, _geoms, values = pyogrio.raw.read(str(path), layer="regions")
    rows = [dict(zip(meta["fields"], row)) for row in zip(*values)]
    return {(r["scene"], r["region_id"]): (r["description"], r["object"], r["color"]) for r in rows}


def run_engine(engine, scene_path, features, out, batch_size) -> dict:
    from mgimm_core.output import RunInfo
    from mgimm_core.scene import Scene

    from mgimm_core.pipeline import DescribeOptions, describe_to_output

    t0 = time.perf_counter()
    with Scene.open(str(scene_path)) as scene:
        summary = describe_to_output([scene], features, engine, str(out), "overwrite", RunInfo(model_id="bench"),
                                     DescribeOptions(batch_size=batch_size))
    seconds = time.perf_counter() - t0
    regions = summary["described"] + summary["failed"]
    return {"regions": regions, "seconds": round(seconds, 2), "regions_per_s": round(regions / seconds, 3),
            "split_s": summary["timings_s"], "work_units": summary.get("work_units")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: demo model, else random small)")
    parser.add_argument("--regions", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Ray CPU actors (and local torch threads)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    import torch

    from mgimm_core.engines import LoadOptions, open_engine
    from mgimm_core.engines.ray_engine import import_ray
    from mgimm_core.model_dir import DEMO_MODEL_DIR
    from mgimm_core.regions import read_aoi
    from training.synthetic.demo_inputs import write_demo_inputs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_engines_"))
    model_dir = args.model
    if model_dir is None and not (DEMO_MODEL_DIR / "config.json").is_file():
        model_dir = small_random_model(work / "small_model")
    inputs = write_demo_inputs(work / "inputs", seed=99, size=2048, objects=12)
    features = read_aoi(str(inputs.aoi))
    features += random_squares(inputs.scene, max(0, args.regions - len(features)))
    report = {"model": model_dir or "demo", "regions": len(features), "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens, "cpus": os.cpu_count(), "load_avg": os.getloadavg()}

    torch.set_num_threads(args.workers)
    load = LoadOptions(device="cpu", max_new_tokens=args.max_new_tokens)
    local = open_engine("local", model_dir, load)
    run_engine(local, inputs.scene, features[:4], work / "warmup.gpkg", args.batch_size)
    report["local"] = run_engine(local, inputs.scene, features, work / "local.gpkg", args.batch_size)

    ray = import_ray()
    report["ray_version"] = ray.__version__
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    report["ray_init_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    engine = open_engine("ray", model_dir, load, workers=args.workers)
    report["ray_actor_start_s"] = round(time.perf_counter() - t0, 2)
    try:
        run_engine(engine, inputs.scene, features[:4], work / "warmup_ray.gpkg", args.batch_size)
        report["ray"] = run_engine(engine, inputs.scene, features, work / "ray.gpkg", args.batch_size)
    finally:
        engine.close()
        ray.shutdown()
    report["ray_over_local"] = round(report["ray"]["regions_per_s"] / report["local"]["regions_per_s"], 2)
    report["same_results"] = descriptions(work / "local.gpkg") == descriptions(work / "ray.gpkg")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
