"""Benchmark `describe`: regions per second batched against one region at a time, in the same run,
and the end-to-end time split (read, model, write).

    python bench/bench_describe.py [--model DIR] [--regions 64] [--batch-size 16] [--workdir DIR]

Not a test: prints a JSON report. Uses the shipped demo model unless --model is given, on a
synthetic UTM scene with AOIs in EPSG:4326 (the same inputs as `mgimm-geo demo`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def run(describer, inputs, out: Path, batch_size: int, features) -> dict:
    from mgimm_core.output import RunInfo, open_output
    from mgimm_core.pipeline import DescribeSettings, Timings, describe_regions
    from mgimm_core.scene import Scene

    timings = Timings()
    t0 = time.perf_counter()
    count = 0
    with Scene.open(str(inputs.scene)) as scene, open_output(out, mode="overwrite", run=RunInfo()) as writer:
        for records in describe_regions([scene], features, describer, DescribeSettings(batch_size=batch_size),
                                        timings=timings):
            t = time.perf_counter()
            writer.write_regions(records)
            timings.add("write", t)
            count += len(records)
    seconds = time.perf_counter() - t0
    return {"batch_size": batch_size, "regions": count, "seconds": round(seconds, 2),
            "regions_per_s": round(count / seconds, 3), "split_s": timings.as_dict()}


def random_squares(scene_path, count: int, seed: int = 0) -> list:
    """Extra AOIs: squares of 20-150 m at random places (scene CRS), so any region count can be asked."""
    import numpy as np
    import pyproj
    import rasterio
    import shapely

    from mgimm_core.regions import AOIFeature

    rng = np.random.default_rng(seed)
    with rasterio.open(scene_path) as src:
        left, bottom, right, top = src.bounds
        crs = pyproj.CRS.from_wkt(src.crs.to_wkt())
    out = []
    for i in range(max(0, count)):
        side = rng.uniform(20, 150)
        x, y = rng.uniform(left, right - side), rng.uniform(bottom, top - side)
        out.append(AOIFeature(id=f"square-{i}", geometry=shapely.box(x, y, x + side, y + side), crs=crs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--regions", type=int, default=64, help="AOI regions to describe")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mgimm_core.describer import Describer
    from mgimm_core.regions import read_aoi
    from training.synthetic.demo_inputs import write_demo_inputs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_describe_"))
    inputs = write_demo_inputs(work / "inputs", seed=99, size=2048, objects=args.regions)
    features = read_aoi(str(inputs.aoi))
    features += random_squares(inputs.scene, args.regions - len(features))
    features = features[: args.regions]
    describer = Describer.load(args.model, device="cpu")
    run(describer, inputs, work / "warmup.gpkg", args.batch_size, features[:4])   # load caches, JIT paths
    batched = run(describer, inputs, work / "batched.gpkg", args.batch_size, features)
    single = run(describer, inputs, work / "single.gpkg", 1, features)
    report = {"model": describer.model_id, "device": str(describer.device), "threads": args.threads,
              "batched": batched, "one_at_a_time": single,
              "speedup": round(batched["regions_per_s"] / single["regions_per_s"], 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
