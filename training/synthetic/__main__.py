"""`python -m training.synthetic --out DIR --scenes N --seed S [--size PX] [--gsd M] [--crs EPSG:...] [--world 3]`.

Generates N scenes with seeds S, S+1, ... and writes them with `export.export_scenes`; prints the
counts and the throughput as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .export import export_scenes
from .scene import draw_look, generate_scene


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--scenes", type=int, default=10, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene")
    p.add_argument("--size", type=int, default=1024, help="scene side in pixels")
    p.add_argument("--gsd", type=float, default=0.5, help="ground sample distance, metres per pixel")
    p.add_argument("--crs", default=None, help="projected CRS for every scene (default: drawn per seed)")
    p.add_argument("--tile", type=int, default=512, help="description tile side in pixels")
    p.add_argument("--world", type=int, choices=(2, 3), default=2,
                   help="3: world v3, each scene at its seed's own GSD (0.3-30 m) and look; --gsd is ignored")
    a = p.parse_args(argv)
    if a.size < 64 or a.gsd <= 0 or a.scenes < 1:
        p.error("--size must be >= 64, --gsd > 0 and --scenes >= 1")
    start = time.perf_counter()
    if a.world == 3:
        scenes = (generate_scene(a.seed + i, a.size, draw_look(a.seed + i)[0], a.crs, look=draw_look(a.seed + i)[1])
                  for i in range(a.scenes))
    else:
        scenes = (generate_scene(a.seed + i, a.size, a.gsd, a.crs) for i in range(a.scenes))
    counts = export_scenes(scenes, a.out, np.random.default_rng(a.seed), tile=a.tile)
    counts["seconds"] = round(time.perf_counter() - start, 2)
    json.dump(counts, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
