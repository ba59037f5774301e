"""Objects of the synthetic world: their geometry in metres, attributes, and how they are painted.

A builder takes a centre (scene pixels), a bearing (compass degrees of the long axis) and the
ground sample distance (metres per pixel), and returns an `ObjectRecord` (what the ground truth
says) plus a list of paint operations (what the image shows). Shadows fall away from the sun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rasterio.transform import Affine
from rasterio.features import rasterize
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry import box as shapely_box
from shapely.ops import unary_union

from mgimm_core.vocabulary import orientation_of, position_of

from .landcover import direction_of
from .render import paint_fill, paint_shadow

# name -> (length range in metres used for the size class, colours with RGB)
CLASS_SPECS: dict[str, dict] = {
    "building": {"length": (8, 40), "colors": {"red": (158, 62, 50), "grey": (128, 128, 126),
                                              "white": (214, 214, 208), "blue": (62, 92, 150),
                                              "brown": (118, 84, 60)}},
    "vehicle": {"length": (3.8, 6.0), "colors": {"white": (225, 225, 222), "black": (30, 30, 32),
                                               "grey": (120, 122, 124), "red": (170, 35, 35),
                                               "blue": (40, 60, 150), "yellow": (215, 185, 40)}},
    "ship": {"length": (15, 120), "colors": {"white": (225, 225, 220), "grey": (120, 124, 128),
                                           "red": (150, 50, 45), "blue": (50, 70, 130),
                                           "black": (35, 35, 38)}},
    "storage tank": {"length": (8, 30), "colors": {"white": (222, 222, 216), "grey": (140, 142, 140)}},
    "tennis court": {"length": (30, 40), "colors": {"green": (60, 120, 70), "blue": (50, 90, 150),
                                                  "red": (160, 70, 55)}},
    "basketball court": {"length": (30, 38), "colors": {"blue": (55, 95, 150), "green": (70, 125, 80),
                                                      "red": (165, 75, 55), "orange": (200, 120, 60)}},
    "ground track field": {"length": (150, 190), "colors": {"red": (165, 68, 52), "blue": (60, 95, 150),
                                                          "brown": (140, 100, 70)}},
    "airplane": {"length": (30, 70), "colors": {"white": (228, 228, 226), "grey": (104, 107, 112)}},
    "bridge": {"length": (20, 80), "colors": {"grey": (150, 150, 146)}},
    "windmill": {"length": (50, 100), "colors": {"white": (232, 232, 230)}},
    "chimney": {"length": (40, 120), "colors": {"red": (160, 60, 50), "white": (220, 220, 215),
                                              "grey": (130, 130, 128)}},
    "baseball field": {"length": (70, 110), "colors": {"green": (80, 135, 70)}},
}
DRAWN_CLASSES: tuple[str, ...] = tuple(CLASS_SPECS)
_WHITE = (236, 236, 232)


@dataclass
class ObjectRecord:
    """One ground-truth object. Geometry in scene pixels; lengths in metres."""

    name: str
    color: str
    shape: str
    size: str
    orientation: str | None
    footprint: Polygon
    length_m: float
    width_m: float
    bearing_deg: float | None
    id: int = -1

    @property
    def centroid(self) -> tuple[float, float]:
        c = self.footprint.centroid
        return c.x, c.y

    def bbox(self, window: tuple[float, float, float, float] | None = None) -> list[float]:
        """[x, y, w, h] in pixels, relative to `window` (col_off, row_off, width, height) if given."""
        x0, y0, x1, y1 = self.footprint.bounds
        ox, oy = (window[0], window[1]) if window else (0, 0)
        return [x0 - ox, y0 - oy, x1 - x0, y1 - y0]

    def attributes(self, window: tuple[float, float, float, float]) -> dict[str, str | None]:
        """Vocabulary attributes, the position taken relative to `window` (the scene or a tile)."""
        cx, cy = self.centroid
        return {"name": self.name, "color": self.color, "shape": self.shape, "size": self.size,
                "orientation": self.orientation,
                "position": position_of(cx - window[0], cy - window[1], window[2], window[3])}


@dataclass
class Paint:
    """One paint operation: fill a geometry with a colour, or darken it (a shadow)."""

    geom: object
    color: tuple | None = None      # None: shadow
    darkness: float = 0.0
    grain: float = 0.03


@dataclass
class Built:
    record: ObjectRecord
    paints: list[Paint] = field(default_factory=list)


def object_extent(geom) -> float:
    """The longer side of a geometry's bounds, at least 4 px (a floor for margins drawn from it)."""
    minx, miny, maxx, maxy = geom.bounds
    return max(maxx - minx, maxy - miny, 4.0)


def box_with_margins(geom, rng: np.random.Generator, low: float, high: float):
    """The bounds of `geom` grown on each side by its own fraction, drawn from [low, high), of the
    geometry's extent: an AOI as a user draws it around an object (training/benchmark.py draws its
    AOIs so; training/demo_data.py trains on them)."""
    minx, miny, maxx, maxy = geom.bounds
    m = rng.uniform(low, high, size=4) * object_extent(geom)
    return shapely_box(minx - m[0], miny - m[1], maxx + m[2], maxy + m[3])


def neighbour_group(objects, obj, rng: np.random.Generator, *, reach: float = 120.0, most: int = 3) -> list:
    """`obj` and one to `most` of its nearest neighbours (how many drawn) whose centres lie within
    `reach` pixels, or [] when none does: the objects a user boxes together (training/benchmark.py's
    multi AOIs; training/demo_data.py trains counts on them)."""
    centres = np.array([o.centroid for o in objects])
    distance = np.hypot(*(centres - np.array(obj.centroid)).T)
    near = [objects[int(i)] for i in np.argsort(distance)[1:most + 1] if distance[int(i)] < reach]
    if not near:
        return []
    return [obj] + near[:int(rng.integers(1, len(near) + 1))]


def size_class(name: str, length_m: float) -> str:
    """small / medium / large: the length's third of the class's range (CLASS_SPECS)."""
    lo, hi = CLASS_SPECS[name]["length"]
    t = (length_m - lo) / (hi - lo)
    return "small" if t < 1 / 3 else ("medium" if t < 2 / 3 else "large")


def oriented_rect(cx: float, cy: float, length: float, width: float, bearing: float) -> Polygon:
    """Rectangle (pixels) centred on (cx, cy), its long side `length` along the compass bearing."""
    dx, dy = direction_of(bearing)
    nx, ny = -dy, dx
    hl, hw = length / 2, width / 2
    return Polygon([(cx + dx * hl + nx * hw, cy + dy * hl + ny * hw),
                    (cx + dx * hl - nx * hw, cy + dy * hl - ny * hw),
                    (cx - dx * hl - nx * hw, cy - dy * hl - ny * hw),
                    (cx - dx * hl + nx * hw, cy - dy * hl + ny * hw)])


def local_shape(points, cx, cy, bearing) -> Polygon:
    """Polygon from local (along, across) pixel offsets, rotated to the bearing around (cx, cy)."""
    dx, dy = direction_of(bearing)
    nx, ny = -dy, dx
    return Polygon([(cx + dx * a + nx * c, cy + dy * a + ny * c) for a, c in points])


def _shadow(geom, height_m: float, gsd: float, sun: tuple[float, float], darkness=0.55) -> Paint:
    """An extruded shadow: the footprint swept `height` metres away from the sun."""
    dist = height_m * sun[1] / gsd
    ox, oy = -sun[0][0] * dist, -sun[0][1] * dist
    moved = affinity.translate(geom, ox, oy)
    return Paint(unary_union([geom, moved]).convex_hull, None, darkness)


def _outline(poly: Polygon, width_px: float):
    return poly.exterior.buffer(width_px / 2, cap_style="flat")


def _jitter(rng, rgb, amount=0.08):
    """Brightness jitter with only a faint tint, so a colour stays the colour it is named."""
    k = rng.uniform(1 - amount, 1 + amount)
    return tuple(min(255.0, float(v) * k * rng.uniform(0.98, 1.02)) for v in rgb)


def build(name: str, rng: np.random.Generator, cx: float, cy: float, bearing: float, gsd: float,
          sun, color: str | None = None, length_m: float | None = None, **kw) -> Built:
    """Build one object of class `name`; colour and length are drawn from CLASS_SPECS if not given."""
    spec = CLASS_SPECS[name]
    colors = spec["colors"]
    color = color or list(colors)[rng.integers(len(colors))]
    length_m = length_m if length_m is not None else rng.uniform(*spec["length"])
    rgb = _jitter(rng, colors[color])
    return _BUILDERS[name](rng, cx, cy, bearing % 360, gsd, sun, color, rgb, length_m, **kw)


def _record(name, color, shape, length_m, width_m, bearing, footprint, oriented=True) -> ObjectRecord:
    orient = orientation_of(bearing) if oriented else None
    return ObjectRecord(name, color, shape, size_class(name, length_m), orient, footprint,
                        float(length_m), float(width_m), float(bearing) if oriented else None)


def _building(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m, shape=None):
    shape = shape or ("rectangular", "square", "L-shaped")[rng.choice(3, p=[0.5, 0.25, 0.25])]
    L = length_m / gsd
    if shape == "square":
        width_m = length_m
        parts = [oriented_rect(cx, cy, L, L, bearing)]
    elif shape == "rectangular":
        width_m = length_m * rng.uniform(0.4, 0.7)
        parts = [oriented_rect(cx, cy, L, width_m / gsd, bearing)]
    else:
        width_m = length_m * rng.uniform(0.6, 0.9)
        W = width_m / gsd
        t = W * rng.uniform(0.35, 0.5)
        side = rng.choice([-1, 1])
        parts = [local_shape([(L / 2, -W / 2), (L / 2, -W / 2 + t), (-L / 2, -W / 2 + t), (-L / 2, -W / 2)], cx, cy, bearing),
                 local_shape([(side * L / 2, -W / 2), (side * (L / 2 - t), -W / 2), (side * (L / 2 - t), W / 2), (side * L / 2, W / 2)], cx, cy, bearing)]
    footprint = unary_union(parts)
    if footprint.geom_type != "Polygon":
        footprint = footprint.convex_hull
    height = rng.uniform(4, 18)
    paints = [_shadow(p, height, gsd, sun) for p in parts] + [Paint(footprint, rgb, grain=0.04)]
    if shape == "rectangular":   # gable roof: the half away from the sun is darker
        half = oriented_rect(cx, cy, L, width_m / gsd / 2, bearing)
        half = affinity.translate(half, *(np.array(direction_of(bearing + 90)) * width_m / gsd / 4))
        paints.append(Paint(half, tuple(v * 0.82 for v in rgb), grain=0.04))
    paints.append(Paint(_outline(footprint, 0.6), tuple(v * 0.7 for v in rgb), grain=0.0))
    return Built(_record("building", color, shape, length_m, width_m, bearing, footprint,
                         oriented=shape != "square"), paints)


def _vehicle(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    width_m = 1.8 if length_m < 5.2 else 2.3
    L, W = length_m / gsd, width_m / gsd
    body = oriented_rect(cx, cy, L, W, bearing)
    dx, dy = direction_of(bearing)
    glass = oriented_rect(cx + dx * L * 0.12, cy + dy * L * 0.12, L * 0.22, W * 0.85, bearing)
    paints = [_shadow(body, 1.5, gsd, sun, 0.5), Paint(body, rgb, grain=0.02),
              Paint(glass, (40, 45, 50), grain=0.02)]
    return Built(_record("vehicle", color, "rectangular", length_m, width_m, bearing, body), paints)


def _ship(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    width_m = length_m / rng.uniform(5, 7)
    L, W = length_m / gsd, width_m / gsd
    hull = local_shape([(L / 2, 0), (L / 2 - W, W / 2), (-L / 2, W / 2), (-L / 2, -W / 2), (L / 2 - W, -W / 2)],
                       cx, cy, bearing)
    deck = local_shape([(-L / 2 + W * 0.4, W / 3), (-L / 2 + L * 0.3, W / 3), (-L / 2 + L * 0.3, -W / 3),
                        (-L / 2 + W * 0.4, -W / 3)], cx, cy, bearing)
    wake = local_shape([(-L / 2, W / 2), (-L / 2 - L * 0.5, W * 1.1), (-L / 2 - L * 0.5, -W * 1.1),
                        (-L / 2, -W / 2)], cx, cy, bearing)
    paints = [Paint(wake, (200, 210, 210), grain=0.15), _shadow(hull, 3, gsd, sun, 0.45),
              Paint(hull, rgb, grain=0.03), Paint(deck, (230, 230, 226) if color != "white" else (160, 165, 170))]
    # the wake is painted at reduced strength by keeping its paint faint
    paints[0].darkness = 0.18
    return Built(_record("ship", color, "elongated", length_m, width_m, bearing, hull), paints)


def _storage_tank(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    r = length_m / gsd / 2
    disc = Point(cx, cy).buffer(r, 32)
    paints = [_shadow(disc, length_m * 0.35, gsd, sun), Paint(disc, rgb, grain=0.02),
              Paint(Point(cx, cy).buffer(r, 32).exterior.buffer(max(0.5, r * 0.08)), tuple(v * 0.8 for v in rgb)),
              Paint(Point(cx + r * 0.15, cy + r * 0.15).buffer(r * 0.12, 16), tuple(v * 0.85 for v in rgb))]
    return Built(_record("storage tank", color, "circular", length_m, length_m, bearing, disc, False), paints)


def _court(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m, name, play):
    """Shared by tennis and basketball courts: surround, playing area, white lines."""
    width_m = length_m * rng.uniform(0.5, 0.56)
    L, W = length_m / gsd, width_m / gsd
    surround = oriented_rect(cx, cy, L, W, bearing)
    pl, pw = play[0] / gsd, play[1] / gsd
    field_ = oriented_rect(cx, cy, pl, pw, bearing)
    line = max(0.6, 0.25 / gsd)
    dx, dy = direction_of(bearing)
    paints = [Paint(surround, tuple(v * 0.85 for v in rgb), grain=0.02), Paint(field_, rgb, grain=0.02),
              Paint(_outline(field_, line), _WHITE, grain=0.0),
              Paint(oriented_rect(cx, cy, line, pw, bearing), _WHITE, grain=0.0)]
    if name == "tennis court":
        for s in (-1, 1):
            px, py = cx + dx * s * 6.4 / gsd, cy + dy * s * 6.4 / gsd
            paints.append(Paint(oriented_rect(px, py, line, pw * 0.75, bearing), _WHITE, grain=0.0))
        paints.append(Paint(oriented_rect(cx, cy, 12.8 / gsd, line, bearing), _WHITE, grain=0.0))
    else:
        paints.append(Paint(Point(cx, cy).buffer(1.8 / gsd).exterior.buffer(line / 2), _WHITE, grain=0.0))
        for s in (-1, 1):
            px, py = cx + dx * s * (pl / 2 - 2.9 / gsd), cy + dy * s * (pl / 2 - 2.9 / gsd)
            paints.append(Paint(_outline(oriented_rect(px, py, 5.8 / gsd, 4.9 / gsd, bearing), line), _WHITE, grain=0.0))
    return Built(_record(name, color, "rectangular", length_m, width_m, bearing, surround), paints)


def _tennis(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    return _court(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m, "tennis court", (23.77, 10.97))


def _basketball(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    return _court(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m, "basketball court", (28.0, 15.0))


def _track(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    width_m = length_m * rng.uniform(0.48, 0.55)
    L, W = length_m / gsd, width_m / gsd
    dx, dy = direction_of(bearing)
    half = (L - W) / 2
    spine = LineString([(cx - dx * half, cy - dy * half), (cx + dx * half, cy + dy * half)])
    outer = spine.buffer(W / 2, 48)
    lane = 9.0 / gsd
    inner = spine.buffer(W / 2 - lane, 48)
    paints = [Paint(outer, rgb, grain=0.03), Paint(inner, (78, 132, 64), grain=0.05)]
    for k in range(1, 4):
        paints.append(Paint(spine.buffer(W / 2 - lane * k / 4, 48).exterior.buffer(max(0.4, 0.1 / gsd)),
                            _WHITE, grain=0.0))
    for k in range(-3, 4):   # mowing stripes across the pitch
        stripe = oriented_rect(cx + dx * k * L / 10, cy + dy * k * L / 10, L / 20, W * 0.9, bearing)
        paints.append(Paint(stripe.intersection(inner), (92, 146, 74), grain=0.03))
    return Built(_record("ground track field", color, "oval", length_m, width_m, bearing, outer), paints)


def _airplane(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    L = length_m / gsd
    span = L * rng.uniform(0.85, 1.05)
    f = L * 0.06
    wing_root, sweep = L * 0.18, L * 0.14
    pts_fuselage = [(L / 2, 0), (L / 2 - f * 2, f), (-L / 2, f * 0.6), (-L / 2, -f * 0.6), (L / 2 - f * 2, -f)]
    wings = [(wing_root * 0.6, f), (-sweep, span / 2), (-sweep - L * 0.06, span / 2), (-wing_root * 0.6, f),
             (-wing_root * 0.6, -f), (-sweep - L * 0.06, -span / 2), (-sweep, -span / 2), (wing_root * 0.6, -f)]
    tail = [(-L * 0.36, f), (-L * 0.46, span * 0.18), (-L * 0.5, span * 0.18), (-L * 0.47, 0),
            (-L * 0.5, -span * 0.18), (-L * 0.46, -span * 0.18), (-L * 0.36, -f)]
    parts = [local_shape(p, cx, cy, bearing) for p in (pts_fuselage, wings, tail)]
    footprint = unary_union(parts)
    if footprint.geom_type != "Polygon":
        footprint = footprint.convex_hull
    dist = 6.0 / gsd
    moved = affinity.translate(footprint, -sun[0][0] * dist, -sun[0][1] * dist)
    paints = [Paint(moved, None, 0.5), Paint(footprint, rgb, grain=0.02)]
    return Built(_record("airplane", color, "cross-shaped", length_m, span * gsd, bearing, footprint), paints)


def _bridge(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m, width_m=10.0):
    deck = oriented_rect(cx, cy, length_m / gsd, width_m / gsd, bearing)
    dist = 4.0 / gsd
    moved = affinity.translate(deck, -sun[0][0] * dist, -sun[0][1] * dist)
    rail = max(0.5, 0.5 / gsd)
    paints = [Paint(moved, None, 0.5), Paint(deck, rgb, grain=0.03),
              Paint(_outline(deck, rail), tuple(v * 1.15 for v in rgb), grain=0.0)]
    return Built(_record("bridge", color, "elongated", length_m, width_m, bearing, deck), paints)


def _windmill(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    blade = length_m * 0.45 / gsd
    bw = max(1.0, 2.2 / gsd)
    start = rng.uniform(0, 120)
    blades = [local_shape([(0, -bw / 2), (blade, -bw / 4), (blade, bw / 4), (0, bw / 2)], cx, cy, start + k * 120)
              for k in range(3)]
    hub = Point(cx, cy).buffer(max(1.5, 2.5 / gsd), 16)
    footprint = unary_union(blades + [hub])
    tower_len = length_m * 0.9 * sun[1] / gsd
    sx, sy = -sun[0][0] * tower_len, -sun[0][1] * tower_len
    tower_shadow = LineString([(cx, cy), (cx + sx, cy + sy)]).buffer(max(0.8, 1.5 / gsd))
    blade_shadow = affinity.translate(footprint, sx, sy)
    paints = [Paint(tower_shadow, None, 0.55), Paint(blade_shadow, None, 0.5), Paint(footprint, rgb, grain=0.0)]
    return Built(_record("windmill", color, "Y-shaped", length_m, length_m * 0.9, bearing, footprint, False), paints)


def _chimney(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    d = rng.uniform(3, 8)
    disc = Point(cx, cy).buffer(d / 2 / gsd, 24)
    shadow_len = length_m * sun[1] / gsd
    sx, sy = -sun[0][0] * shadow_len, -sun[0][1] * shadow_len
    shadow = LineString([(cx, cy), (cx + sx, cy + sy)]).buffer(d / 2 / gsd * 0.8)
    paints = [Paint(shadow, None, 0.6), Paint(disc, rgb, grain=0.02),
              Paint(Point(cx, cy).buffer(d / 4 / gsd, 16), (30, 30, 30), grain=0.0)]
    return Built(_record("chimney", color, "circular", length_m, d, bearing, disc, False), paints)


def _baseball(rng, cx, cy, bearing, gsd, sun, color, rgb, length_m):
    R = length_m / gsd
    dx, dy = direction_of(bearing)
    hx, hy = cx - dx * R / 2, cy - dy * R / 2      # home plate; the fan opens along the bearing
    fan = Polygon([(hx, hy)] + [(hx + R * direction_of(bearing + a)[0], hy + R * direction_of(bearing + a)[1])
                                for a in np.linspace(-45, 45, 24)])
    r_in = min(R * 0.45, 40 / gsd)
    infield = Polygon([(hx, hy)] + [(hx + r_in * direction_of(bearing + a)[0], hy + r_in * direction_of(bearing + a)[1])
                                    for a in np.linspace(-45, 45, 16)])
    diamond = local_shape([(0, 0), (13.7 / gsd, 13.7 / gsd), (27.4 / gsd, 0), (13.7 / gsd, -13.7 / gsd)],
                          hx, hy, bearing).buffer(0)
    paints = [Paint(fan, rgb, grain=0.05), Paint(infield, (170, 130, 90), grain=0.04),
              Paint(diamond, (96, 150, 76), grain=0.04)]
    return Built(_record("baseball field", color, "fan-shaped", length_m, length_m * 1.4, bearing, fan), paints)


_BUILDERS = {"building": _building, "vehicle": _vehicle, "ship": _ship, "storage tank": _storage_tank,
             "tennis court": _tennis, "basketball court": _basketball, "ground track field": _track,
             "airplane": _airplane, "bridge": _bridge, "windmill": _windmill, "chimney": _chimney,
             "baseball field": _baseball}


def coverage(geom, supersample: int = 3):
    """Fraction of each pixel covered by `geom` (pixel coordinates), over its bounding window.

    Returns (row_off, col_off, cover float32) or None when the geometry is empty.
    """
    if geom.is_empty:
        return None
    x0, y0, x1, y1 = geom.bounds
    c0, r0 = int(math.floor(x0)), int(math.floor(y0))
    w, h = int(math.ceil(x1)) - c0 + 1, int(math.ceil(y1)) - r0 + 1
    s = supersample
    transform = Affine(1.0 / s, 0, c0, 0, 1.0 / s, r0)
    burnt = rasterize([(geom, 1)], out_shape=(h * s, w * s), transform=transform, dtype="uint8")
    cover = burnt.reshape(h, s, w, s).mean(axis=(1, 3), dtype=np.float32)
    return r0, c0, cover


def paint(img: np.ndarray, built: Built, rng: np.random.Generator) -> None:
    """Apply an object's paint operations to the float image, clipped to the image."""
    H, W = img.shape[:2]
    for op in built.paints:
        got = coverage(op.geom)
        if got is None:
            continue
        r0, c0, cover = got
        rs, cs = max(0, -r0), max(0, -c0)
        re_, ce = min(cover.shape[0], H - r0), min(cover.shape[1], W - c0)
        if re_ <= rs or ce <= cs:
            continue
        cover = cover[rs:re_, cs:ce]
        if op.color is None:
            paint_shadow(img, r0 + rs, c0 + cs, cover, op.darkness)
        elif op.darkness:   # translucent fill (wakes)
            paint_fill(img, r0 + rs, c0 + cs, cover * op.darkness, op.color, op.grain, rng)
        else:
            paint_fill(img, r0 + rs, c0 + cs, cover, op.color, op.grain, rng)
