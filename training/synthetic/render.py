"""Paint a land-cover layout as an aerial photograph: textures, shading, coast, haze, sensor noise.

Works on float32 (H, W, 3) images in 0..255; `finish` turns one into uint8. Sizes in pixels, with
texture scales chosen in metres through `gsd`.
"""

from __future__ import annotations

import numpy as np

from .landcover import BARE, FARMLAND, FOREST, GRASS, LAKE, PAVED, RIVER, ROAD, SEA, URBAN, LandCover
from .noise import box_blur, fbm, value_noise

_CROPS = np.array([
    (92, 118, 58), (118, 138, 70), (150, 150, 92), (176, 162, 110), (140, 112, 82), (104, 96, 70),
    (80, 104, 52), (165, 150, 96), (128, 124, 78),
], np.float32)


def _mix(a, b, t):
    return a + (b - a) * t[..., None]


def render_background(lc: LandCover, gsd: float, rng: np.random.Generator) -> np.ndarray:
    """The land-cover map painted with per-class textures (float32, H x W x 3, 0..255)."""
    h, w = lc.shape
    shape = (h, w)
    labels = lc.labels
    img = np.zeros((h, w, 3), np.float32)
    n_parcels = int(lc.parcels.max()) + 1
    mid = fbm(shape, rng, max(4.0, w * gsd / 60.0), 4)      # ~60 m blotches
    fine = value_noise(shape, w / 2.0, rng) - 0.5              # 2-pixel grain
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # Farmland: a crop colour per parcel, ploughing stripes in a per-parcel direction, hedges.
    crop = _CROPS[rng.integers(len(_CROPS), size=n_parcels)] * rng.uniform(0.9, 1.1, (n_parcels, 1))
    angle = rng.uniform(0, np.pi, n_parcels).astype(np.float32)
    period = (rng.uniform(2.0, 6.0, n_parcels) / gsd).astype(np.float32)
    a = angle[lc.parcels]
    stripes = np.sin((xx * np.cos(a) + yy * np.sin(a)) * (2 * np.pi) / period[lc.parcels])
    farm = crop[lc.parcels] * (1 + 0.05 * stripes[..., None] + 0.05 * mid[..., None] + 0.05 * fine[..., None])
    # Forest: bumpy tree crowns (~5 m) with dark gaps.
    crowns = value_noise(shape, w * gsd / 4.5, rng) * 0.65 + value_noise(shape, w * gsd / 2.2, rng) * 0.35
    crowns = np.clip((crowns - 0.3) * 2.2, 0, 1) ** 0.8
    forest = _mix(np.array((22, 36, 24), np.float32), np.array((62, 92, 48), np.float32), crowns)
    forest *= (1 + 0.08 * mid)[..., None]
    grass_tint = rng.uniform(0.9, 1.1, (n_parcels, 1)).astype(np.float32)
    grass = np.array((108, 132, 72), np.float32) * grass_tint[lc.parcels] * (1 + 0.07 * mid + 0.08 * fine)[..., None]
    bare = np.array((172, 150, 118), np.float32) * (1 + 0.09 * mid + 0.06 * fine)[..., None]
    # Urban ground: concrete with gardens and trees where a noise field is high.
    concrete = np.array((138, 134, 128), np.float32) * (1 + 0.06 * mid + 0.1 * fine)[..., None]
    garden = value_noise(shape, w * gsd / 12.0, rng)
    urban = _mix(concrete, forest * 1.1, np.clip((garden - 0.62) * 6, 0, 1))
    road = np.array((82, 84, 86), np.float32) * (1 + 0.04 * mid + 0.12 * fine)[..., None]
    paved = np.array((158, 156, 150), np.float32) * (1 + 0.05 * mid + 0.08 * fine)[..., None]

    # Water: deeper (darker) away from the coast, faint ripples.
    water_any = (labels == SEA) | (labels == LAKE) | (labels == RIVER)
    depth = box_blur(water_any.astype(np.float32), max(2, int(12 / gsd)))
    depth = box_blur(depth, max(2, int(12 / gsd)))
    ripple = 1 + 0.03 * fine + 0.02 * mid
    sea = _mix(np.array((64, 108, 112), np.float32), np.array((22, 48, 72), np.float32), depth) * ripple[..., None]
    lake = _mix(np.array((70, 96, 84), np.float32), np.array((32, 62, 66), np.float32), depth) * ripple[..., None]
    river = np.array((72, 88, 74), np.float32) * ripple[..., None]

    for code, layer in ((FARMLAND, farm), (FOREST, forest), (GRASS, grass), (BARE, bare),
                        (URBAN, urban), (ROAD, road), (PAVED, paved), (SEA, sea), (LAKE, lake),
                        (RIVER, river)):
        m = labels == code
        img[m] = layer[m]

    # Parcel borders: darker hedgerows or pale tracks between fields.
    rural = (labels == FARMLAND) | (labels == GRASS) | (labels == BARE)
    edge = np.clip(1.0 - lc.parcel_border / max(1.0, 1.2 / gsd), 0, 1) * rural
    hedge = np.array((50, 70, 40), np.float32) if rng.random() < 0.6 else np.array((170, 160, 135), np.float32)
    img = _mix(img, np.broadcast_to(hedge, img.shape), edge * 0.8)
    # Beaches and banks: a sandy fringe of land next to water.
    near_water = box_blur(water_any.astype(np.float32), max(1, int(4 / gsd)))
    fringe = np.clip(near_water * 3, 0, 1) * ~water_any * (labels != ROAD)
    sand = np.array((186, 172, 138), np.float32) * (1 + 0.05 * fine)[..., None]
    img = _mix(img, sand, fringe * (0.9 if lc.sea_side else 0.5))

    # Relief shading on land.
    gy, gx = np.gradient(lc.elevation * 6.0)
    shade = np.clip(1 + 0.35 * (-gx * 0.7 + gy * 0.7), 0.8, 1.2)
    img *= np.where(water_any, 1.0, shade)[..., None]
    return img


def paint_shadow(img: np.ndarray, y0: int, x0: int, cover: np.ndarray, darkness: float) -> None:
    """Darken the pixels covered by `cover` (fractions 0..1) at offset (y0, x0), in place."""
    h, w = cover.shape
    region = img[y0:y0 + h, x0:x0 + w]
    region *= (1 - darkness * cover)[..., None]


def paint_fill(img: np.ndarray, y0: int, x0: int, cover: np.ndarray, color, grain: float,
               rng: np.random.Generator) -> None:
    """Blend a colour (with a little per-pixel grain) over the covered pixels, in place."""
    h, w = cover.shape
    region = img[y0:y0 + h, x0:x0 + w]
    c = np.asarray(color, np.float32) * (1 + grain * rng.standard_normal((h, w, 1), dtype=np.float32))
    region += (c - region) * cover[..., None]


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor look: colour balance, haze, slight blur, noise; returns uint8 RGB."""
    balance = rng.normal(1.0, 0.04, 3).astype(np.float32)
    img = img * balance
    haze = rng.uniform(0.0, 0.15)
    img = img * (1 - haze) + haze * np.array((175, 180, 188), np.float32)
    img = 0.6 * img + 0.4 * box_blur(img, 1)
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    gamma = rng.uniform(0.9, 1.1)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
