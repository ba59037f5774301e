"""Regions per second through an endpoint (`--model URL`), --concurrency 1 vs the default, against a
real local `mgimm-geo serve` of the demo model; and what the client itself costs per region.

    python bench/bench_endpoint.py [--concurrency 1 4] [--max-new-tokens 200] [--repeat 1]
    python bench/bench_endpoint.py --url http://127.0.0.1:PORT/v1 --family generic   # any running endpoint

Starts the server on 127.0.0.1 (a free port, --preload so loading is not timed), writes the demo's
synthetic scene and AOIs, and describes them through the endpoint once per concurrency. For each
run it reports regions/s, the client's own CPU seconds per region (PNG encoding, JSON, HTTP: this
process's CPU time, the server being another process) and the connections it opened. The client is
not the bottleneck when its CPU per region is a small share of the wall time per region.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, max_new_tokens: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "batch.cli", "serve", "--port", str(port), "--device", "cpu",
                             "--preload", "--max-new-tokens", str(max_new_tokens)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if json.loads(response.read()).get("model"):
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="AOI copies (more regions per run)")
    parser.add_argument("--url", default=None, help="bench this running endpoint instead of a mgimm-geo serve")
    parser.add_argument("--family", default=None)
    parser.add_argument("--served-model", default=None)
    args = parser.parse_args()

    import mgimm_core
    from training.synthetic.demo_inputs import write_demo_inputs

    with tempfile.TemporaryDirectory(prefix="mgimm-bench-endpoint-") as scratch:
        inputs = write_demo_inputs(Path(scratch), seed=2024)
        aoi = json.loads(Path(inputs.aoi).read_text())
        aoi["features"] = [dict(f, properties={**f["properties"], "id": f"{i}-{n}"})
                           for i in range(args.repeat) for n, f in enumerate(aoi["features"])]
        aoi_path = Path(scratch) / "aoi.geojson"
        aoi_path.write_text(json.dumps(aoi))
        server = None
        url = args.url
        if url is None:
            port = free_port()
            server = start_server(port, args.max_new_tokens)
            url = f"http://127.0.0.1:{port}/v1"
        results = []
        try:
            for concurrency in args.concurrency:
                engine = mgimm_core.load_model(url, max_new_tokens=args.max_new_tokens, concurrency=concurrency,
                                               family=args.family, served_model=args.served_model)
                cpu, wall = time.process_time(), time.perf_counter()
                frame = mgimm_core.describe(str(inputs.scene), str(aoi_path), model=engine)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                regions = len(frame)            # every row's answers came back (errors: invalid_answer at most)
                results.append({"concurrency": concurrency, "regions": regions, "seconds": round(wall, 2),
                                "regions_per_s": round(regions / wall, 3),
                                "client_cpu_s_per_region": round(cpu / max(regions, 1), 4),
                                "client_share_of_wall": round(cpu / wall, 3),
                                "connections_opened": engine.client.connections_opened})
                engine.close()
                assert set(frame["error_code"].dropna()) <= {"invalid_answer"}, set(frame["error_code"])
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    print(json.dumps({"server": url if args.url else "mgimm-geo serve (demo model, cpu)", "cores": os.cpu_count(),
                      "runs": results}, indent=2))


if __name__ == "__main__":
    main()
