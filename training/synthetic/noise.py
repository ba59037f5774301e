"""Vectorised noise fields (numpy only): the raw material of every texture in the synthetic world.

All sizes are in pixels. Every function draws its randomness from the `rng` it is given, so a scene
is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np


def _upsample_axis(grid: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Smooth (smoothstep-weighted linear) interpolation of `grid` to n samples along `axis`."""
    cells = grid.shape[axis] - 1
    pos = np.linspace(0.0, cells, n, endpoint=False)
    i0 = pos.astype(np.int32)
    t = (pos - i0).astype(np.float32)
    t = t * t * (3.0 - 2.0 * t)
    a = np.take(grid, i0, axis=axis)
    b = np.take(grid, i0 + 1, axis=axis)
    shape = [1, 1]
    shape[axis] = n
    t = t.reshape(shape)
    return a + (b - a) * t


def value_noise(shape: tuple[int, int], cells: float, rng: np.random.Generator) -> np.ndarray:
    """Value noise in [0, 1] with about `cells` random lattice cells across the larger side."""
    h, w = shape
    cy = max(1, int(round(cells * h / max(h, w))))
    cx = max(1, int(round(cells * w / max(h, w))))
    grid = rng.random((cy + 1, cx + 1), dtype=np.float32)
    rows = _upsample_axis(grid, h, 0)
    return _upsample_axis(rows, w, 1)


def fbm(shape: tuple[int, int], rng: np.random.Generator, cells: float = 4.0, octaves: int = 5,
        persistence: float = 0.5, lacunarity: float = 2.0) -> np.ndarray:
    """Fractal (fBm) value noise normalised to zero mean and unit standard deviation."""
    total = np.zeros(shape, np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        if cells > max(shape):
            break
        total += amplitude * value_noise(shape, cells, rng)
        amplitude *= persistence
        cells *= lacunarity
    total -= total.mean()
    std = total.std()
    return total / std if std > 0 else total


def jittered_voronoi(shape: tuple[int, int], cell_px: float, rng: np.random.Generator,
                     warp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voronoi cells of one jittered seed per `cell_px` grid square.

    Returns (ids, d1, d2): the nearest seed's id per pixel (int32), and the distances in pixels to
    the nearest and second-nearest seeds (d2 - d1 is small near cell borders). `warp`, an optional
    (2, H, W) pixel offset, bends the borders.
    """
    h, w = shape
    gy, gx = int(np.ceil(h / cell_px)) + 1, int(np.ceil(w / cell_px)) + 1
    seeds = (np.stack(np.meshgrid(np.arange(gy), np.arange(gx), indexing="ij"), -1)
             + rng.uniform(0.1, 0.9, (gy, gx, 2))).astype(np.float32) * np.float32(cell_px)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if warp is not None:
        yy = yy + warp[0]
        xx = xx + warp[1]
    cy = np.clip((yy // cell_px).astype(np.int32), 0, gy - 1)
    cx = np.clip((xx // cell_px).astype(np.int32), 0, gx - 1)
    d1 = np.full(shape, np.inf, np.float32)
    d2 = np.full(shape, np.inf, np.float32)
    ids = np.zeros(shape, np.int32)
    for dy in (-1, 0, 1):
        ny = np.clip(cy + dy, 0, gy - 1)
        for dx in (-1, 0, 1):
            nx = np.clip(cx + dx, 0, gx - 1)
            s = seeds[ny, nx]
            d = np.hypot(yy - s[..., 0], xx - s[..., 1])
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            d1 = np.where(closer, d, d1)
            ids = np.where(closer, ny * gx + nx, ids)
    return ids, d1, d2


def box_blur(image: np.ndarray, radius: int = 1) -> np.ndarray:
    """Separable box blur (edge-padded) of a (H, W) or (H, W, C) float array."""
    if radius <= 0:
        return image
    k = 2 * radius + 1
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float32)
        n = out.shape[axis]
        out = (np.take(c, np.arange(k, k + n), axis=axis) - np.take(c, np.arange(0, n), axis=axis)) / k
    return out
