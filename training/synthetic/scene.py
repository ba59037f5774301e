"""One synthetic scene: land cover, objects placed where they belong, the image, and its georeference.

`generate_scene(seed, size, gsd)` is a pure function of its arguments: the same seed gives the same
pixels, objects and CRS. Geometry is kept in scene pixels; `SceneSample.transform` maps pixels to
CRS units (metres for every CRS used here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pyproj import CRS, Transformer
from rasterio.transform import Affine
from shapely.geometry import Point

from . import landcover as lcm
from .landcover import BARE, FARMLAND, GRASS, LAKE, PAVED, RIVER, ROAD, SEA, URBAN, LandCover
from .objects import CLASS_SPECS, Built, ObjectRecord, build, paint
from .render import clouds, finish, finish_v3, render_background, render_background_v3

# Projected CRSs other than UTM, with a lon/lat box inside their area of use.
_OTHER_CRS = (("EPSG:2154", (0.0, 6.0, 44.0, 49.5)),      # RGF93 / Lambert-93 (France)
              ("EPSG:3035", (0.0, 25.0, 40.0, 58.0)),     # ETRS89 / LAEA Europe
              ("EPSG:27700", (-4.0, 1.0, 51.0, 55.0)),    # OSGB36 / British National Grid
              ("EPSG:5070", (-120.0, -75.0, 30.0, 47.0)),  # NAD83 / Conus Albers
              ("EPSG:3577", (115.0, 150.0, -38.0, -20.0)))  # GDA94 / Australian Albers


@dataclass
class SceneSample:
    """A generated scene. `image` is (H, W, 3) uint8 RGB (R = G = B when bands is "gray"); objects'
    geometry is in pixels. `cloud`: world-v3 cloud opacity (H, W) in 0..1, None when clear."""

    seed: int
    image: np.ndarray
    transform: Affine
    crs: str
    gsd: float
    objects: list[ObjectRecord]
    landcover: LandCover
    meta: dict = field(default_factory=dict)
    bands: str = "rgb"
    cloud: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.image.shape[0], self.image.shape[1]


def choose_georeference(rng: np.random.Generator, size: int, gsd: float, crs: str | None = None):
    """A projected CRS (mostly a UTM zone) and a north-up transform at a plausible place on land.

    Returns (crs string "EPSG:xxxx", Affine). `crs`, when given, is used instead of the draw.
    """
    if crs is None and rng.random() < 0.2:
        crs, (lo0, lo1, la0, la1) = _OTHER_CRS[rng.integers(len(_OTHER_CRS))]
        lon, lat = rng.uniform(lo0, lo1), rng.uniform(la0, la1)
    elif crs is None:
        zone = int(rng.integers(1, 61))
        lat = rng.uniform(-45, 62)
        lon = -180 + (zone - 1) * 6 + rng.uniform(0.5, 5.5)
        crs = f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"
    else:
        info = CRS.from_user_input(crs)
        if not info.is_projected:
            raise ValueError(f"CRS {crs!r} is geographic; give a projected CRS in metres (e.g. EPSG:32633)")
        area = info.area_of_use
        lon = rng.uniform(area.west, area.east) if area else 0.0
        lat = rng.uniform(area.south, area.north) if area else 0.0
        lon = (area.west + area.east) / 2 if area else lon
        lat = (area.south + area.north) / 2 if area else lat
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    x = math.floor(x / 10) * 10.0
    y = math.floor(y / 10) * 10.0
    return crs, Affine(gsd, 0.0, x, 0.0, -gsd, y)


#: World v3: the GSD range scenes are drawn from (log-uniform), metres per pixel.
GSD_RANGE_M = (0.3, 30.0)
#: World v3: an object is in the ground truth only if its long axis spans at least this many pixels
#: (smaller ones are still painted, as the sub-pixel mix a sensor records, but nobody could name them).
MIN_OBJECT_PX = 2.0
#: World v3: an object under cloud thicker than this (opacity at its centre) is not in the truth.
MAX_CLOUD_OPACITY = 0.6


@dataclass(frozen=True)
class Look:
    """How a world-v3 scene is drawn and rendered; `generate_scene(..., look=None)` is world v2.

    bands: "rgb", or "gray" (one luminance band; `SceneSample.image` then holds it in R = G = B and
        the GeoTIFF writers write a single band, as a panchromatic file is).
    terrain: "plain", "hills" or "mountains" (None: drawn from the seed).
    cloud_cover: share of the scene under cloud (0: clear; None: drawn from the seed, satellite GSDs
        only, since aerial surveys fly on clear days).
    """

    bands: str = "rgb"
    terrain: str | None = None
    cloud_cover: float | None = None


def draw_look(seed: int) -> tuple[float, Look]:
    """The GSD (log-uniform over GSD_RANGE_M) and Look of world-v3 scene `seed`: one in four gray."""
    rng = np.random.default_rng([int(seed), 3])
    gsd = float(np.exp(rng.uniform(np.log(GSD_RANGE_M[0]), np.log(GSD_RANGE_M[1]))))
    gsd = round(gsd, 2 if gsd < 1 else 1)
    bands = "gray" if rng.random() < 0.25 else "rgb"
    return gsd, Look(bands=bands)


def generate_scene_v3(seed: int, size: int = 512) -> SceneSample:
    """World-v3 scene `seed` at its drawn GSD and look (`draw_look`)."""
    gsd, look = draw_look(seed)
    return generate_scene(seed, size, gsd, look=look)


def world_scene(seed: int, size: int, world: int, gsd: float = 0.5) -> SceneSample:
    """Scene `seed` of `world`: 2, world v2 at `gsd` (the shipped demo model's); 3, world v3 at the
    GSD and look the seed draws (`gsd` unused)."""
    return generate_scene_v3(seed, size) if world == 3 else generate_scene(seed, size=size, gsd=gsd)


class _Placer:
    """Places built objects where their land cover allows and nothing else stands."""

    def __init__(self, lc: LandCover, img: np.ndarray, rng: np.random.Generator, gsd: float, sun,
                 min_px: float = 0.0):
        self.lc, self.img, self.rng, self.gsd, self.sun = lc, img, rng, gsd, sun
        self.occupied = np.zeros(lc.shape, bool)
        self.objects: list[ObjectRecord] = []
        self.h, self.w = lc.shape
        self.min_px = min_px          # world v3: objects with a shorter long side (pixels) are painted, not recorded

    @property
    def v3(self) -> bool:
        return self.min_px > 0

    def fits(self, built: Built, allowed, margin: float = 1.0) -> bool:
        fp = built.record.footprint
        x0, y0, x1, y1 = fp.bounds
        if x0 < 1 or y0 < 1 or x1 > self.w - 2 or y1 > self.h - 2:
            return False
        pts = list(fp.exterior.coords) + [(fp.centroid.x, fp.centroid.y)]
        labels = self.lc.labels
        if not all(labels[int(y), int(x)] in allowed for x, y in pts):
            return False
        r0, r1 = max(0, int(y0 - margin)), int(math.ceil(y1 + margin))
        c0, c1 = max(0, int(x0 - margin)), int(math.ceil(x1 + margin))
        return not self.occupied[r0:r1, c0:c1].any()

    def place(self, built: Built) -> None:
        x0, y0, x1, y1 = built.record.footprint.bounds
        self.occupied[int(y0):int(math.ceil(y1)) + 1, int(x0):int(math.ceil(x1)) + 1] = True
        if not self.min_px or _long_axis_px(built.record, self.gsd) >= self.min_px:
            built.record.id = len(self.objects)
            self.objects.append(built.record)
        paint(self.img, built, self.rng)

    def put(self, name: str, x: float, y: float, bearing: float, allowed, margin: float = 1.0, **kw) -> bool:
        """Build object `name` at (x, y) and place it if it fits (see `fits`)."""
        built = build(name, self.rng, x, y, bearing, self.gsd, self.sun, **kw)
        if self.fits(built, allowed, margin):
            self.place(built)
            return True
        return False


def _random_point(rng, lc: LandCover, allowed, tries=50):
    h, w = lc.shape
    for _ in range(tries):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if lc.labels[int(y), int(x)] in allowed:
            return x, y
    return None


def _site(rng, lc, sites, length_px, width_px, bearing):
    """A free rectangle for a site (paved apron, industrial yard, sports ground) on dry land."""
    h, w = lc.shape
    if max(length_px, width_px) > 0.8 * min(h, w):
        return None, None
    for _ in range(30):
        cx, cy = rng.uniform(length_px / 2, w - length_px / 2), rng.uniform(length_px / 2, h - length_px / 2)
        from .objects import oriented_rect
        rect = oriented_rect(cx, cy, length_px, width_px, bearing)
        if any(rect.intersects(s) for s in sites):
            continue
        x0, y0, x1, y1 = [int(v) for v in rect.bounds]
        patch = lc.labels[max(0, y0):y1, max(0, x0):x1]
        if patch.size and np.isin(patch, lcm.WATER).mean() < 0.02:
            sites.append(rect.buffer(4))
            return rect, (cx, cy)
    return None, None


def _grid_in(rect_center, bearing, n_along, n_across, step_along, step_across):
    from .landcover import direction_of
    dx, dy = direction_of(bearing)
    nx, ny = -dy, dx
    cx, cy = rect_center
    for i in range(n_along):
        for j in range(n_across):
            a = (i - (n_along - 1) / 2) * step_along
            c = (j - (n_across - 1) / 2) * step_across
            yield cx + dx * a + nx * c, cy + dy * a + ny * c


@dataclass(frozen=True)
class _SiteSpec:
    """A site planned before anything is painted: its land cover is carved, `generate_scene` fills it."""

    kind: str
    chance: float
    turn: float | None                       # bearing drawn in 0..turn degrees; None: along or across the streets
    length_m: float | tuple[float, float]    # a (low, high) range is drawn uniformly
    width_m: float | tuple[float, float]
    covers: tuple[int, ...]                  # the carved land cover, one drawn when several
    disc_m: float | None = None              # carve a disc of this radius instead of the rectangle
    urban_only: bool = False                 # only where more than 5% of the scene is urban


# In this order (each draw comes from the scene's one random generator).
_SITES = (
    _SiteSpec("airport", 0.3, 180, (160, 260), (90, 140), (PAVED,)),
    _SiteSpec("industry", 0.4, None, (90, 180), (60, 110), (PAVED, BARE)),
    _SiteSpec("track", 0.35, None, 200, 110, (GRASS,)),
    _SiteSpec("courts", 0.5, None, (45, 120), (40, 60), (PAVED, GRASS)),
    _SiteSpec("parking", 0.6, None, (40, 80), (25, 45), (PAVED,), urban_only=True),
    _SiteSpec("baseball", 0.15, 360, 130, 130, (GRASS,), disc_m=60),
)


def _metres(rng: np.random.Generator, value: float | tuple[float, float]) -> float:
    return rng.uniform(*value) if isinstance(value, tuple) else value


def _long_axis_px(record: ObjectRecord, gsd: float) -> float:
    """The object's longest side (length or width) in pixels."""
    return max(record.length_m, record.width_m) / gsd


def generate_scene(seed: int, size: int = 1024, gsd: float = 0.5, crs: str | None = None, *,
                   look: Look | None = None) -> SceneSample:
    """Generate one square scene of `size` pixels at `gsd` metres per pixel, deterministic by seed.

    look=None: world v2 (the shipped demo model's world; its pixels are unchanged). A Look: world v3
    (`Look`): terrain with relief and mountains, textures scaled to the GSD, satellite rendering at
    coarse GSDs, clouds, grayscale, crowds of vehicles and ships, and only objects of at least
    MIN_OBJECT_PX pixels (and not under thick cloud) in the truth."""
    rng = np.random.default_rng(seed)
    v3 = look is not None
    crs_name, transform = choose_georeference(rng, size, gsd, crs)
    terrain = None
    if look is not None:
        terrain = look.terrain or str(rng.choice(["plain", "hills", "mountains"], p=[0.5, 0.3, 0.2]))
    lc = lcm.build_landcover(size, gsd, rng, terrain)
    sun_azimuth = rng.uniform(100, 260)        # the sun is in the southern half of the sky
    sun_elev = rng.uniform(45, 70)
    sun = (lcm.direction_of(sun_azimuth), 1.0 / math.tan(math.radians(sun_elev)))
    plans = _plan_sites(rng, lc, 1.0 / gsd, v3)    # sites change the land cover before anything is painted
    background = render_background_v3(lc, gsd, rng, sun_azimuth, sun_elev) if v3 else render_background(lc, gsd, rng)
    placer = _Placer(lc, background, rng, gsd, sun, MIN_OBJECT_PX if v3 else 0.0)
    _place_bridges(placer)
    for kind, c, b, rect in plans:
        _fill_site(placer, kind, c, b, rect)
    _scatter_objects(placer, size)
    meta = {"sun_azimuth": sun_azimuth, "sun_elevation": sun_elev}
    if look is None:
        return SceneSample(seed, finish(placer.img, rng), transform, crs_name, gsd, placer.objects, lc, meta)
    cover = look.cloud_cover
    if cover is None:
        cover = float(rng.uniform(0.05, 0.4)) if gsd >= 2.0 and rng.random() < 0.2 else 0.0
    cloud = clouds(lc.shape, gsd, rng, cover) if cover > 0 else None
    image = finish_v3(placer.img, gsd, rng, cloud, sun_azimuth, sun_elev, look.bands)
    objects = placer.objects
    if cloud is not None:
        objects = [o for o in objects if cloud[min(size - 1, int(o.centroid[1])), min(size - 1, int(o.centroid[0]))]
                   <= MAX_CLOUD_OPACITY]
        for i, o in enumerate(objects):
            o.id = i
    meta.update(terrain=terrain, cloud_cover=cover, world=3)
    return SceneSample(seed, image, transform, crs_name, gsd, objects, lc, meta, look.bands, cloud)


def _plan_sites(rng: np.random.Generator, lc: LandCover, m: float, v3: bool = False) -> list[tuple]:
    """(kind, centre, bearing, rectangle) of each site of _SITES drawn for this scene, its land cover
    carved. m: pixels per metre. v3: car parks are more frequent (0.85) and half of them twice as
    large (crowds of vehicles)."""
    sites: list = []
    plans = []
    street = lc.street_bearing
    for spec in _SITES:
        if spec.urban_only and (lc.labels == URBAN).mean() <= 0.05:
            continue
        parking_v3 = v3 and spec.kind == "parking"
        if not rng.random() < (0.85 if parking_v3 else spec.chance):
            continue
        b = rng.choice([street, street + 90]) if spec.turn is None else rng.uniform(0, spec.turn)
        big = 2.0 if parking_v3 and rng.random() < 0.5 else 1.0
        rect, c = _site(rng, lc, sites, _metres(rng, spec.length_m) * m * big, _metres(rng, spec.width_m) * m * big,
                        b)
        if rect is None:
            continue
        cover = spec.covers[0] if len(spec.covers) == 1 else rng.choice(list(spec.covers))
        lcm.carve(lc, Point(c).buffer(spec.disc_m * m) if spec.disc_m else rect, cover)
        plans.append((spec.kind, c, b, rect))
    return plans


def _place_bridges(placer: _Placer) -> None:
    """Bridges where main roads cross rivers."""
    lc, rng, gsd = placer.lc, placer.rng, placer.gsd
    for road, road_w in zip(lc.roads, lc.road_widths_px):
        for river, river_w in zip(lc.rivers, lc.river_widths_px):
            crossing = road.intersection(river)
            points = [crossing] if crossing.geom_type == "Point" else list(getattr(crossing, "geoms", []))
            for p in points:
                seg_bearing = _bearing_near(road, p)
                length_m = river_w * gsd * rng.uniform(1.3, 1.8)
                placer.place(build("bridge", rng, p.x, p.y, seg_bearing, gsd, placer.sun, length_m=length_m,
                                   width_m=road_w * gsd * 1.1))


def _fill_site(placer: _Placer, kind: str, c, b, rect) -> None:
    """The objects of one planned site (_plan_sites)."""
    rng, lc, put, m = placer.rng, placer.lc, placer.put, 1.0 / placer.gsd
    if kind == "airport":
        length_m = rng.uniform(30, 70)
        n = int(min(rng.integers(1, 5), rect.length / 2 / (length_m * 1.2 * m)))
        for x, y in _grid_in(c, b, n, 1, length_m * 1.15 * m, 0):
            put("airplane", x, y, b + 90, {PAVED}, length_m=length_m * rng.uniform(0.9, 1.1),
                color=rng.choice(["white", "white", "grey"]))
    elif kind == "industry":
        d = rng.uniform(8, 30)
        color = rng.choice(["white", "grey"])
        gap = d * rng.uniform(1.3, 1.8) * m
        n_a = max(1, int(rect.length / 4 / gap))
        for x, y in _grid_in(c, b, n_a, max(1, n_a // 2 + 1), gap, gap):
            put("storage tank", x, y, 0, {PAVED, BARE}, length_m=d, color=color)
        if rng.random() < 0.5:
            p = _random_point(rng, lc, {PAVED, BARE})
            if p:
                put("chimney", *p, 0, {PAVED, BARE})
    elif kind == "track":
        put("ground track field", *c, b, {GRASS})
    elif kind == "courts":
        name = "tennis court" if rng.random() < 0.6 else "basketball court"
        n = int(rng.integers(1, 5))
        color = rng.choice(list(CLASS_SPECS[name]["colors"]))
        length_m = rng.uniform(31, 37)
        for x, y in _grid_in(c, b, 1, n, 0, length_m * 0.58 * m):
            put(name, x, y, b, {PAVED, GRASS}, margin=0.0, color=color, length_m=length_m)
    elif kind == "parking":
        n_rows = max(2, int(rect.length / 4 / 8 / m * 0.6)) if placer.v3 else 2
        rows = _grid_in(c, b, max(1, int(rect.length / 4 / (3 * m)) - 2), n_rows, 2.7 * m, 8 * m)
        for x, y in rows:
            if rng.random() < 0.75:
                put("vehicle", x, y, b + 90 + rng.normal(0, 3), {PAVED}, margin=0.0)
    elif kind == "baseball":
        put("baseball field", *c, b, {GRASS})


def _scatter_objects(placer: _Placer, size: int) -> None:
    """Objects outside sites: buildings, vehicles on roads, ships, windmills."""
    rng, lc, put, gsd = placer.rng, placer.lc, placer.put, placer.gsd
    m = 1.0 / gsd
    street = lc.street_bearing
    # Buildings fill urban blocks; a few farmhouses stand in the fields.
    urban_share = (lc.labels == URBAN).mean()
    n_buildings = int(urban_share * size * size * gsd * gsd / 120) + 3
    for _ in range(min(n_buildings, 1500) if placer.v3 else n_buildings):
        p = _random_point(rng, lc, {URBAN})
        if p is None:
            break
        put("building", *p, street + rng.choice([0, 90]), {URBAN}, margin=1.5 * m)
    for _ in range(int(rng.integers(0, 5))):
        p = _random_point(rng, lc, {FARMLAND, GRASS})
        if p:
            put("building", *p, rng.uniform(0, 180), {FARMLAND, GRASS}, margin=2 * m,
                length_m=rng.uniform(8, 20))
    # Vehicles on roads, following the road direction.
    road_px = np.flatnonzero(lc.labels.ravel() == ROAD)
    if road_px.size:
        n = int(road_px.size * gsd * gsd / rng.uniform(300, 1500))
        for idx in rng.choice(road_px, size=min(n, 150), replace=False):
            y, x = divmod(int(idx), size)
            bearing = lc.road_bearing[y, x]
            if np.isnan(bearing):
                continue
            length = rng.uniform(8, 14) if placer.v3 and rng.random() < 0.15 else None   # v3: buses and lorries
            put("vehicle", x + 0.5, y + 0.5, float(bearing) + rng.choice([0, 180]), {ROAD}, margin=1.5 * m,
                length_m=length)
    # Ships on open water.
    water_share = np.isin(lc.labels, (SEA, LAKE)).mean()
    for _ in range(int(water_share * 12 * rng.random()) + (1 if water_share > 0.05 else 0)):
        p = _random_point(rng, lc, {SEA, LAKE})
        if p:
            put("ship", *p, rng.uniform(0, 360), {SEA, LAKE}, margin=6 * m)
    if placer.v3 and lc.sea_side and rng.random() < 0.5:       # an anchorage: a crowd of ships in rows
        p = _random_point(rng, lc, {SEA})
        if p:
            b = rng.uniform(0, 180)
            length_m = rng.uniform(15, 90)
            for x, y in _grid_in(p, b, int(rng.integers(2, 6)), int(rng.integers(1, 4)),
                                 length_m * 1.4 * m, length_m * 0.6 * m):
                put("ship", x, y, b, {SEA}, margin=1 * m, length_m=length_m * rng.uniform(0.85, 1.15))
    for river, width in zip(lc.rivers, lc.river_widths_px):
        for _ in range(int(rng.integers(0, 3))):
            p = river.interpolate(rng.uniform(0.1, 0.9), normalized=True)
            length_m = min(rng.uniform(15, 60), width * gsd * 2.5)
            put("ship", p.x, p.y, _bearing_near(river, p) + rng.choice([0, 180]), {RIVER},
                margin=4 * m, length_m=max(15, length_m))
    # Windmills in a row across open fields.
    if rng.random() < 0.2:
        p = _random_point(rng, lc, {FARMLAND, GRASS})
        if p:
            b = rng.uniform(0, 180)
            length_m = rng.uniform(50, 100)
            for x, y in _grid_in(p, b, int(rng.integers(2, 6)), 1, rng.uniform(90, 140) * m, 0):
                put("windmill", x, y, 0, {FARMLAND, GRASS}, margin=2 * m, length_m=length_m)


def _bearing_near(line, point) -> float:
    """Bearing of a polyline's segment near a point (degrees, 0..180)."""
    d = line.project(point)
    a = line.interpolate(max(0.0, d - 5))
    b = line.interpolate(min(line.length, d + 5))
    return lcm.bearing_of(b.x - a.x, b.y - a.y) % 180.0
