"""Load benchmark: many AOIs over one large scene, as a user runs `mgimm-geo describe`.

    python bench/bench_load.py [--size 20000] [--regions 1000,10000] [--model DIR] [--max-new-tokens 16]
                               [--batch-size N] [--workdir DIR]

Not a test: prints a JSON report. It writes a SIZE x SIZE RGB GeoTIFF (tiled 512, deflate, internal
overviews) in UTM 33N and, for each count in --regions, that many random square AOIs (10 to 400 m,
GeoJSON in EPSG:4326), then runs the real CLI in a fresh process per count and reports:

- peak_rss_mb: the process's peak resident memory (os.wait4's ru_maxrss), model load included;
- rss_ratio: peak RSS of the largest count / of the smallest (memory flat: within 1.10);
- rows_per_s and model_regions_per_s: the summary's throughput figures;
- window_rows_per_s: rows committed per 10 s window (polled from the GeoPackage while it runs),
  with their min/median/max, so a slowdown late in the run shows (throughput steady);
- valid: the output read back with pyogrio holds exactly one row per AOI, ids unique, no error
  other than the ones the summary counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UTM = "EPSG:32633"
ORIGIN = (300000.0, 5_000_000.0)
RES = 0.5                    # metres per pixel: 20,000 px = 10 km
WINDOW_S = 10.0


def write_scene(path: Path, size: int) -> None:
    """A SIZE x SIZE RGB uint8 GeoTIFF written block by block (never the whole scene in memory)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    if path.exists():
        return
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=UTM, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER",
                   transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]))
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            h = min(512, size - row)
            for col in range(0, size, 512):
                w = min(512, size - col)
                rows, cols = np.mgrid[row:row + h, col:col + w]
                base = ((rows // 37 + cols // 53) % 7 * 30).astype(np.uint8)
                block = np.stack([base, base // 2 + 60, 255 - base]) + rng.integers(0, 8, (3, h, w), dtype=np.uint8)
                dst.write(block, window=Window(col, row, w, h))
        dst.build_overviews([2, 4, 8, 16, 32], Resampling.average)


def write_aois(path: Path, count: int, size: int, seed: int) -> None:
    import pyproj

    to_lonlat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(seed)
    extent = size * RES
    features = []
    for i in range(count):
        side = float(rng.uniform(10, 400))
        x0 = ORIGIN[0] + float(rng.uniform(0, extent - side))
        y0 = ORIGIN[1] - float(rng.uniform(side, extent))
        ring = [to_lonlat.transform(x, y) for x, y in
                ((x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side), (x0, y0))]
        features.append({"type": "Feature", "properties": {"id": f"a{i}"},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def rows_in(output: Path) -> int | None:
    try:
        with sqlite3.connect(f"file:{output}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM regions").fetchone()[0]
    except sqlite3.Error:
        return None


def run(scene: Path, aoi: Path, output: Path, args) -> dict:
    cmd = [sys.executable, "-m", "batch.cli", "describe", str(scene), "--aoi", str(aoi), "-o", str(output),
           "--overwrite", "--max-new-tokens", str(args.max_new_tokens), "-q"]
    if args.model:
        cmd += ["--model", args.model]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        samples = []                       # (seconds, rows committed)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(WINDOW_S / 5)
            rows = rows_in(output)
            if rows is not None:
                samples.append((time.monotonic() - started, rows))
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"describe failed ({proc.returncode}): {stderr[-2000:]}")
    summary = json.loads(stdout)
    windows, last = [], (0.0, 0)
    for t, rows in samples:
        if t - last[0] >= WINDOW_S:
            windows.append(round((rows - last[1]) / (t - last[0]), 2))
            last = (t, rows)
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "rows_per_s": summary["rows_per_second"], "model_regions_per_s": summary["per_second"],
            "described": summary["described"], "failed": summary["failed"],
            "timings_s": summary["timings_s"], "window_rows_per_s": windows,
            "window_rows_per_s_min_median_max": ([min(windows), statistics.median(windows), max(windows)]
                                                 if windows else None),
            "valid": validate(output, aoi, summary)}


def validate(output: Path, aoi: Path, summary: dict) -> dict:
    import pyogrio

    _, _, _, fields = pyogrio.raw.read(str(output), layer="regions", read_geometry=False,
                                       columns=["region_id", "error"])
    ids, errors = list(fields[0]), [e for e in fields[1] if e is not None]
    expected = len(json.loads(aoi.read_text())["features"])
    return {"rows": len(ids), "expected": expected, "unique_ids": len(set(ids)) == len(ids),
            "errors": len(errors), "ok": len(ids) == expected and len(set(ids)) == len(ids)
            and len(errors) == summary["failed"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--regions", default="1000,10000", help="comma-separated AOI counts")
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workdir", default=None, help="keep inputs and outputs here (default: a temp folder)")
    args = parser.parse_args()
    counts = [int(c) for c in args.regions.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mgimm-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scene = workdir / f"scene_{args.size}.tif"
    t = time.monotonic()
    write_scene(scene, args.size)
    report = {"size": args.size, "scene_mb": round(scene.stat().st_size / 2**20, 1),
              "scene_write_s": round(time.monotonic() - t, 1), "model": args.model or "demo",
              "max_new_tokens": args.max_new_tokens, "runs": {}}
    for count in counts:
        aoi = workdir / f"aoi_{count}.geojson"
        write_aois(aoi, count, args.size, seed=count)
        report["runs"][count] = run(scene, aoi, workdir / f"out_{count}.gpkg", args)
        print(json.dumps({count: report["runs"][count]}), file=sys.stderr)
    rss = [report["runs"][c]["peak_rss_mb"] for c in counts]
    report["rss_ratio_largest_to_smallest"] = round(rss[-1] / rss[0], 3)
    report["memory_flat"] = report["rss_ratio_largest_to_smallest"] <= 1.10
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
