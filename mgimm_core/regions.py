"""AOIs -> the exact pixels, mask and box the model sees for each region.

Two steps:

1. `read_aoi` turns an AOI source (a vector file, a WKT string or a bbox) into `AOIFeature`s:
   polygons in the AOI's own CRS, repaired when invalid, optionally buffered (in metres).
2. `place_region` places one feature on a `Scene` without reading a pixel: it reprojects the
   polygon into the scene's pixel grid (edges densified first, so an edge that is straight in the
   AOI's CRS follows its true curved path in the scene), clips it to the scene, and chooses a
   square window around it with a context margin (`ChipSettings`). Masks use pixel centres
   (GDAL's rasterisation with all_touched=False), so a polygon drawn along pixel edges selects
   exactly the pixels it encloses.
3. `read_region` reads a placement's pixels, once, and its valid fraction.

Units: "pixels" are scene pixels unless said otherwise; a chip read at a lower resolution has its
own pixels (`RegionChip.out_shape`), and its mask and box are given in those.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj
import shapely
from affine import Affine
from shapely import affinity
from rasterio.features import geometry_mask
from rasterio.windows import Window

if TYPE_CHECKING:
    from mgimm_core.scene import Scene

from mgimm_core.errors import (AOICoordinatesError, AOIError, CRSError, NoCRSError, RegionError, RegionGeometryError,
                               RegionOutsideError, RegionTooSmallError)

log = logging.getLogger(__name__)

#: CRS of WKT / bbox sources without an explicit one, and of GeoJSON (RFC 7946).
DEFAULT_AOI_CRS = "EPSG:4326"

_WKT_RE = re.compile(
    r"^\s*(SRID=\d+;\s*)?(MULTI)?(POINT|LINESTRING|POLYGON)|^\s*GEOMETRYCOLLECTION", re.IGNORECASE)
_POLYGONAL = ("Polygon", "MultiPolygon")
_AOI_FORMS = ("a vector file (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, ...), a WKT polygon "
              "('POLYGON ((...))'), or 'bbox:minx,miny,maxx,maxy'")

# Densify edges to at most this many scene pixels before reprojecting (curvature error is then
# far below a pixel), but never into more than MAX_DENSIFIED_VERTICES vertices per feature.
DENSIFY_PIXELS = 4.0
MAX_DENSIFIED_VERTICES = 200_000


@dataclass
class AOIFeature:
    """One AOI feature, still in the AOI's own CRS."""

    id: str                         # the 'id' attribute if present, else the 0-based feature index
    geometry: shapely.Geometry      # in `crs`
    crs: pyproj.CRS
    properties: dict[str, Any] = field(default_factory=dict)   # every input attribute (JSON-friendly values)


@dataclass(frozen=True)
class ChipSettings:
    """How a region becomes a chip: one value per model (see mgimm_core.model_dir), shared by
    `regions` (the preview) and `describe`, so both read exactly the same window.

    input_size: the model's input side in pixels; larger windows are read decimated to it.
    context: margin on each side, as a fraction of the region's larger extent.
    min_window: smallest window side in scene pixels (context for tiny regions).
    """

    input_size: int = 336
    context: float = 0.25
    min_window: int = 48

    def __post_init__(self) -> None:
        if self.input_size < 1 or self.min_window < 1 or not self.context >= 0:
            raise ValueError(f"chip settings need input_size >= 1, min_window >= 1, context >= 0 "
                             f"(got {self.input_size}, {self.min_window}, {self.context}).")


DEFAULT_CHIP = ChipSettings()


@dataclass
class RegionPlacement:
    """Where one region lies and what the model will be given for it; computed without pixel I/O."""

    id: str
    window: Window                      # scene pixels, square, with context; may pass scene edges
    out_shape: tuple[int, int]          # (h, w) read shape: window size, or input_size if larger
    mask: np.ndarray                    # bool (h, w) in out_shape pixels: centre inside polygon
    box: tuple[float, float, float, float]   # x1, y1, x2, y2: polygon bounds in out_shape pixels
    inside_share: float                 # share of the polygon's area inside the scene
    gsd_m: float                        # metres per chip pixel as read (after any decimation)
    geometry: shapely.Geometry          # in the scene CRS, clipped to the scene
    properties: dict[str, Any] = field(default_factory=dict)   # the AOI feature's attributes
    use_mask: bool = True               # False: the model gets the box only (a tile: the whole chip)

    @property
    def scale(self) -> float:
        """Scene pixels per chip pixel (1.0 unless the region was read at a lower resolution)."""
        scale: float = self.window.width / self.out_shape[1]    # rasterio's Window is untyped
        return scale


@dataclass
class RegionChip:
    """A placement with its pixels: exactly what the model sees for one region."""

    placement: RegionPlacement
    image: np.ndarray                   # uint8 (h, w, 3)
    valid: np.ndarray                   # bool (h, w): not nodata, inside the scene
    valid_fraction: float               # share of the polygon inside the scene and not nodata

    # The placement's fields, read through the chip (the pipeline and tests use either).
    id = property(lambda self: self.placement.id)
    window = property(lambda self: self.placement.window)
    out_shape = property(lambda self: self.placement.out_shape)
    mask = property(lambda self: self.placement.mask)
    box = property(lambda self: self.placement.box)
    gsd_m = property(lambda self: self.placement.gsd_m)
    geometry = property(lambda self: self.placement.geometry)
    scale = property(lambda self: self.placement.scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (what `mgimm-geo regions --json` prints per region)."""
        p = self.placement
        w = p.window
        return {"id": p.id,
                "window": {"col_off": int(w.col_off), "row_off": int(w.row_off),
                           "width": int(w.width), "height": int(w.height)},
                "out_shape": [int(v) for v in p.out_shape],
                "box": [round(float(v), 4) for v in p.box],
                "mask_pixels": int(p.mask.sum()),
                "valid_fraction": round(float(self.valid_fraction), 6),
                "gsd_m": None if math.isnan(p.gsd_m) else round(float(p.gsd_m), 6)}


# =============================================================================== reading AOIs
def read_aoi(source: str, *, layer: str | None = None, buffer: float | None = None,
             crs: Any = None) -> list[AOIFeature]:
    """Read an AOI source into features (polygons in the source's CRS).

    source, one of:
      - a vector file path GDAL/pyogrio can read: GeoJSON, GeoPackage, Shapefile, FlatGeobuf, ...
        Its CRS comes from the file; GeoJSON without one is EPSG:4326 (RFC 7946); any other file
        without one needs `crs`.
      - a WKT geometry string, e.g. 'POLYGON ((13.40 52.51, ...))': EPSG:4326 unless `crs`.
      - 'bbox:minx,miny,maxx,maxy': a rectangle, EPSG:4326 unless `crs`.
    layer: the layer of a multi-layer file (GeoPackage); required when there are several.
    buffer: grow every feature by this many metres (measured on the ground, in a local azimuthal
        equidistant projection around the feature), which also turns points and lines into
        polygons. Negative values shrink polygons.
    crs: the AOI's CRS (anything pyproj accepts, e.g. "EPSG:32633"); overrides the file's own.

    A polygon in a geographic CRS with an edge over 180 degrees of longitude is taken to cross the
    antimeridian and read the short way round (longitudes past 180), with a logged warning, before
    it is buffered or repaired. Invalid polygons are repaired (shapely.make_valid) with a logged
    warning. Points, lines and empty geometries are returned as they are; `prepare_region` refuses
    them per region, as it does coordinates that are not finite.

    Raises AOIError (missing, unreadable or empty source, layer problems, no CRS), CRSError (`crs`
    or the file's CRS unknown to PROJ).
    """
    text = os.fspath(source).strip() if not isinstance(source, str) else source.strip()
    user_crs = None if crs is None else _parse_crs(crs, "the AOI CRS (crs= / --aoi-crs)")
    if text.lower().startswith("bbox:"):
        features = [_bbox_feature(text, user_crs)]
    elif _WKT_RE.match(text) and not os.path.exists(text):
        features = [_wkt_feature(text, user_crs)]
    else:
        features = _read_vector_file(text, layer, user_crs)
    for f in features:
        if f.crs.is_geographic and _finite(f.geometry) and not f.geometry.is_empty:
            _check_degrees(f, text, given=user_crs is not None)
            f.geometry = _short_way_round(f.geometry, f)     # before buffering and repair, which need it
    if buffer is not None:
        if not math.isfinite(float(buffer)):
            raise AOIError(f"buffer={buffer!r} is not a finite number of metres.")
        for f in features:
            try:
                f.geometry = buffer_metres(f.geometry, f.crs, float(buffer))
            except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError) as exc:
                raise AOIError(f"feature {f.id!r} of {_short(text)}: cannot be buffered by {buffer} m ({exc}); "
                               f"check that its coordinates are in its CRS ({f.crs.name}).") from exc
    for f in features:
        if not _finite(f.geometry):
            continue        # refused per region (place_region), never repaired into something else
        f.geometry = _repair(f.geometry, f"feature {f.id!r} of {_short(text)}")
    check_unique_ids(features, _short(text))
    return features


def check_unique_ids(features: list[AOIFeature], source: str) -> None:
    """AOIError naming the first id used by more than one feature: rows, and what --resume skips,
    are keyed by (scene, region id), so two features with one id would overwrite or skip each other."""
    seen: dict[str, list[int]] = {}
    for index, feature in enumerate(features):
        seen.setdefault(feature.id, []).append(index)
    for fid, indexes in seen.items():
        if len(indexes) > 1:
            where = ", ".join(map(str, indexes[:5])) + (f" and {len(indexes) - 5} more" if len(indexes) > 5 else "")
            raise AOIError(f"AOI {source}: {len(indexes)} features share the id {fid!r} (features {where}); output "
                           f"rows and --resume are keyed by it, so regions would be lost. Give every feature a "
                           f"unique 'id' value, or rename the 'id' field (features are then numbered 0, 1, 2, ...).")


def _finite(geom: shapely.Geometry | None) -> bool:
    return geom is None or bool(np.isfinite(shapely.get_coordinates(geom)).all())


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _parse_crs(value: Any, what: str) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError as exc:
        raise CRSError(f"{what}: {value!r} is not a CRS PROJ knows ({exc}). Give it as "
                       f"EPSG:xxxx, a PROJ string or WKT.") from exc


def _bbox_feature(text: str, crs: pyproj.CRS | None) -> AOIFeature:
    parts = text.split(":", 1)[1].replace(" ", ",").split(",")
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts if p)
    except ValueError:
        raise AOIError(f"{text!r}: a bbox needs four numbers, 'bbox:minx,miny,maxx,maxy' "
                       f"(EPSG:4326 lon/lat unless a CRS is given).") from None
    if not (minx < maxx and miny < maxy) or not all(map(math.isfinite, (minx, miny, maxx, maxy))):
        raise AOIError(f"{text!r}: need minx < maxx and miny < maxy, as "
                       f"'bbox:minx,miny,maxx,maxy'.")
    crs = crs or pyproj.CRS.from_user_input(DEFAULT_AOI_CRS)
    return AOIFeature("0", shapely.box(minx, miny, maxx, maxy), crs, {})


def _wkt_feature(text: str, crs: pyproj.CRS | None) -> AOIFeature:
    wkt = text
    srid = re.match(r"^\s*SRID=(\d+);", text, re.IGNORECASE)
    if srid:
        wkt = text[srid.end():]
        crs = crs or _parse_crs(f"EPSG:{srid.group(1)}", f"the SRID of {_short(text)!r}")
    try:
        geom = shapely.from_wkt(wkt)
    except shapely.errors.GEOSException as exc:
        raise AOIError(f"{_short(text)!r}: not valid WKT ({exc}). Give e.g. "
                       f"'POLYGON ((x1 y1, x2 y2, x3 y3, x1 y1))'.") from exc
    crs = crs or pyproj.CRS.from_user_input(DEFAULT_AOI_CRS)
    return AOIFeature("0", geom, crs, {})


_DRIVER_ADVICE = re.compile(r"[.;]?\s*It might help to specify the correct driver.*$", re.DOTALL)


def _without_driver_advice(exc: BaseException) -> str:
    """GDAL's message without its advice to prefix the path with a driver ("'CSV:path'"): the
    message it ends up in gives this interface's own."""
    return _DRIVER_ADVICE.sub("", str(exc)).rstrip(".; ")


def _read_vector_file(path: str, layer: str | None, user_crs: pyproj.CRS | None
                      ) -> list[AOIFeature]:
    import pyogrio
    import pyogrio.raw
    from pyogrio.errors import DataLayerError, DataSourceError

    if not path.startswith("/vsi") and not os.path.exists(path):
        raise AOIError(f"AOI {path!r}: no such file, and not WKT or a bbox. Give {_AOI_FORMS}.")
    if os.path.isdir(path) and not path.lower().endswith((".gdb", ".shp")):
        # a directory of shapefiles is legal for GDAL, but usually a mistake
        log.info("AOI %s is a directory; reading it as a GDAL vector dataset.", path)
    try:
        listed = [(str(name), kind) for name, kind in pyogrio.list_layers(path)]
    except (DataSourceError, DataLayerError, OSError, UnicodeDecodeError) as exc:
        raise AOIError(f"AOI {path}: cannot be read as a vector file ({_without_driver_advice(exc)}). "
                       f"Give {_AOI_FORMS}; check that the file is complete.") from exc
    layers = [name for name, _ in listed]
    if not layers:
        raise AOIError(f"AOI {path}: has no layers. Give a file with a polygon layer.")
    # tables without geometry (an mgimm-geo output's runs and layer_styles) are never the default
    spatial = [name for name, kind in listed if kind is not None] or layers
    if layer is None and len(spatial) > 1:
        raise AOIError(f"AOI {path}: has {len(spatial)} layers with geometry ({', '.join(spatial)}); choose "
                       f"one with layer= / --layer NAME.")
    if layer is not None and layer not in layers:
        raise AOIError(f"AOI {path}: has no layer {layer!r}; its layers are: "
                       f"{', '.join(layers)}. Choose one of them with --layer.")
    layer = layer if layer is not None else spatial[0]
    try:
        info = pyogrio.read_info(path, layer=layer)
        meta, _, wkbs, field_data = pyogrio.raw.read(path, layer=layer, force_2d=True)
    except (DataSourceError, DataLayerError, OSError, RuntimeError, UnicodeDecodeError) as exc:
        raise AOIError(f"AOI {path} (layer {layer!r}): cannot be read ({exc}). Check that the "
                       f"file is complete; re-export it if needed.") from exc
    rows = int(info.get("features") or 0)
    if wkbs is None and rows > 0:
        fix = ("Give it a column named WKT holding polygons ('POLYGON ((...))')" if info.get("driver") == "CSV"
               else "Choose the layer that holds the polygons (--layer), or give a polygon file")
        raise AOIError(f"AOI {path} (layer {layer!r}): has {rows} row(s) but no geometry, so there is "
                       f"nothing to place on the scene. {fix}.")
    if wkbs is None or len(wkbs) == 0:
        raise AOIError(f"AOI {path} (layer {layer!r}): has no features. Draw or select at least "
                       f"one polygon.")

    crs = user_crs
    file_crs = None
    if meta.get("crs"):
        file_crs = _parse_crs(meta["crs"], f"AOI {path} (layer {layer!r}) declares a CRS that")
    if crs is None:
        crs = file_crs
    elif file_crs is not None and not file_crs.equals(user_crs, ignore_axis_order=True):
        if info.get("driver") == "GeoJSON":
            # GDAL gives every GeoJSON file EPSG:4326, named or not: a CRS given for one is how a legacy
            # file in other coordinates is read (README "AOIs"), not a mistake to warn of
            log.info("AOI %s: read in the given CRS %s (GeoJSON's default is %s).", path, crs.to_string(),
                     file_crs.to_string())
        else:
            log.warning("AOI %s: the given CRS %s overrides the file's own %s.", path, crs.to_string(),
                        file_crs.to_string())
    if crs is None:
        if info.get("driver") == "GeoJSON":
            crs = pyproj.CRS.from_user_input(DEFAULT_AOI_CRS)   # RFC 7946
        else:
            raise AOIError(f"AOI {path} (layer {layer!r}): has no CRS, so its coordinates cannot "
                           f"be placed on the scene. Give its CRS with crs= / --aoi-crs "
                           f"(e.g. --aoi-crs EPSG:32633), or save it with one.")

    names = [str(n) for n in meta["fields"]]
    id_column = next((i for i, n in enumerate(names) if n == "id"), None)
    features = []
    for index, wkb in enumerate(wkbs):
        props = {name: _plain(values[index]) for name, values in zip(names, field_data)}
        fid = str(props["id"]) if id_column is not None and props["id"] is not None else str(index)
        try:
            with np.errstate(invalid="ignore"):        # NaN coordinates are refused per region later
                geom = shapely.from_wkb(wkb) if wkb is not None else shapely.from_wkt("POLYGON EMPTY")
        except shapely.errors.GEOSException as exc:
            raise AOIError(f"AOI {path} (layer {layer!r}): feature {index} (id {fid!r}) has a geometry GEOS "
                           f"cannot build ({exc}); fix it (e.g. close its rings) or remove it.") from None
        features.append(AOIFeature(fid, geom, crs, props))
    return features


def _plain(value: object) -> str | int | float | bool | None:
    """A numpy scalar / datetime as a plain JSON-friendly Python value."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if not isinstance(value, (str, int, float, bool)):
        return str(value)
    return value


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a geometry (collections lose their points and lines)."""
    if geom.geom_type in _POLYGONAL or geom.is_empty:
        return geom
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in shapely.get_parts(geom) if g.geom_type in _POLYGONAL and not g.is_empty]
        parts = [p for g in polys for p in shapely.get_parts(g)]
        return shapely.MultiPolygon(parts) if parts else shapely.from_wkt("POLYGON EMPTY")
    return geom


def _repair(geom: shapely.Geometry, what: str) -> shapely.Geometry:
    """Make a geometry valid (warning when that changed it); polygonal input stays polygons."""
    if geom.is_empty or geom.is_valid:
        return _polygonal_part(geom)
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom)
    if geom.geom_type in _POLYGONAL or geom.geom_type == "GeometryCollection":
        fixed = _polygonal_part(fixed)
    log.warning("%s: invalid geometry (%s) repaired with make_valid; check that it is the area "
                "you meant.", what, reason)
    return fixed


# =============================================================================== reprojection
class _UntransformableError(CRSError):
    """Some coordinates of one geometry fall outside what the transformation can handle."""


@lru_cache(maxsize=32)
def _transformer(src: pyproj.CRS, dst: pyproj.CRS) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def reproject_geometry(geom: shapely.Geometry, src: Any, dst: Any, *, max_segment: float | None = None
                       ) -> shapely.Geometry:
    """Reproject a geometry (x/y order: lon/lat, easting/northing) with pyproj, always_xy.

    max_segment (source CRS units): edges are first split into pieces at most this long, so
    edges that are straight in `src` follow their curved path in `dst`.
    Raises CRSError when a CRS is unknown or a coordinate cannot be transformed.
    """
    src_crs = src if isinstance(src, pyproj.CRS) else _parse_crs(src, "source CRS")
    dst_crs = dst if isinstance(dst, pyproj.CRS) else _parse_crs(dst, "target CRS")
    if geom.is_empty or src_crs.equals(dst_crs):
        return geom
    if max_segment is not None and max_segment > 0:
        geom = shapely.segmentize(geom, max_segment)
    try:
        transformer = _transformer(src_crs, dst_crs)
    except pyproj.exceptions.ProjError as exc:
        raise CRSError(f"no transformation from {src_crs.name} to {dst_crs.name} ({exc}). "
                       f"Check both CRSs.") from exc
    out = shapely.transform(geom, lambda x, y: transformer.transform(x, y), interleaved=False)
    if not np.all(np.isfinite(shapely.get_coordinates(out))):
        raise _UntransformableError(
            f"some coordinates cannot be transformed from {src_crs.name} to {dst_crs.name} "
            f"(outside its area of use?). Check the AOI's CRS.")
    return out


def buffer_metres(geom: shapely.Geometry, crs: pyproj.CRS, metres: float) -> shapely.Geometry:
    """Buffer by a ground distance in metres, in a local azimuthal equidistant projection.

    Right in any CRS (geographic, Web Mercator with its scale error, feet), since distances from
    the projection centre (the geometry's centre) are true.
    """
    if geom.is_empty or metres == 0:
        return geom
    centre = shapely.box(*geom.bounds).centroid
    lon, lat = _transformer(crs, crs.geodetic_crs).transform(centre.x, centre.y)
    local = pyproj.CRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +ellps=WGS84 +units=m")
    flat = reproject_geometry(geom, crs, local)
    span = max(flat.bounds[2] - flat.bounds[0], flat.bounds[3] - flat.bounds[1], abs(metres))
    grown = flat.buffer(metres)
    return reproject_geometry(grown, local, crs, max_segment=span / 64)


# =============================================================================== regions
def _scene_proj_crs(scene: Scene) -> pyproj.CRS | None:
    if scene.crs is None:
        return None
    try:
        return pyproj.CRS.from_user_input(scene.crs.to_wkt())
    except pyproj.exceptions.CRSError as exc:
        raise CRSError(f"{scene.path}: its CRS is not one PROJ knows ({exc}). Assign a known "
                       f"CRS (gdal_edit.py -a_srs EPSG:xxxx {scene.path}).") from exc


def _fail(feature: AOIFeature, message: str, kind: type[RegionError] = RegionError) -> RegionError:
    err = kind(f"region {feature.id!r}: {message}")
    err.feature_id = feature.id
    return err


def _check_area_geometry(feature: AOIFeature) -> None:
    geom = feature.geometry
    if geom is None or geom.is_empty:
        raise _fail(feature, "empty geometry. Remove the feature or draw a polygon.", RegionGeometryError)
    if not _finite(geom):
        raise _fail(feature, "has coordinates that are not finite numbers (NaN or infinity). Fix or remove "
                             "the feature's vertices.", RegionGeometryError)
    if geom.geom_type not in _POLYGONAL:
        raise _fail(feature, f"a {geom.geom_type}, but regions must be polygons. Give a buffer "
                             f"in metres (read_aoi(buffer=...) / --buffer METRES) to turn "
                             f"points and lines into polygons.", RegionGeometryError)


def aoi_to_scene_pixels(scene: Scene, feature: AOIFeature) -> shapely.Geometry:
    """The feature's polygon in scene pixel coordinates (x = column, y = row, edges at integers).

    Edges are densified to about DENSIFY_PIXELS scene pixels before reprojection. Raises CRSError
    when the scene has no CRS and the AOI is geographic, or a CRS is unusable.
    """
    scene_crs = _scene_proj_crs(scene)
    geom = feature.geometry
    if scene_crs is None:
        if feature.crs.is_geographic:
            raise NoCRSError(f"{scene.path}: the raster has no CRS, so an AOI in "
                           f"{feature.crs.name} (geographic) cannot be placed on it. Assign the "
                           f"raster a CRS (gdal_edit.py -a_srs EPSG:xxxx {scene.path}) or give "
                           f"the AOI in the raster's own coordinates.")
        log.warning("%s: the raster has no CRS; region %r is taken to be in the raster's own "
                    "coordinates (its CRS %s is ignored).", scene.path, feature.id,
                    feature.crs.name)
    else:
        try:
            plain = reproject_geometry(geom, feature.crs, scene_crs)  # vertices only: for the scale
            max_segment = _densify_length(geom, plain, scene)
            geom = reproject_geometry(geom, feature.crs, scene_crs, max_segment=max_segment)
        except _UntransformableError:
            raise
        except CRSError as exc:
            raise CRSError(f"{scene.path}: AOI features in {feature.crs.name} cannot be placed on "
                           f"this raster's CRS ({scene_crs.name}): {exc} Assign the raster a CRS "
                           f"PROJ can transform (gdal_edit.py -a_srs EPSG:xxxx {scene.path}) or "
                           f"give the AOI in the raster's own CRS.") from exc
    if scene_crs is not None and scene_crs.is_geographic:
        geom = _wrap_to_scene(geom, scene)
    inv = ~scene.transform
    return affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])


def _check_degrees(feature: AOIFeature, source: str, *, given: bool) -> None:
    """Coordinates of a geographic CRS must be degrees: a "latitude" past 180 or a "longitude" past
    540 (360 beyond the antimeridian) is no typo but a file in metres read as lon/lat, which would
    otherwise fail region by region as outside the scene. The AOI is refused as a whole, before any
    output. (A latitude of 95 is left to fail its own region.)"""
    minx, miny, maxx, maxy = feature.geometry.bounds
    if max(abs(miny), abs(maxy)) <= 180 and max(abs(minx), abs(maxx)) <= 540:
        return
    default = not given and feature.crs.equals(pyproj.CRS.from_user_input(DEFAULT_AOI_CRS))
    why = (f"{'the given CRS' if given else 'its CRS'}, {feature.crs.to_string()}, is in degrees"
           + (" (a GeoJSON file, WKT or bbox that names no CRS is read as EPSG:4326)" if default else ""))
    raise AOICoordinatesError(f"AOI {_short(source)}: feature {feature.id!r} spans ({minx:.10g}, {miny:.10g}) to "
                   f"({maxx:.10g}, {maxy:.10g}), which is not longitude/latitude, but {why}. Give the CRS "
                   f"they are in with --aoi-crs (crs= in Python), e.g. the raster's own CRS that `mgimm-geo "
                   f"info` shows, or save the file with its CRS.", (minx, miny, maxx, maxy))


def _short_way_round(geom: shapely.Geometry, feature: AOIFeature) -> shapely.Geometry:
    """A lon/lat polygon part with an edge over 180 degrees of longitude long crosses the antimeridian
    (drawn the long way round it would span most of the globe): its negative longitudes are moved
    by +360, so it is read the short way, with a warning. Other parts are left as they are."""
    parts = list(shapely.get_parts(geom)) if geom.geom_type == "MultiPolygon" else [geom]
    if any(p.geom_type != "Polygon" for p in parts):
        return geom
    out, jumped = [], 0.0
    for part in parts:
        rings = [part.exterior, *part.interiors]
        jump = max(float(np.abs(np.diff(np.asarray(r.coords)[:, 0])).max(initial=0)) for r in rings)
        if jump > 180:
            jumped = max(jumped, jump)
            part = shapely.transform(part, lambda xy: np.where(xy[:, :1] < 0, xy + [360.0, 0.0], xy))
        out.append(part)
    if not jumped:
        return geom
    log.warning("region %r: an edge spans %.1f degrees of longitude, so the polygon is taken to cross the "
                "antimeridian and is read the short way round (longitudes past 180). Split it at 180 "
                "degrees (RFC 7946, section 3.1.9) to say so explicitly.", feature.id, jumped)
    return out[0] if geom.geom_type == "Polygon" else shapely.MultiPolygon(out)


def _wrap_to_scene(geom: shapely.Geometry, scene: Scene) -> shapely.Geometry:
    """On a scene in a geographic CRS, the geometry's longitudes moved by multiples of 360 into the
    360 degrees centred on the scene, so parts given at -180..-175 land on a scene spanning 175..185.
    Each point of the region is kept once (its area, and so its inside share, are unchanged)."""
    west, _, east, _ = scene.bounds
    centre = (west + east) / 2
    minx, miny, maxx, maxy = geom.bounds
    if centre - 180 <= minx and maxx <= centre + 180:
        return geom
    band = shapely.box(centre - 180, miny - 1, centre + 180, maxy + 1)
    pieces = [affinity.translate(geom, 360.0 * k).intersection(band) for k in range(-2, 3)]
    pieces = [_polygonal_part(p) for p in pieces if not p.is_empty]
    return shapely.union_all(pieces) if pieces else geom


def _densify_length(src_geom: shapely.Geometry, scene_geom: shapely.Geometry, scene: Scene) -> float | None:
    """Source-CRS length of about DENSIFY_PIXELS scene pixels (from the bounding boxes' ratio)."""
    sx0, sy0, sx1, sy1 = src_geom.bounds
    tx0, ty0, tx1, ty1 = scene_geom.bounds
    src_diag = math.hypot(sx1 - sx0, sy1 - sy0)
    px, py = abs(scene.transform.a) or 1.0, abs(scene.transform.e) or 1.0
    pix_diag = math.hypot((tx1 - tx0) / px, (ty1 - ty0) / py)
    if src_diag == 0 or pix_diag == 0:
        return None
    length = DENSIFY_PIXELS * src_diag / pix_diag
    per_vertex: float = src_geom.length / MAX_DENSIFIED_VERTICES     # shapely's length is untyped
    return max(length, per_vertex)


def chip_window(bounds: tuple[float, float, float, float], *, scene_width: int, scene_height: int,
                model_input: int, context: float, min_window: int
                ) -> tuple[Window, tuple[int, int]]:
    """A square, integer window (scene pixels) around a region's pixel bounds, and its read shape.

    The side is the region's larger extent plus `context` of it on each side, at least
    `min_window`; the window holds the whole region, and is shifted to stay inside the scene
    when the scene is big enough (more real context instead of empty border). The read shape is
    the window's size, or (model_input, model_input) when the window is larger.
    """
    minx, miny, maxx, maxy = bounds
    extent = max(maxx - minx, maxy - miny)
    side = max(math.ceil(extent * (1 + 2 * context) - 1e-9), int(min_window),
               math.ceil(maxx) - math.floor(minx), math.ceil(maxy) - math.floor(miny), 1)

    def offset(lo: float, hi: float, size: int) -> int:
        off = math.floor((lo + hi) / 2 - side / 2)
        off = min(off, math.floor(lo))
        off = max(off, math.ceil(hi) - side)
        if side <= size:                     # room to keep the window inside the scene
            off = min(max(off, 0), size - side)
        return off

    window = Window(offset(minx, maxx, scene_width), offset(miny, maxy, scene_height), side, side)
    read = side if side <= model_input else int(model_input)
    return window, (read, read)


def place_region(scene: Scene, feature: AOIFeature, chip: ChipSettings = DEFAULT_CHIP) -> RegionPlacement:
    """Place one AOI feature on a scene: window, read shape, mask, box, GSD. Reads no pixel.

    Larger windows than `chip.input_size` are read decimated to it; the mask and box are then in
    that reduced grid.

    Raises a RegionError subclass (RegionGeometryError, RegionTooSmallError, RegionOutsideError)
    for this region, CRSError when the scene/AOI CRSs cannot be combined at all.
    """
    _check_area_geometry(feature)
    try:
        pixels = aoi_to_scene_pixels(scene, feature)
    except _UntransformableError as exc:
        raise _fail(feature, str(exc), RegionOutsideError) from exc
    pixels = _repair(pixels, f"region {feature.id!r} after reprojection")
    if pixels.is_empty or pixels.area == 0:
        raise _fail(feature, "has no area after reprojection onto the scene.", RegionTooSmallError)
    inside = _polygonal_part(pixels.intersection(shapely.box(0, 0, scene.width, scene.height)))
    if inside.is_empty or inside.area == 0:
        t = scene.transform
        scene_b = ", ".join(f"{v:.10g}" for v in scene.bounds)
        region_b = ", ".join(f"{v:.10g}" for v in affinity.affine_transform(
            pixels, [t.a, t.b, t.d, t.e, t.c, t.f]).bounds)
        raise _fail(feature, f"lies outside the scene {scene.path} (scene bounds {scene_b}; "
                             f"region bounds {region_b}, in the scene CRS). Check the AOI's CRS "
                             f"or choose the scene that covers it.", RegionOutsideError)

    window, out_shape = chip_window(inside.bounds, scene_width=scene.width,
                                    scene_height=scene.height, model_input=chip.input_size,
                                    context=chip.context, min_window=chip.min_window)
    scale = window.width / out_shape[1]       # scene pixels per chip pixel
    chip_to_scene_pixels = Affine(scale, 0, window.col_off, 0, scale, window.row_off)
    mask = geometry_mask([inside], out_shape=out_shape, transform=chip_to_scene_pixels,
                         all_touched=False, invert=True)
    if not mask.any():
        log.warning("region %r covers no pixel centre (its area is %.2g of the %.3g m pixels it is read at), so "
                    "it is described from every pixel it touches and their surroundings: the description and "
                    "attributes are of those pixels, not of anything smaller inside them.", feature.id,
                    inside.area / scale ** 2, _gsd_m(scene, inside.centroid.y, inside.centroid.x) * scale)
        mask = geometry_mask([inside], out_shape=out_shape, transform=chip_to_scene_pixels,
                             all_touched=True, invert=True)
    if not mask.any():
        # GDAL's all_touched misses some slivers along the raster's edge (found by
        # tests/core/test_regions_properties.py): take the pixel holding a point of the polygon.
        point = inside.point_on_surface()
        row = min(max(int((point.y - window.row_off) // scale), 0), out_shape[0] - 1)
        col = min(max(int((point.x - window.col_off) // scale), 0), out_shape[1] - 1)
        mask[row, col] = True
    minx, miny, maxx, maxy = inside.bounds
    box = ((minx - window.col_off) / scale, (miny - window.row_off) / scale,
           (maxx - window.col_off) / scale, (maxy - window.row_off) / scale)
    centre = inside.centroid
    gsd = _gsd_m(scene, centre.y, centre.x) * scale
    t = scene.transform
    geometry = affinity.affine_transform(inside, [t.a, t.b, t.d, t.e, t.c, t.f])
    return RegionPlacement(feature.id, window, out_shape, mask, box, inside.area / pixels.area, gsd,
                           geometry, dict(feature.properties))


def read_region(scene: Scene, placement: RegionPlacement) -> RegionChip:
    """The placement's pixels as the model sees them, in one read, with the valid fraction."""
    image, valid = scene.read(placement.window, placement.out_shape)
    mask = placement.mask
    valid_fraction = placement.inside_share * float((mask & valid).sum()) / float(mask.sum())
    return RegionChip(placement, image, valid, min(1.0, valid_fraction))


def prepare_region(scene: Scene, feature: AOIFeature, chip: ChipSettings = DEFAULT_CHIP) -> RegionChip:
    """`place_region` then `read_region`: what `mgimm-geo regions` previews and `describe` reads."""
    return read_region(scene, place_region(scene, feature, chip))


def _gsd_m(scene: Scene, row: float, col: float) -> float:
    """Scene GSD in metres at a pixel; NaN when the scene has no CRS (no metric scale known)."""
    if scene.crs is None:
        return float("nan")
    return float(scene.gsd_m(row=row, col=col))


def prepare_regions(scene: Scene, features: Iterable[AOIFeature],
                    chip: ChipSettings = DEFAULT_CHIP) -> list[RegionChip | RegionError]:
    """`prepare_region` for every feature; a RegionError is kept in place of its chip so the
    other regions go on. Errors about the whole input (CRSError, SceneError) still raise."""
    out: list[RegionChip | RegionError] = []
    for feature in features:
        try:
            out.append(prepare_region(scene, feature, chip))
        except RegionError as err:
            if err.feature_id is None:
                err.feature_id = feature.id
            log.debug("%s", err)       # the caller reports it (it is in the returned list)
            out.append(err)
    return out
