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


# ------------------------------------------------------------------------------------- world v3
# Land cover that looks like real imagery from 0.3 m (aerial) to 30 m (Landsat): every texture has a
# size in metres and fades as it shrinks below a pixel (many small things average to their mean).

_FOREST_V3 = (np.array((24, 40, 26), np.float32), np.array((66, 94, 50), np.float32))
_URBAN_COARSE = np.array((128, 116, 120), np.float32)   # roofs, streets and gardens mixed in one pixel
_ROCK = np.array((118, 112, 102), np.float32)
_SNOW = np.array((236, 238, 242), np.float32)


def texture(shape: tuple[int, int], rng: np.random.Generator, feature_m: float, gsd: float) -> np.ndarray:
    """Zero-mean noise with `feature_m`-sized blobs, its amplitude shrinking as the blobs shrink below a
    pixel (the mean of n blobs in a pixel varies as 1 / sqrt(n)); about +-0.5 when blobs span pixels."""
    h, w = shape
    px = feature_m / gsd
    if px >= 1.5:
        return value_noise(shape, max(1.0, w / px), rng) - 0.5
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.29 * max(px, 0.05))


def hillshade(elevation_m: np.ndarray, gsd: float, sun_azimuth: float, sun_elevation: float) -> np.ndarray:
    """Relative illumination of the terrain (1 on flat ground, < 1 on slopes facing away from the sun,
    down to deep shadow where the sun is below the local horizon of the slope)."""
    gy, gx = np.gradient(elevation_m.astype(np.float32), gsd)
    az, el = np.radians(sun_azimuth), np.radians(sun_elevation)
    # pixel rows grow southwards: the sun's direction in (x east, y south) is (sin az, -cos az)
    sx, sy, sz = np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    incidence = (-gx * sx - gy * sy + sz) / norm
    return np.clip(incidence / sz, 0.12, 1.25).astype(np.float32)


def render_background_v3(lc: LandCover, gsd: float, rng: np.random.Generator, sun_azimuth: float,
                         sun_elevation: float) -> np.ndarray:
    """The world-v3 land cover painted (float32, H x W x 3, 0..255), textures scaled to `gsd`."""
    from .landcover import MOUNTAIN

    h, w = lc.shape
    shape = (h, w)
    labels = lc.labels
    n_parcels = int(lc.parcels.max()) + 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    patches = texture(shape, rng, 80.0, gsd)           # 80 m patches: soil moisture, canopy density
    grain = texture(shape, rng, 2.0, gsd)              # 2 m grain: grass tufts, gravel, noise
    coarse = float(np.clip((gsd - 1.0) / 5.0, 0.0, 1.0))   # 0 at <= 1 m (aerial), 1 at >= 6 m (satellite)

    crop = _CROPS[rng.integers(len(_CROPS), size=n_parcels)] * rng.uniform(0.85, 1.1, (n_parcels, 1))
    crop = crop + (crop.mean(axis=0) - crop) * 0.6 * coarse      # a field in 10-30 m pixels mixes its
    #                                                                 crop with weeds, soil and margins
    angle = rng.uniform(0, np.pi, n_parcels).astype(np.float32)
    period = (rng.uniform(2.0, 6.0, n_parcels) / gsd).astype(np.float32)
    a = angle[lc.parcels]
    visible = (period >= 3.0)[lc.parcels]              # rows finer than 3 pixels would alias
    stripes = np.where(visible, np.sin((xx * np.cos(a) + yy * np.sin(a)) * (2 * np.pi) / period[lc.parcels]), 0)
    farm = crop[lc.parcels] * (1 + 0.06 * stripes + 0.12 * patches + 0.08 * grain)[..., None]

    crowns = np.clip(texture(shape, rng, 5.0, gsd) * 2.2 + 0.5, 0, 1)
    forest = _mix(_FOREST_V3[0], _FOREST_V3[1], crowns) * (1 + 0.25 * patches)[..., None]
    grass_tint = rng.uniform(0.85, 1.1, (n_parcels, 1)).astype(np.float32)
    grass = np.array((112, 134, 76), np.float32) * grass_tint[lc.parcels] * (1 + 0.14 * patches + 0.1 * grain)[..., None]
    soil = np.array((176, 148, 112), np.float32) if rng.random() < 0.6 else np.array((190, 128, 78), np.float32)
    bare = soil * (1 + 0.18 * patches + 0.1 * grain)[..., None]

    # Urban: at aerial GSDs concrete with gardens (buildings are painted as objects); at satellite GSDs
    # each pixel mixes roofs, streets and trees: a purple-grey speckle with bright roofs and dark trees.
    concrete = np.array((140, 136, 130), np.float32) * (1 + 0.12 * patches + 0.14 * grain)[..., None]
    garden = value_noise(shape, max(1.0, w * gsd / 12.0), rng) if gsd < 6 else np.full(shape, 0.5, np.float32)
    fine_urban = _mix(concrete, forest * 1.1, np.clip((garden - 0.62) * 6, 0, 1))
    speckle = rng.standard_normal(shape, dtype=np.float32)
    trees = np.clip(texture(shape, rng, 60.0, gsd) * 2 + 0.1 * speckle, 0, 1)
    coarse_urban = _mix(_URBAN_COARSE * (1 + 0.22 * speckle + 0.1 * patches)[..., None], _FOREST_V3[1] * 0.9,
                        trees * 0.6)
    urban = fine_urban * (1 - coarse) + coarse_urban * coarse
    road = np.array((86, 86, 88), np.float32) * (1 + 0.06 * patches + 0.14 * grain)[..., None]
    paved = np.array((160, 156, 150), np.float32) * (1 + 0.06 * patches + 0.1 * grain)[..., None]
    rock = _ROCK * (1 + 0.2 * texture(shape, rng, 30.0, gsd) + 0.15 * grain)[..., None]
    if rng.random() < 0.35:    # snow on the highest rock
        snow = np.clip((lc.elevation - np.quantile(lc.elevation, 0.93)) / (np.ptp(lc.elevation) * 0.03 + 1e-3), 0, 1)
        rock = _mix(rock, _SNOW, snow)

    water_any = (labels == SEA) | (labels == LAKE) | (labels == RIVER)
    reach = max(2, int(40 / gsd))
    depth = box_blur(box_blur(water_any.astype(np.float32), reach), reach)
    ripple = 1 + 0.04 * grain + 0.05 * patches
    shallow_sea = np.array((78, 132, 128), np.float32) * rng.uniform(0.85, 1.1)
    sea = _mix(shallow_sea, np.array((24, 56, 76), np.float32), depth) * ripple[..., None]
    lake = _mix(np.array((62, 90, 80), np.float32), np.array((26, 50, 56), np.float32), depth) * ripple[..., None]
    river = np.array((70, 86, 74), np.float32) * ripple[..., None]

    img = np.zeros((h, w, 3), np.float32)
    for code, layer in ((FARMLAND, farm), (FOREST, forest), (GRASS, grass), (BARE, bare), (URBAN, urban),
                        (ROAD, road), (PAVED, paved), (SEA, sea), (LAKE, lake), (RIVER, river), (MOUNTAIN, rock)):
        m = labels == code
        img[m] = layer[m]

    rural = (labels == FARMLAND) | (labels == GRASS) | (labels == BARE)
    edge = np.clip(1.0 - lc.parcel_border / max(1.0, 1.2 / gsd), 0, 1) * rural * (1 - coarse * 0.7)
    hedge = np.array((50, 70, 40), np.float32) if rng.random() < 0.6 else np.array((170, 160, 135), np.float32)
    img = _mix(img, np.broadcast_to(hedge, img.shape), edge * 0.8)
    near_water = box_blur(water_any.astype(np.float32), max(1, int(4 / gsd)))
    fringe = np.clip(near_water * 3, 0, 1) * ~water_any * (labels != ROAD)
    sand = np.array((196, 182, 150), np.float32) * (1 + 0.05 * grain)[..., None]
    # beaches are tens of metres wide, river banks a few: both thin out to a faint line in coarse pixels
    img = _mix(img, sand, fringe * (0.9 * min(1.0, 15.0 / gsd) if lc.sea_side else 0.5 * min(1.0, 3.0 / gsd)))

    shade = hillshade(lc.elevation, gsd, sun_azimuth, sun_elevation)
    img *= np.where(water_any, 1.0, shade)[..., None]
    return img


def clouds(shape: tuple[int, int], gsd: float, rng: np.random.Generator, cover: float) -> np.ndarray:
    """Cloud opacity (0..1, float32): cumulus about 1 km across covering about `cover` of a large scene."""
    h, w = shape
    field = fbm(shape, rng, max(1.0, w * gsd / 1500.0), 6)
    threshold = np.quantile(field, 1.0 - cover) if field.std() > 0 else 0.0
    return np.clip((field - threshold) * 2.5, 0, 1).astype(np.float32) ** 0.8


def _shifted(field: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`field` moved by (dy, dx) pixels, zeros where nothing moved in (no wrap-around)."""
    h, w = field.shape
    out = np.zeros_like(field)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = field[max(0, -dy):h - max(0, dy),
                                                                      max(0, -dx):w - max(0, dx)]
    return out


def finish_v3(img: np.ndarray, gsd: float, rng: np.random.Generator, cloud: np.ndarray | None,
              sun_azimuth: float, sun_elevation: float, bands: str) -> np.ndarray:
    """World-v3 sensor look. Aerial GSDs: as `finish`. Satellite GSDs (>= 5 m): a darker exposure with
    blue path radiance, as in uint8 Landsat natural colour. Then clouds with their shadows, and for
    bands="gray" one luminance band copied to R, G and B. Returns uint8 (H, W, 3)."""
    if cloud is not None:
        height_m = rng.uniform(800, 2000)
        dist = height_m / np.tan(np.radians(sun_elevation)) / gsd
        dx, dy = -np.sin(np.radians(sun_azimuth)) * dist, np.cos(np.radians(sun_azimuth)) * dist
        shadow = _shifted(cloud, int(round(dy)), int(round(dx)))
        img = img * (1 - 0.55 * shadow)[..., None]
    satellite = float(np.clip((gsd - 2.0) / 8.0, 0.0, 1.0))
    if satellite:
        exposure = rng.uniform(0.38, 0.6)
        path = np.array((22, 30, 46), np.float32) * rng.uniform(0.6, 1.3)
        grey = img.mean(axis=2, keepdims=True)
        img = img + (grey - img) * (0.35 * satellite)            # the atmosphere washes colours out
        img = img * (1 - satellite * (1 - exposure)) + satellite * path
    if cloud is not None:
        tone = np.float32(rng.uniform(205, 245)) * (1 - 0.08 * fbm(cloud.shape, rng, max(1.0, cloud.shape[1] * gsd / 300), 4))
        img = img + (tone[..., None] - img) * cloud[..., None]
    out = finish(img, rng)
    if bands == "gray":
        lum = out.astype(np.float32) @ np.array((0.299, 0.587, 0.114), np.float32)
        out = np.repeat(np.clip(lum + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return out
