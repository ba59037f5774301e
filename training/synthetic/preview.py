"""`python -m training.synthetic.preview --out docs/synthetic_world_v3.png`: a grid of world-v3 scenes.

Rows are GSDs (0.3 m to 30 m), columns scenes of different seeds (the last one in grayscale); a crop
of the real Landsat 7 sample (28.5 m, bands 3-2-1) sits beside the 30 m row when `--landsat` is given.
Every cell is `--cell` pixels: the scene rendered at that many pixels, so each cell shows the ground
its GSD covers (0.3 m: 77 m across; 30 m: 7.7 km).
"""

from __future__ import annotations

import argparse

import numpy as np

from .scene import Look, generate_scene

GSDS = (0.3, 1.0, 3.0, 10.0, 30.0)


def landsat_crop(path: str, size: int) -> np.ndarray:
    """A size x size natural-colour crop (bands 3, 2, 1) of the real Landsat sample, uint8 RGB."""
    import rasterio

    with rasterio.open(path) as src:
        h, w = src.height, src.width
        r0, c0 = max(0, (h - size) // 2), max(0, w - size)
        data = src.read([3, 2, 1], window=((r0, r0 + size), (c0, c0 + size)))
    return np.moveaxis(data, 0, -1)


def preview(gsds=GSDS, seeds=(11, 12, 13, 14), cell: int = 256, landsat: str | None = None) -> np.ndarray:
    """The grid as one uint8 RGB image (4 px white gutters)."""
    cols = len(seeds) + (1 if landsat else 0)
    gap = 4
    out = np.full((len(gsds) * (cell + gap), cols * (cell + gap), 3), 255, np.uint8)
    for r, gsd in enumerate(gsds):
        for c, seed in enumerate(seeds):
            look = Look(bands="gray" if c == len(seeds) - 1 else "rgb",
                        cloud_cover=0.25 if (gsd == 10.0 and c == 1) else 0.0)
            scene = generate_scene(seed * 100 + r, cell, gsd, look=look)
            out[r * (cell + gap):r * (cell + gap) + cell, c * (cell + gap):c * (cell + gap) + cell] = scene.image
        if landsat and gsd >= 20:
            crop = landsat_crop(landsat, cell)
            y, x = r * (cell + gap), len(seeds) * (cell + gap)
            out[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.synthetic.preview", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cell", type=int, default=256)
    p.add_argument("--landsat", default=None, help="the real Landsat sample (../shared/data/L7_ETMs.tif)")
    a = p.parse_args(argv)
    from PIL import Image

    Image.fromarray(preview(cell=a.cell, landsat=a.landsat)).save(a.out, optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
