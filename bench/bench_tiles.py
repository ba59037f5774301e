"""Benchmark the tile iterator: read throughput against plain rasterio, and peak memory.

Not a test. It generates deflate-tiled 3-band uint8 GeoTIFFs (block-row by block-row, so generating
them takes little memory), then, each measurement in a fresh subprocess so that GDAL's block cache
and Python's heap start empty:

1. throughput: `iter_tiles` over every tile of the big scene vs `rasterio` `read()` of the same
   windows, alternating, best of `--repeat` runs each; reports MB/s of decoded pixels and the ratio
   (target >= 0.9);
2. memory: peak RSS (VmHWM) of iterating every tile of the big scene vs the small scene
   (target < 1 GB and not growing with scene size).

Examples:
    python bench/bench_tiles.py --side 4000 --small-side 1000     # a quick run (seconds)
    nice python bench/bench_tiles.py                               # 20000^2 (~1.2 GB), minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def generate(path: str, side: int, block: int = 512, seed: int = 0) -> None:
    """Write a side x side 3-band uint8 deflate GeoTIFF with `block`-pixel tiles, one block row at
    a time. Content: a blocky pattern plus 4 bits of noise (deflate keeps ~95% of the size)."""
    import numpy as np
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                   crs="EPSG:32633", transform=Affine(0.5, 0, 400000, 0, -0.5, 5000000),
                   tiled=True, blockxsize=block, blockysize=block, compress="deflate",
                   BIGTIFF="IF_SAFER")
    cols = np.arange(side)[None, :]
    with rasterio.Env(GDAL_NUM_THREADS="2"), rasterio.open(path, "w", **profile) as dst:
        for row_off in range(0, side, block):
            height = min(block, side - row_off)
            rows = np.arange(row_off, row_off + height)[:, None]
            base = ((rows // 37 + cols // 53) * 40) % 256
            for band in range(1, 4):
                noise = rng.integers(0, 16, size=(height, side), dtype=np.int16)
                strip = ((base * band + noise) % 256).astype(np.uint8)
                dst.write(strip, band, window=((row_off, row_off + height), (0, side)))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM on Linux (reset by exec, unlike
    ru_maxrss, which a child inherits from its parent), else ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: str, tile: int) -> dict:
    """Run in a subprocess: iterate every tile one way and report time, bytes and peak RSS."""
    import rasterio

    from mgimm_core.scene import Scene
    from mgimm_core.tiles import iter_tiles, tile_grid

    base_rss_mb = peak_rss_mb()
    checksum = 0
    nbytes = 0
    count = 0
    start = time.perf_counter()
    with Scene.open(path) as scene:
        grid = tile_grid(scene, size=tile)
        if mode == "tiles":
            for t in iter_tiles(scene, grid, min_valid_fraction=0.0):
                checksum += int(t.image[0, 0, 0])
                nbytes += t.image.nbytes
                count += 1
        elif mode == "rasterio":
            windows = list(grid)
            with rasterio.open(path) as ds:
                for w in windows:
                    data = ds.read([1, 2, 3], window=w)
                    checksum += int(data[0, 0, 0])
                    nbytes += data.nbytes
                    count += 1
        else:
            raise ValueError(mode)
    seconds = time.perf_counter() - start
    return {"mode": mode, "tiles": count, "seconds": seconds, "mb": nbytes / 1e6,
            "mb_per_s": nbytes / 1e6 / seconds, "checksum": checksum,
            "peak_rss_mb": peak_rss_mb(),
            "rss_after_imports_mb": base_rss_mb}


def run_child(mode: str, path: str, tile: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, path, "--tile", str(tile)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=20000,
                        help="pixels per side of the big scene (default 20000: 1.2 GB of pixels)")
    parser.add_argument("--small-side", type=int, default=5000,
                        help="pixels per side of the small scene for the memory comparison")
    parser.add_argument("--tile", type=int, default=512, help="tile size in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (best kept)")
    parser.add_argument("--workdir", help="where to write the scenes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep generated scenes")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.tile)))
        return 0

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_tiles_")
    os.makedirs(workdir, exist_ok=True)
    big = os.path.join(workdir, f"scene_{args.side}.tif")
    small = os.path.join(workdir, f"scene_{args.small_side}.tif")
    report = {"side": args.side, "small_side": args.small_side, "tile": args.tile}
    try:
        for path, side in ((big, args.side), (small, args.small_side)):
            if not os.path.exists(path):
                start = time.perf_counter()
                generate(path, side)
                print(f"generated {path} ({os.path.getsize(path) / 1e9:.2f} GB on disk) in "
                      f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
        report["file_gb"] = os.path.getsize(big) / 1e9
        report["pixels_gb"] = args.side ** 2 * 3 / 1e9

        runs = {"tiles": [], "rasterio": []}
        for i in range(args.repeat):
            for mode in (("rasterio", "tiles") if i % 2 == 0 else ("tiles", "rasterio")):
                result = run_child(mode, big, args.tile)
                runs[mode].append(result)
                print(f"{mode:9s} {result['tiles']} tiles {result['mb_per_s']:.0f} MB/s "
                      f"({result['seconds']:.1f} s) peak RSS {result['peak_rss_mb']:.0f} MB",
                      file=sys.stderr)
        best = {mode: max(r["mb_per_s"] for r in rs) for mode, rs in runs.items()}
        report["throughput_mb_per_s"] = best
        report["ratio_tiles_over_rasterio"] = best["tiles"] / best["rasterio"]
        assert runs["tiles"][0]["checksum"] == runs["rasterio"][0]["checksum"], "pixels differ"

        small_run = run_child("tiles", small, args.tile)
        report["peak_rss_mb"] = {f"{args.side}^2": min(r["peak_rss_mb"] for r in runs["tiles"]),
                                 f"{args.small_side}^2": small_run["peak_rss_mb"]}
        report["rss_after_imports_mb"] = small_run["rss_after_imports_mb"]
    finally:
        if not args.keep and not args.workdir:
            for path in (big, small):
                if os.path.exists(path):
                    os.remove(path)
            os.rmdir(workdir)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
