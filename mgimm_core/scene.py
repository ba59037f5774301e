"""Open a raster and read windows of it exactly as the model will see them.

A `Scene` fixes, once per raster, the three choices that must not change from tile to tile:

- which bands become red, green and blue (explicit, else the colour interpretation, else the only
  three bands; one band is shown as grey, or in its colours if it has a colour table; anything
  else needs an explicit choice);
- how values become uint8 (uint8 as is unless percentiles are given; other types through one
  scene-wide per-band percentile stretch estimated from overviews or a decimated read of at most
  ~1M pixels, or a user range);
- what is invalid (user nodata > file nodata > alpha band > mask band; NaN always; outside the
  scene).

Windows are in scene pixels (rows, columns) and may extend past the scene edges. Nothing here reads
a whole scene at full resolution.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsInt

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from mgimm_core.errors import BandError, CRSError, GeotransformError, SceneError

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

#: Most pixels (per band) the stretch estimate reads; the scene is decimated to fit.
STRETCH_SAMPLE_PIXELS = 1_000_000
# The stretch of data that is not uint8 when no percentiles are given (Scene.open).
DEFAULT_PERCENTILES = (2.0, 98.0)
# Share of a stretch sample at 0 in every band, with no nodata declared, that is warned of as fill.
UNMARKED_FILL_SHARE = 0.05

#: Ceiling (bytes) for GDAL's block cache, set once per process by `Scene.open` unless the user
#: configured GDAL_CACHEMAX (environment or rasterio.Env). GDAL's default, 5% of RAM, would let
#: memory grow with scene size while tiles are iterated, though block-aligned tiles read each
#: block once; 64 MiB holds a full row of 512-pixel RGB blocks of a 40,000-pixel-wide scene.
BLOCK_CACHE_BYTES = 64 * 2**20
_block_cache_capped = False


def _cap_block_cache() -> None:
    global _block_cache_capped
    if _block_cache_capped:
        return
    _block_cache_capped = True
    user_set = os.environ.get("GDAL_CACHEMAX") or (
        rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv())
    if user_set:
        return
    from rasterio.env import get_gdal_config, set_gdal_config

    try:
        current = int(get_gdal_config("GDAL_CACHEMAX"))
    except (TypeError, ValueError):
        current = None
    if current is None or current > BLOCK_CACHE_BYTES:
        set_gdal_config("GDAL_CACHEMAX", BLOCK_CACHE_BYTES)


@dataclass(frozen=True)
class Stretch:
    """A linear map from source values to 0..255, one (low, high) pair per chosen band.

    `low` maps to 0 and `high` to 255 (source units, clipped outside). The same Stretch is applied
    to every window of a scene so colours stay comparable across tiles.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    source: str = "identity"   # how it was chosen: identity (uint8), value_range, percentiles ...

    def is_identity(self) -> bool:
        return all(lo == 0 and hi == 255 for lo, hi in zip(self.low, self.high))

    def apply(self, data: np.ndarray) -> np.ndarray:
        """(bands, h, w) of any dtype -> uint8 (bands, h, w); NaN becomes 0."""
        if data.dtype == np.uint8 and self.is_identity():
            return data
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = np.asarray(self.high, dtype=np.float32)[:, None, None] - low
        span[span == 0] = 1.0
        scaled = (data.astype(np.float32) - low) * (255.0 / span)
        np.nan_to_num(scaled, copy=False, nan=0.0)
        np.clip(scaled, 0, 255, out=scaled)
        return np.rint(scaled).astype(np.uint8)


def _is_local_path(path: str) -> bool:
    return not (path.startswith("/vsi") or "://" in path)


def _gdal_reason(exc: BaseException) -> str:
    """The most specific message GDAL gave (rasterio chains it as the cause)."""
    messages: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(messages) < 4:
        messages.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return messages[-1] if messages else ""


class Scene:
    """An opened raster with the band choice, stretch and nodata policy the model will see.

    Use `Scene.open(path, ...)`, as a context manager or followed by `close()`.
    """

    def __init__(self, dataset: DatasetReader, path: str, band_indexes: tuple[int, ...], nodata: float | None,
                 mask_kind: str, percentiles: tuple[float, float] | None,
                 value_range: tuple[float, float] | None) -> None:
        self._ds = dataset
        self.path = path
        self.band_indexes = band_indexes
        self.nodata = nodata
        self.mask_kind = mask_kind          # "nodata", "alpha", "mask" or "none"
        self.percentiles = percentiles
        self.value_range = value_range
        self.crs = dataset.crs
        self.transform = dataset.transform
        self.width = dataset.width
        self.height = dataset.height
        self.count = dataset.count
        self.driver = dataset.driver
        self.dtype = dataset.dtypes[band_indexes[0] - 1]
        self.block_shape = tuple(dataset.block_shapes[band_indexes[0] - 1])
        self.overviews = list(dataset.overviews(band_indexes[0]))
        self.bounds = dataset.bounds
        self._stretch: Stretch | None = None
        self.palette = _palette_lut(dataset, band_indexes)   # (256, 3) uint8 or None

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, bands: tuple[int, ...] | None = None, nodata: float | None = None,
             percentiles: tuple[float, float] | None = None,
             value_range: tuple[float, float] | None = None, driver: str | None = None) -> "Scene":
        """Open any GDAL raster (GeoTIFF, COG, BigTIFF, VRT, ...) for reading.

        bands: 1-based indexes, three (red, green, blue) or one (grey); default from the file.
        nodata: source value to treat as invalid, overriding the file's nodata.
        percentiles: (low, high) in 0..100 for a scene-wide per-band stretch. Default: DEFAULT_PERCENTILES
            for data that is not uint8, uint8 as it is; given, it stretches uint8 too (a dark scene).
        value_range: (low, high) source values mapped to 0 and 255 for every band (overrides
            percentiles, applies to uint8 too).
        driver: the only GDAL driver allowed to open the file (e.g. "GTiff"); default: GDAL picks
            one from the file's content (the server pins it, mgimm_core/service/handlers.py).

        Raises SceneError (missing, not a raster, corrupt), BandError (bad or ambiguous bands),
        GeotransformError (rotated or GCP-only georeferencing).
        """
        path = os.fspath(path)
        if percentiles is not None and not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(f"percentiles {percentiles}: need 0 <= low < high <= 100 "
                             f"(e.g. (2, 98)).")
        if value_range is not None and not value_range[0] < value_range[1]:
            raise ValueError(f"value_range {value_range}: need low < high (e.g. (0, 3000)).")
        _cap_block_cache()
        if _is_local_path(path) and not os.path.exists(path):
            raise SceneError(f"{path}: no such file. Check the path (relative paths are taken from "
                             f"the current directory: {os.getcwd()}).")
        if _is_local_path(path) and os.path.isdir(path):
            raise SceneError(f"{path}: is a directory, not a raster. Give the path of a raster "
                             f"file (GeoTIFF, VRT, ...).")
        try:
            dataset = rasterio.open(path, driver=driver)
        except RasterioIOError as exc:
            reason = _gdal_reason(exc)
            if driver is not None:
                raise SceneError(f"{path}: not a {driver} file ({reason}); only {driver} rasters are "
                                 f"accepted here. Convert it: gdal_translate -of {driver} {path} "
                                 f"converted.tif") from exc
            if "not recognized as" in reason or "not recognised as" in reason:
                raise SceneError(f"{path}: not a raster GDAL can read ({reason}). Give a GeoTIFF, "
                                 f"COG, VRT or another GDAL raster.") from exc
            raise SceneError(f"{path}: cannot be opened as a raster ({reason}). The file may be "
                             f"corrupt or truncated; re-download or re-export it.") from exc
        try:
            _check_georeferencing(dataset, path)
            band_indexes = _choose_bands(dataset, path, bands)
            nodata, mask_kind = _nodata_policy(dataset, band_indexes, nodata)
            scene = cls(dataset, path, band_indexes, nodata, mask_kind,
                        None if percentiles is None else (float(percentiles[0]), float(percentiles[1])),
                        None if value_range is None else (float(value_range[0]), float(value_range[1])))
            scene._probe()
        except BaseException:
            dataset.close()
            raise
        return scene

    def _probe(self) -> None:
        """Read the last block of the first chosen band, so a truncated file fails at open."""
        rows, cols = self.block_shape
        row_off = (self.height - 1) // rows * rows
        col_off = (self.width - 1) // cols * cols
        window = Window(col_off, row_off, min(cols, self.width - col_off),
                        min(rows, self.height - row_off))
        self._read_source([self.band_indexes[0]], window, None)

    def close(self) -> None:
        self._ds.close()

    @property
    def files(self) -> list[str]:
        """Every file GDAL reads for this raster (the file, sidecars, a VRT's sources)."""
        return list(self._ds.files)

    @property
    def closed(self) -> bool:
        closed: bool = self._ds.closed
        return closed

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Scene({self.path!r}, {self.width}x{self.height}, bands={self.band_indexes}, "
                f"dtype={self.dtype})")

    # ----------------------------------------------------------------- geometry
    @property
    def tags(self) -> dict[str, str]:
        """The file's dataset-level metadata tags (GDAL's default domain)."""
        return dict(self._ds.tags())

    def bounds_lonlat(self) -> list[float] | None:
        """The scene's (west, south, east, north) in longitude/latitude, or None (no CRS)."""
        return _lonlat_bounds(self.crs, self.bounds)

    def pixel_size(self) -> tuple[float, float]:
        """CRS units per pixel along x and y, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    def gsd_m(self, row: float | None = None, col: float | None = None) -> float:
        """Ground sample distance in metres at a pixel (default the scene centre).

        Measured on the CRS's ellipsoid between the pixel's edges, so it is right for geographic
        CRSs and for projections whose scale varies (Web Mercator). Returns the geometric mean of
        the x and y sizes. Raises CRSError when the raster has no CRS.
        """
        from pyproj import CRS as ProjCRS, Transformer

        if self.crs is None:
            raise CRSError(f"{self.path}: has no CRS, so its pixel size in metres is unknown. "
                           f"Assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx).")
        row = self.height / 2 if row is None else row
        col = self.width / 2 if col is None else col
        try:
            crs = ProjCRS.from_user_input(self.crs.to_wkt())
            geodetic = crs.geodetic_crs
            if geodetic is None:      # engineering / local CRS: linear units, no ellipsoid
                factor = crs.axis_info[0].unit_conversion_factor
                return float(math.sqrt(self.pixel_size()[0] * self.pixel_size()[1]) * factor)
            to_geo = Transformer.from_crs(crs, geodetic, always_xy=True)
        except Exception as exc:  # pyproj raises several types for unusable definitions
            raise CRSError(f"{self.path}: its CRS cannot be used ({exc}). Assign a known one "
                           f"(e.g. gdal_edit.py -a_srs EPSG:xxxx).") from exc
        geod = geodetic.get_geod()
        if geod is None:
            raise CRSError(f"{self.path}: its CRS's geodetic datum has no ellipsoid, so ground distances cannot be "
                           f"measured. Assign a known CRS (e.g. gdal_edit.py -a_srs EPSG:xxxx).")
        t = self.transform

        def ground(c0: float, r0: float, c1: float, r1: float) -> float:
            x0, y0 = t @ (c0, r0)
            x1, y1 = t @ (c1, r1)
            (lon0, lon1), (lat0, lat1) = to_geo.transform([x0, x1], [y0, y1])
            distance: float = geod.inv(lon0, lat0, lon1, lat1)[2]
            return distance

        gx = ground(col - 0.5, row, col + 0.5, row)
        gy = ground(col, row - 0.5, col, row + 0.5)
        return float(math.sqrt(gx * gy))

    # ----------------------------------------------------------------- values
    @property
    def stretch(self) -> Stretch:
        """The scene-wide Stretch, computed on first use (see module docstring)."""
        if self._stretch is None:
            self._stretch = self._compute_stretch()
        return self._stretch

    def _compute_stretch(self) -> Stretch:
        n = len(self.band_indexes)
        if self.palette is not None:
            # a colour table maps each index to its colour: a stretch would change the indexes
            if self.value_range is not None or self.percentiles is not None:
                warnings.warn(f"{self.path}: band {self.band_indexes[0]} is shown through its colour table, so "
                              f"--percentiles / --value-range do not apply to it.", stacklevel=2)
            return Stretch((0.0,) * n, (255.0,) * n, "identity")
        if self.value_range is not None:
            return Stretch((self.value_range[0],) * n, (self.value_range[1],) * n, "value_range")
        if np.dtype(self.dtype) == np.uint8 and self.percentiles is None:
            return Stretch((0.0,) * n, (255.0,) * n, "identity")
        factor = max(1, math.ceil(math.sqrt(self.width * self.height / STRETCH_SAMPLE_PIXELS)))
        shape = (math.ceil(self.height / factor), math.ceil(self.width / factor))
        full = Window(0, 0, self.width, self.height)
        data, valid = self._read_source(self.band_indexes, full, shape)
        self._warn_of_unmarked_fill(data, valid)
        lows, highs = [], []
        p_low, p_high = self.percentiles or DEFAULT_PERCENTILES
        for band, values in zip(self.band_indexes, data):
            sample = values[valid]           # valid already excludes NaN
            if sample.size == 0:
                warnings.warn(f"{self.path}: band {band} has no valid pixels in the stretch "
                              f"sample; using 0..1. Give value_range (--value-range) to set it.", stacklevel=2)
                lows.append(0.0)
                highs.append(1.0)
                continue
            lo, hi = np.percentile(sample, [p_low, p_high])
            if hi <= lo:
                hi = lo + 1.0
            lows.append(float(lo))
            highs.append(float(hi))
        source = (f"percentiles {p_low:g}-{p_high:g} of {shape[0]}x{shape[1]} pixels "
                  f"({'overview' if factor > 1 and self.overviews else 'decimated read'}"
                  f"{'' if factor > 1 else ', full resolution'})")
        return Stretch(tuple(lows), tuple(highs), source)

    def _warn_of_unmarked_fill(self, data: np.ndarray, valid: np.ndarray) -> None:
        """Satellite products often fill the area outside their swath with 0 and declare no nodata:
        the 0s then pull the stretch's low end down and the real values crowd at white (a Landsat 8
        scene read this way was "clouds" everywhere). Warn when that many pixels are 0 in every band
        and nothing marks them."""
        if self.mask_kind != "none" or not valid.any():
            return
        share = float(((data == 0).all(axis=0) & valid).sum() / valid.sum())
        if share >= UNMARKED_FILL_SHARE:
            warnings.warn(f"{self.path}: {share:.0%} of its pixels are 0 in every band and the file declares no "
                          f"nodata, so the stretch counts them as data. If 0 is fill (outside a satellite "
                          f"swath), pass --nodata 0.", stacklevel=3)

    # ----------------------------------------------------------------- reading
    def _read_source(self, indexes: Sequence[int], window: Window,
                     out_shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Source values and validity of a window inside the scene.

        out_shape (h, w) lets GDAL read through overviews or decimate. Returns (data (b, h, w),
        valid bool (h, w)).
        """
        h, w = ((int(round(window.height)), int(round(window.width))) if out_shape is None
                else (int(out_shape[0]), int(out_shape[1])))
        try:
            data = self._ds.read(list(indexes), window=window,
                                 out=np.empty((len(indexes), h, w), dtype=self.dtype))
            if self.mask_kind in ("alpha", "mask"):
                valid = self._ds.read_masks(indexes[0], window=window, out_shape=(h, w)) > 0
            elif self.nodata is not None:
                if math.isnan(self.nodata):
                    valid = ~np.all(np.isnan(data), axis=0)
                else:
                    valid = ~np.all(data == np.asarray(self.nodata).astype(data.dtype), axis=0)
            else:
                valid = np.ones((h, w), dtype=bool)
        except RasterioIOError as exc:
            raise SceneError(f"{self.path}: reading pixels failed ({_gdal_reason(exc)}). The file "
                             f"may be corrupt or truncated; re-download or re-export it.") from exc
        if data.dtype.kind == "f":
            valid &= ~np.any(np.isnan(data), axis=0)
        return data, valid

    def read(self, window: Window, out_shape: tuple[int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of a window as the model sees them: (rgb uint8 (h, w, 3), valid bool (h, w)).

        The image is a writable (h, w, 3) view of a (3, h, w) array (channels-first underneath,
        as torch wants it); it is not C-contiguous.

        window: scene pixels; may extend past the scene edges (outside is 0 and invalid).
        out_shape: (h, w) to read the window at a coarser resolution, through overviews or a
            decimated read (never the full-resolution window resized afterwards). Default: the
            window's own size.
        """
        win_h, win_w = int(round(window.height)), int(round(window.width))
        out_h, out_w = (win_h, win_w) if out_shape is None else (int(out_shape[0]),
                                                                 int(out_shape[1]))
        n = len(self.band_indexes)
        overlaps = (window.col_off < self.width and window.row_off < self.height
                    and window.col_off + window.width > 0 and window.row_off + window.height > 0)
        inside = window.intersection(Window(0, 0, self.width, self.height)) if overlaps else None

        if inside is not None and (inside.col_off, inside.row_off, inside.width, inside.height) == (
                window.col_off, window.row_off, window.width, window.height):
            data, valid = self._read_source(self.band_indexes, window, (out_h, out_w))
            bands = self.stretch.apply(data)
        else:
            bands = np.zeros((n, out_h, out_w), dtype=np.uint8)
            valid = np.zeros((out_h, out_w), dtype=bool)
            if inside is not None:
                sy, sx = out_h / window.height, out_w / window.width
                r0 = int(round((inside.row_off - window.row_off) * sy))
                r1 = int(round((inside.row_off + inside.height - window.row_off) * sy))
                c0 = int(round((inside.col_off - window.col_off) * sx))
                c1 = int(round((inside.col_off + inside.width - window.col_off) * sx))
                if r1 > r0 and c1 > c0:
                    data, inner_valid = self._read_source(self.band_indexes, inside,
                                                          (r1 - r0, c1 - c0))
                    bands[:, r0:r1, c0:c1] = self.stretch.apply(data)
                    valid[r0:r1, c0:c1] = inner_valid
        # A view of the band-sequential buffer GDAL filled: transposing into a pixel-interleaved
        # copy would cost ~as much as decoding a deflate tile (np.ascontiguousarray if needed).
        if n == 3:
            image = np.moveaxis(bands, 0, -1)
        elif self.palette is not None:
            image = self.palette[bands[0]]
        else:
            image = np.repeat(bands[0][:, :, None], 3, axis=2)
        if self.mask_kind != "none" or inside is None or not valid.all():
            image[~valid] = 0
        return image, valid

    # ----------------------------------------------------------------- report
    def info(self) -> dict[str, Any]:
        """A JSON-serialisable summary: what `mgimm-geo info` prints."""
        crs = None
        if self.crs is not None:
            try:
                from pyproj import CRS as ProjCRS
                name = ProjCRS.from_user_input(self.crs.to_wkt()).name
            except Exception:
                name = None
            crs = {"name": name, "epsg": self.crs.to_epsg(), "wkt": self.crs.to_wkt()}
        try:
            gsd = self.gsd_m()
        except CRSError:
            gsd = None
        stretch = self.stretch
        t = self.transform
        return {
            "path": self.path,
            "driver": self.driver,
            "crs": crs,
            "size": {"width": self.width, "height": self.height},
            "count": self.count,
            "band_indexes": list(self.band_indexes),
            "colorinterp": [ci.name for ci in self._ds.colorinterp],
            "palette": self.palette is not None,
            "dtype": self.dtype,
            "nodata": self.nodata,
            "mask": self.mask_kind,
            "block_shape": list(self.block_shape),
            "overviews": self.overviews,
            "stretch": {"low": list(stretch.low), "high": list(stretch.high),
                        "source": stretch.source},
            "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "bounds": list(self.bounds),
            "bounds_lonlat": self.bounds_lonlat(),
            "pixel_size": list(self.pixel_size()),
            "gsd_m": gsd,
        }


def _lonlat_bounds(crs: Any, bounds: Sequence[float]) -> list[float] | None:
    """(west, south, east, north) in EPSG:4326 of `bounds` in `crs` (edges densified), for drawing an
    AOI in lon/lat; east past 180 where the scene crosses the antimeridian (as `bbox:` reads it);
    None without a CRS or where PROJ cannot transform them (a local engineering CRS)."""
    import pyproj

    if crs is None:
        return None
    try:
        to_lonlat = pyproj.Transformer.from_crs(pyproj.CRS.from_user_input(crs.to_wkt()), "EPSG:4326",
                                                always_xy=True)
        left, bottom, right, top = bounds
        west, south, east, north = to_lonlat.transform_bounds(left, bottom, right, top, densify_pts=21)
    except (pyproj.exceptions.CRSError, pyproj.exceptions.ProjError):
        return None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        return None
    return [round(west, 7), round(south, 7), round(east + 360 if east < west else east, 7), round(north, 7)]


# --------------------------------------------------------------------- policies
def _check_georeferencing(dataset: DatasetReader, path: str) -> None:
    t = dataset.transform
    if t.b != 0 or t.d != 0:
        raise GeotransformError(
            f"{path}: the geotransform has rotation/shear terms ({t.b:g}, {t.d:g}); windows and "
            f"regions would be wrong. Warp it north-up first: gdalwarp {path} north_up.tif")
    gcps, _ = dataset.gcps
    if gcps and t.is_identity:
        raise GeotransformError(
            f"{path}: georeferenced only by ground control points, which mgimm-geo does not "
            f"interpolate. Warp it first: gdalwarp {path} warped.tif")


def _data_band_indexes(dataset: DatasetReader) -> list[int]:
    return [i for i, ci in enumerate(dataset.colorinterp, start=1) if ci != ColorInterp.alpha]


def _choose_bands(dataset: DatasetReader, path: str, bands: Iterable[SupportsInt] | None) -> tuple[int, ...]:
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3):
            raise BandError(f"{path}: bands={bands} names {len(bands)} bands; give three "
                            f"(red, green, blue, e.g. -b 3,2,1) or one (grey, e.g. -b 1).")
        bad = [b for b in bands if not 1 <= b <= dataset.count]
        if bad:
            raise BandError(f"{path}: band {bad[0]} is out of range; the file has {dataset.count} "
                            f"band(s), numbered 1..{dataset.count}. Choose bands with -b/--bands "
                            f"(e.g. -b 3,2,1).")
        return bands
    interp = list(dataset.colorinterp)
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(ci in interp for ci in rgb):
        return tuple(interp.index(ci) + 1 for ci in rgb)
    data_bands = _data_band_indexes(dataset)
    if len(data_bands) in (1, 3):
        return tuple(data_bands)
    raise BandError(f"{path}: {len(data_bands)} bands and no red/green/blue colour "
                    f"interpretation, so which bands to show is ambiguous. Choose three bands to show "
                    f"as red, green, blue (e.g. 3,2,1; on the command line -b 3,2,1), or one band "
                    f"for grey (-b 1).")


def _palette_lut(dataset: DatasetReader, band_indexes: Sequence[int]) -> np.ndarray | None:
    """The colour table of a single chosen uint8 palette band as a (256, 3) lookup, else None."""
    if len(band_indexes) != 1:
        return None
    band = band_indexes[0]
    if (dataset.colorinterp[band - 1] != ColorInterp.palette
            or dataset.dtypes[band - 1] != "uint8"):
        return None
    try:
        colormap = dataset.colormap(band)
    except ValueError:
        return None
    lut = np.zeros((256, 3), dtype=np.uint8)
    for index, rgba in colormap.items():
        if 0 <= index < 256:
            lut[index] = rgba[:3]
    return lut


def _nodata_policy(dataset: DatasetReader, band_indexes: Sequence[int], nodata: float | None) -> tuple[float | None,
                   str]:
    """(effective nodata value or None, mask kind): user > file nodata > alpha > mask > none."""
    if nodata is not None:
        return float(nodata), "nodata"
    file_nodata = dataset.nodatavals[band_indexes[0] - 1]
    if file_nodata is not None:
        return float(file_nodata), "nodata"
    flags = dataset.mask_flag_enums[band_indexes[0] - 1]
    if MaskFlags.alpha in flags:
        return None, "alpha"
    if MaskFlags.per_dataset in flags:
        return None, "mask"
    return None, "none"


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def normalise_scene_path(path: str | os.PathLike[str]) -> str:
    """The name a scene is recorded and resumed under: a local path resolved (absolute, links and
    `..` followed), so `./rgb.tif` and `rgb.tif` are one scene; GDAL paths (/vsis3/...) as given."""
    text = os.fspath(path)
    return os.path.realpath(text) if _is_local_path(text) else text


def expand_scene_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files (and GDAL paths such as /vsis3/...) as given; a directory gives its rasters, sorted,
    not recursively. Raises SceneError for a directory without rasters."""
    out: list[str] = []
    for p in paths:
        path = Path(str(p))
        if path.is_dir():
            found = sorted(str(f) for f in path.iterdir() if f.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise SceneError(f"{p}: directory holds no rasters ({', '.join(RASTER_SUFFIXES)}); "
                                 "give raster files or a folder that has some")
            out.extend(found)
        else:
            out.append(str(p))
    return out
