"""Benchmark the QGIS plugin's server mode against its worker mode on the same regions.

    .venv-qgis/bin/python bench/bench_server_chips.py --python "$(command -v python3)" \
        [--regions 50] [--threads 1] [--repeats 3] [--model DIR]

Runs in QGIS's own Python (the plugin's code path, headless): --python is the Python where
mgimm-geo is installed, which writes the demo scene and its object footprints (the first --regions
are the regions, the rest on a grid) and
runs a real `mgimm-geo worker` and a real `mgimm-geo serve` (same model, same --threads, on this
machine). Each mode describes the same regions exactly as the plugin's task does (RequestTask:
the worker gets the raster's path in chunks of 16 regions; the server gets each region's chip,
16 chips per request), with the model already loaded; the median of --repeats runs is reported,
with the old one-chip-per-request server mode as a baseline. Not a test: prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plugin_package():
    """The plugin imported as QGIS installs it (a folder named mgimm_geo)."""
    root = Path(tempfile.mkdtemp(prefix="mgimm_bench_plugin_"))
    (root / "mgimm_geo").symlink_to(REPO / "qgis_plugin", target_is_directory=True)
    sys.path.insert(0, str(root))
    import mgimm_geo

    return mgimm_geo


def project_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "QT_QPA_PLATFORM")}


def demo_inputs(python: str, directory: Path) -> tuple[str, str]:
    """The demo scene and its truth footprints (every object of the scene: the regions)."""
    code = ("import sys; from training.synthetic.demo_inputs import write_demo_inputs\n"
            "d = write_demo_inputs(sys.argv[1]); print(d.scene); print(d.truth)\n")
    out = subprocess.run([python, "-c", code, str(directory)], cwd=REPO, env=project_env(),
                         check=True, capture_output=True, text=True, timeout=600).stdout.split()
    return out[-2], out[-1]


def grid_regions(raster, count: int) -> list:
    """`count` square regions on a grid over the raster, 24 to 120 pixels across (the scene has fewer
    objects than a benchmark wants regions)."""
    import math

    from qgis.core import QgsGeometry, QgsRectangle

    if count <= 0:
        return []
    extent, pixel = raster.extent(), raster.rasterUnitsPerPixelX()
    side = math.ceil(math.sqrt(count))
    step_x, step_y = extent.width() / side, extent.height() / side
    out = []
    for index in range(count):
        row, col = divmod(index, side)
        half = pixel * (12 + 12 * (index % 5))          # sides of 24, 48, ... 120 pixels
        x = extent.xMinimum() + (col + 0.5) * step_x
        y = extent.yMaximum() - (row + 0.5) * step_y
        out.append(QgsGeometry.fromRect(QgsRectangle(x - half, y - half, x + half, y + half)))
    return out


def start_server(python: str, model: list, threads: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tempfile.mktemp(prefix="mgimm_bench_serve_", suffix=".log"), "wb")
    process = subprocess.Popen([python, "-m", "batch.cli", "serve", "--port", str(port), "--threads", str(threads),
                                "--preload", *model], cwd=REPO, env=project_env(), stdout=subprocess.DEVNULL,
                               stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"mgimm-geo serve did not start; see {log.name}") from None
            time.sleep(0.5)


def timed(task_class, client, params: dict) -> tuple[float, dict]:
    """Wall seconds of the plugin's task body (run synchronously, as the task manager's thread does)."""
    task = task_class("bench", client, "describe", params)
    started = time.perf_counter()
    ok = task.run()
    seconds = time.perf_counter() - started
    if not ok:
        raise SystemExit(f"the request failed: {task.error}")
    return seconds, task.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="the Python where mgimm-geo is installed")
    parser.add_argument("--regions", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="model folder (default: the demo model)")
    args = parser.parse_args()

    from qgis.core import QgsApplication, QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    plugin = plugin_package()
    from mgimm_geo import server_chips
    from mgimm_geo.client import HttpClient, WorkerClient, worker_argv
    from mgimm_geo.plugin import WORKER_CHUNK
    from mgimm_geo.request_data import describe_params
    from mgimm_geo.task import RequestTask

    work = Path(tempfile.mkdtemp(prefix="mgimm_bench_chips_"))
    scene_path, aoi_path = demo_inputs(args.python, work)
    raster = QgsRasterLayer(scene_path, "scene", "gdal")
    aoi = QgsVectorLayer(aoi_path, "aoi", "ogr")
    to_raster = QgsCoordinateTransform(aoi.crs(), raster.crs(), QgsProject.instance())
    geometries = []
    for feature in list(aoi.getFeatures())[:args.regions]:
        geometry = feature.geometry()
        geometry.transform(to_raster)
        geometries.append(geometry)
    geometries += grid_regions(raster, args.regions - len(geometries))
    model = ["--model", args.model] if args.model else []

    worker = WorkerClient(worker_argv(f"{args.python} -m batch.cli worker --threads {args.threads}",
                                      model=args.model or ""), cwd=str(REPO), environ=project_env())
    server_process, url = start_server(args.python, model, args.threads)
    server = HttpClient(url)
    try:
        worker.hello()
        server.hello()
        worker_params = describe_params(raster, geometries, raster.crs(), embed=False, max_new_tokens=200)
        worker_params["_chunk"] = WORKER_CHUNK
        server_params = describe_params(raster, geometries, raster.crs(), embed=True, max_new_tokens=200)
        timed(RequestTask, worker, worker_params)                       # warm-up: first batches, caches
        timed(RequestTask, server, server_params)
        runs: dict = {"worker": [], "server": [], "server_one_chip_per_request": []}
        answers = {}
        for _ in range(args.repeats):
            for mode, client, params, per_request in (
                    ("worker", worker, worker_params, None),
                    ("server", server, server_params, server_chips.CHIPS_PER_REQUEST),
                    ("server_one_chip_per_request", server, server_params, 1)):
                saved = server_chips.CHIPS_PER_REQUEST
                if per_request is not None:
                    server_chips.CHIPS_PER_REQUEST = per_request
                try:
                    seconds, result = timed(RequestTask, client, params)
                finally:
                    server_chips.CHIPS_PER_REQUEST = saved
                runs[mode].append(round(seconds, 2))
                answers[mode] = [(e["id"], e.get("description")) for e in result["regions"]]
    finally:
        worker.close()
        server_process.terminate()
        server_process.wait(timeout=30)
    median = {mode: statistics.median(values) for mode, values in runs.items()}
    best = {mode: min(values) for mode, values in runs.items()}
    print(json.dumps({
        "regions": len(geometries), "threads": args.threads, "model": args.model or "demo",
        "chips_per_request": server_chips.CHIPS_PER_REQUEST, "worker_chunk": WORKER_CHUNK, "runs_s": runs,
        "median_s": median, "min_s": best, "server_over_worker": round(median["server"] / median["worker"], 3),
        "server_over_worker_best": round(best["server"] / best["worker"], 3),
        "one_chip_per_request_over_worker": round(median["server_one_chip_per_request"] / median["worker"], 3),
        "descriptions_unlike_worker": {mode: sum(a != b for a, b in zip(answers[mode], answers["worker"]))
                                       for mode in ("server", "server_one_chip_per_request")},
        "plugin": plugin.__file__}, indent=2))
    app.exitQgis()


if __name__ == "__main__":
    main()
