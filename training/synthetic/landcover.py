"""The land-cover layout of one scene: parcels, urban street grids, roads, rivers, lakes and sea.

Everything here is in scene pixels (x = column, y = row, y growing southwards on a north-up image);
lengths given in metres are converted with the ground sample distance `gsd` (metres per pixel).
Bearings are compass degrees (0 = north, 90 = east).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rasterio.features import rasterize
from shapely.geometry import LineString, Polygon, box

from .noise import box_blur, fbm, jittered_voronoi

SEA, LAKE, RIVER, FOREST, FARMLAND, GRASS, BARE, URBAN, ROAD, PAVED, MOUNTAIN = range(11)
LANDCOVER_NAMES: tuple[str, ...] = (
    "sea", "lake", "river", "forest", "farmland", "grass", "bare soil", "urban", "road", "paved", "mountain",
)
#: Relief of the world-v3 terrains: standard deviation of the elevation in metres over a 10 km scene.
TERRAIN_RELIEF_M = {"plain": 8.0, "hills": 120.0, "mountains": 700.0}
WATER = (SEA, LAKE, RIVER)


@dataclass
class LandCover:
    """Label map and the vector features it was drawn from (pixel coordinates)."""

    labels: np.ndarray            # (H, W) uint8, one of the codes above
    parcels: np.ndarray           # (H, W) int32 parcel id
    parcel_border: np.ndarray     # (H, W) float32, distance in pixels to the nearest parcel border
    elevation: np.ndarray         # (H, W) float32 relief for shading: unit variance (world v2), metres (v3)
    road_bearing: np.ndarray      # (H, W) float32 compass bearing of the road at road pixels, NaN elsewhere
    rivers: list[LineString] = field(default_factory=list)
    river_widths_px: list[float] = field(default_factory=list)
    roads: list[LineString] = field(default_factory=list)
    road_widths_px: list[float] = field(default_factory=list)
    sea_side: str | None = None   # "north", "east", "south" or "west" when the scene has a coast
    street_bearing: float = 0.0   # bearing of the urban street grid
    terrain: str | None = None    # world v3: "plain", "hills" or "mountains" (None: the v2 world)

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape


def bearing_of(dx: float, dy: float) -> float:
    """Compass bearing (degrees) of a pixel-space direction (dy > 0 points south)."""
    return math.degrees(math.atan2(dx, -dy)) % 360.0


def direction_of(bearing_deg: float) -> tuple[float, float]:
    """Unit pixel-space vector (dx, dy) of a compass bearing."""
    b = math.radians(bearing_deg)
    return math.sin(b), -math.cos(b)


def _edge_point(side: str, t: float, size: int) -> tuple[float, float]:
    s = size - 1
    return {"north": (t * s, -5.0), "south": (t * s, s + 5.0),
            "west": (-5.0, t * s), "east": (s + 5.0, t * s)}[side]


_OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
_SIDES = ("north", "east", "south", "west")


def _road_line(rng: np.random.Generator, size: int) -> LineString:
    """A gently bending road from one scene edge to the opposite one."""
    side = _SIDES[rng.integers(4)]
    a = _edge_point(side, rng.uniform(0.1, 0.9), size)
    b = _edge_point(_OPPOSITE[side], rng.uniform(0.1, 0.9), size)
    n = int(rng.integers(2, 4))
    points = [a]
    for i in range(1, n):
        t = i / n
        px, py = a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t
        points.append((px + rng.normal(0, size * 0.04), py + rng.normal(0, size * 0.04)))
    points.append(b)
    return LineString(points)


def _river_line(rng: np.random.Generator, size: int) -> LineString:
    """A meandering river: a random walk of the heading from one edge towards the opposite one."""
    side = _SIDES[rng.integers(4)]
    x, y = _edge_point(side, rng.uniform(0.15, 0.85), size)
    target = _edge_point(_OPPOSITE[side], rng.uniform(0.15, 0.85), size)
    heading = math.atan2(target[1] - y, target[0] - x)
    goal = heading
    step = size / 60.0
    points = [(x, y)]
    turn = 0.0
    for _ in range(400):
        turn = 0.85 * turn + rng.normal(0, 0.09)
        heading += turn + 0.08 * math.atan2(math.sin(goal - heading), math.cos(goal - heading))
        x += step * math.cos(heading)
        y += step * math.sin(heading)
        points.append((x, y))
        if not (-10 <= x <= size + 10 and -10 <= y <= size + 10):
            break
    return LineString(points)


def _burn(shape, geoms_values, dtype="float32", fill=0):
    return rasterize(geoms_values, out_shape=shape, fill=fill, dtype=dtype)


def terrain_elevation(size: int, gsd: float, rng: np.random.Generator, terrain: str) -> np.ndarray:
    """Elevation in metres: fractal relief with about 2 km features, its spread growing with the scene's
    extent (a 150 m scene on a mountain is one slope, a 15 km one a range of peaks and valleys)."""
    extent_m = size * gsd
    cells = max(1.0, extent_m / 2500.0)
    relief = TERRAIN_RELIEF_M[terrain] * min(1.0, extent_m / 10000.0) ** 0.7
    ridged = 1.0 - np.abs(fbm((size, size), rng, cells, 6))   # sharp crests, rounded valleys
    massifs = fbm((size, size), rng, cells, 6)                # broad highs, so crests are not lone lines
    elevation = 0.35 * (ridged - ridged.mean()) / (ridged.std() + 1e-6) + 0.65 * massifs
    return (relief * elevation).astype(np.float32)


def build_landcover(size: int, gsd: float, rng: np.random.Generator, terrain: str | None = None) -> LandCover:
    """Lay out one square scene of `size` pixels at `gsd` metres per pixel.

    terrain: None lays out the world-v2 scene (its pixels unchanged); "plain", "hills" or "mountains"
    the world-v3 one: relief in metres, mountains (rock, forest, meadows) where the land is high and
    steep, lakes sized to the scene, and no street grid where streets are narrower than a pixel."""
    shape = (size, size)
    v3 = terrain is not None
    # Parcels: jittered Voronoi cells computed at reduced resolution, borders bent by noise.
    parcel_px = max(16.0, rng.uniform(70, 160) / gsd)
    factor = 4 if size >= 512 else 2
    small = (math.ceil(size / factor),) * 2
    warp = np.stack([fbm(small, rng, 6, 3), fbm(small, rng, 6, 3)]) * (parcel_px / factor) * 0.06
    ids_s, d1_s, d2_s = jittered_voronoi(small, parcel_px / factor, rng, warp)
    parcels = np.repeat(np.repeat(ids_s, factor, 0), factor, 1)[:size, :size]
    border = (np.repeat(np.repeat((d2_s - d1_s) * factor / 2, factor, 0), factor, 1)[:size, :size])
    border = box_blur(border.astype(np.float32), max(1, factor // 2))

    n_parcels = int(parcels.max()) + 1
    counts = np.bincount(parcels.ravel(), minlength=n_parcels).astype(np.float64) + 1e-9
    urbanness = np.bincount(parcels.ravel(), fbm(shape, rng, 2.5, 3).ravel(), n_parcels) / counts
    woodiness = np.bincount(parcels.ravel(), fbm(shape, rng, 3.0, 3).ravel(), n_parcels) / counts
    urban_frac = rng.choice([0.0, 0.1, 0.25, 0.45, 0.7], p=[0.2, 0.2, 0.25, 0.2, 0.15])
    forest_frac = rng.uniform(0.0, 0.4)
    parcel_class = np.full(n_parcels, FARMLAND, np.uint8)
    order = np.argsort(-urbanness)
    parcel_class[order[: int(round(urban_frac * n_parcels))]] = URBAN
    rest = np.flatnonzero(parcel_class != URBAN)
    forest = rest[np.argsort(-woodiness[rest])][: int(round(forest_frac * len(rest)))]
    parcel_class[forest] = FOREST
    others = np.flatnonzero(parcel_class == FARMLAND)
    pick = rng.random(len(others))
    p_grass, p_bare = rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.12)
    parcel_class[others[pick < p_grass]] = GRASS
    parcel_class[others[(pick >= p_grass) & (pick < p_grass + p_bare)]] = BARE
    labels = parcel_class[parcels]
    road_bearing = np.full(shape, np.nan, np.float32)

    # Urban street grid, aligned with one scene-wide bearing.
    street_bearing = float(rng.uniform(0, 90))
    spacing = width = 0.0
    if (labels == URBAN).any():
        spacing = rng.uniform(50, 90) / gsd
        width = rng.uniform(6, 10) / gsd
    if width >= (1.0 if v3 else 0.0) and (labels == URBAN).any():
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dx, dy = direction_of(street_bearing)
        along = xx * dx + yy * dy          # constant on streets running across the bearing
        across = -xx * dy + yy * dx        # constant on streets running along the bearing
        off_a, off_b = rng.uniform(0, spacing, 2)
        on_a = (along + off_a) % spacing < width
        on_b = (across + off_b) % spacing < width
        urban = labels == URBAN
        labels = np.where(urban & (on_a | on_b), ROAD, labels).astype(np.uint8)
        road_bearing[urban & on_b] = street_bearing
        road_bearing[urban & on_a & ~on_b] = (street_bearing + 90.0) % 360.0

    elevation = terrain_elevation(size, gsd, rng, terrain) if v3 else fbm(shape, rng, 3, 5)
    lc = LandCover(labels=labels, parcels=parcels, parcel_border=border, elevation=elevation,
                   road_bearing=road_bearing, street_bearing=street_bearing, terrain=terrain)
    if terrain == "mountains":
        _mountains(lc, gsd, rng)

    # Main roads crossing the scene.
    n_roads = int(rng.choice([0, 1, 1, 2, 2, 3])) + (1 if urban_frac > 0.3 else 0)
    for _ in range(n_roads):
        line = _road_line(rng, size)
        width = rng.uniform(8, 14) / gsd
        if v3 and width < 0.7:       # a road much narrower than a pixel leaves no road pixels
            continue
        segments = [LineString(line.coords[i:i + 2]) for i in range(len(line.coords) - 1)]
        shapes = []
        for seg in segments:
            (x0, y0), (x1, y1) = seg.coords
            shapes.append((seg.buffer(width / 2, cap_style="flat"), bearing_of(x1 - x0, y1 - y0) % 180 + 1000))
        burnt = _burn(shape, shapes)
        on = burnt > 0
        lc.labels[on] = ROAD
        lc.road_bearing[on] = burnt[on] - 1000
        lc.roads.append(line)
        lc.road_widths_px.append(width)

    # River, lake, sea: water overrides the land below.
    if rng.random() < 0.45:
        line = _river_line(rng, size)
        width = rng.uniform(18, 60) / gsd
        river = _burn(shape, [(line.buffer(width / 2), 1)], "uint8") > 0
        lc.labels[river] = RIVER
        lc.road_bearing[river] = np.nan
        lc.rivers.append(line)
        lc.river_widths_px.append(width)
    if rng.random() < 0.25:
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        radius = rng.uniform(60, 200) / gsd
        if v3:
            radius = max(radius, size * rng.uniform(0.06, 0.2))
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        lake = np.hypot(xx - cx, yy - cy) / radius + 0.3 * fbm(shape, rng, 4, 4) < 1.0
        lc.labels[lake] = LAKE
        lc.road_bearing[lake] = np.nan
    if rng.random() < 0.3:
        side = _SIDES[rng.integers(4)]
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dist = {"north": yy, "south": size - 1 - yy, "west": xx, "east": size - 1 - xx}[side]
        sea = dist + 0.06 * size * fbm(shape, rng, 3, 5) < rng.uniform(0.15, 0.4) * size
        lc.labels[sea] = SEA
        lc.road_bearing[sea] = np.nan
        lc.sea_side = side
    return lc


def _mountains(lc: LandCover, gsd: float, rng: np.random.Generator) -> None:
    """High, steep land becomes mountain (rock and scree); the slopes below it forest, with meadows."""
    elev = lc.elevation
    gy, gx = np.gradient(elev)
    slope = np.hypot(gx, gy) / gsd                       # rise per metre
    high = elev > np.quantile(elev, rng.uniform(0.45, 0.7))
    # rock on the crests and on cliffs: a slope-only band would ring every massif in bright lines
    rock = high & ((slope > 1.5) | (elev > np.quantile(elev, rng.uniform(0.88, 0.96))))
    land = ~np.isin(lc.labels, (SEA, LAKE, RIVER, ROAD))
    lc.labels[land & high & ~rock & (lc.labels != URBAN)] = FOREST
    lc.labels[land & rock] = MOUNTAIN
    meadows = land & high & ~rock & (fbm(lc.shape, rng, 8, 3) > 0.8)
    lc.labels[meadows] = GRASS


def carve(lc: LandCover, polygon: Polygon, label: int) -> None:
    """Paint a polygon (pixel coordinates) of one land-cover label into the map (for sites)."""
    mask = _burn(lc.shape, [(polygon, 1)], "uint8") > 0
    lc.labels[mask] = label
    lc.road_bearing[mask] = np.nan


def scene_box(size: int) -> Polygon:
    return box(0, 0, size, size)
