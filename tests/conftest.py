"""Shared fixtures: GeoTIFFs generated at test time with real rasterio/GDAL I/O; `slow` tests skipped locally.

Tests marked `slow` run with `--run-slow` or when the environment variable CI is set (.ci/run sets it);
otherwise they are skipped with a reason that says so.

`make_raster(...)` writes a small raster into the test's tmp_path and returns its path. Every
property the geo core cares about is a keyword: CRS, transform, dtype, band count, nodata, tiled or
striped layout, overviews, colour interpretation, an internal mask band, an alpha band.

Default pixel values are known functions of position so tests can check exactly which pixels were
read: band b (1-based) at (row, col) holds ``(row * 7 + col * 3 + 50 * (b - 1)) % 251`` for uint8 and
``row * 100 + col + 1000 * b`` for wider types (see `default_pixels`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp, Resampling
from affine import Affine

DATA_DIR = Path(__file__).parent / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (always run when the environment variable CI is set)")


def run_slow(config) -> bool:
    """Whether `slow` tests run: asked for with --run-slow, or in CI (CI set and not false/0)."""
    return config.getoption("--run-slow") or os.environ.get("CI", "").lower() not in ("", "0", "false")


def pytest_collection_modifyitems(config, items):
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (or CI=true)")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def default_pixels(count: int, height: int, width: int, dtype: str) -> np.ndarray:
    """The (count, height, width) values `make_raster` writes when no data is given."""
    rows, cols = np.mgrid[0:height, 0:width]
    bands = np.arange(1, count + 1)[:, None, None]
    if np.dtype(dtype) == np.uint8:
        return ((rows * 7 + cols * 3 + 50 * (bands - 1)) % 251).astype(dtype)
    return (rows * 100 + cols + 1000 * bands).astype(dtype)


def _colorinterp(value) -> list[ColorInterp]:
    names = value.split(",") if isinstance(value, str) else list(value)
    return [n if isinstance(n, ColorInterp) else ColorInterp[n.strip()] for n in names]


@pytest.fixture
def make_raster(tmp_path):
    """Factory: write a GeoTIFF (or other GDAL format) and return its path as str.

    Keywords (all optional):
      name: file name inside tmp_path ("scene.tif").
      width, height, count, dtype: size in pixels, bands, numpy dtype name.
      crs: anything rasterio accepts, or None for no CRS ("EPSG:32633").
      transform: an Affine; default north-up with `res` CRS units per pixel from `origin` (x, y).
      data: (count, height, width) array; default `default_pixels`.
      nodata: the file's nodata value (None: none).
      tiled, blocksize: 2-D blocks of blocksize x blocksize, or strips when tiled=False (rows per
        strip = `rows_per_strip`, default 1 row like GDAL's default for small uncompressed files).
      compress: GDAL compression name ("deflate").
      overviews: decimation factors to build, e.g. [2, 4].
      colorinterp: e.g. "red,green,blue" or a list of ColorInterp; default GDAL's own choice
        (note: GDAL marks 3- and 4-band uint8 GeoTIFFs RGB / RGBA, the 4th band being alpha).
      mask: bool (height, width), True = valid; written as an internal per-dataset mask band.
      alpha: bool (height, width), True = valid; appended as an extra alpha band (255 valid, 0 not).
      colormap: {index: (r, g, b, a)} colour table for band 1 (makes it a palette band).
      bigtiff: write a BigTIFF.
      driver: GDAL driver ("GTiff").
    """

    def factory(name: str = "scene.tif", *, width: int = 64, height: int = 48, count: int = 3,
                dtype: str = "uint8", crs="EPSG:32633", transform=None, res: float = 10.0,
                origin: tuple[float, float] = (500000.0, 4_500_000.0), data=None, nodata=None,
                tiled: bool = False, blocksize: int = 16, rows_per_strip: int | None = None,
                compress: str | None = None, overviews=None, colorinterp=None, mask=None,
                alpha=None, colormap=None, bigtiff: bool = False, driver: str = "GTiff") -> str:
        path = tmp_path / name
        if data is None:
            data = default_pixels(count, height, width, dtype)
        data = np.asarray(data, dtype=dtype)
        assert data.shape == (count, height, width), data.shape
        if transform is None:
            transform = Affine(res, 0.0, origin[0], 0.0, -res, origin[1])
        band_count = count + (1 if alpha is not None else 0)
        profile = dict(driver=driver, width=width, height=height, count=band_count, dtype=dtype,
                       crs=crs, transform=transform, nodata=nodata)
        if driver == "GTiff":
            if tiled:
                profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
            else:
                profile.update(tiled=False, blockysize=rows_per_strip or 1)
            if compress:
                profile["compress"] = compress
            if bigtiff:
                profile["BIGTIFF"] = "YES"
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data, indexes=list(range(1, count + 1)))
                if alpha is not None:
                    dst.write(np.where(np.asarray(alpha, bool), 255, 0).astype(dtype), band_count)
                interp = _colorinterp(colorinterp) if colorinterp is not None else None
                if alpha is not None:
                    interp = (interp or list(dst.colorinterp)[:count]) + [ColorInterp.alpha]
                if interp is not None:
                    dst.colorinterp = interp
                if colormap is not None:
                    dst.write_colormap(1, colormap)
                if mask is not None:
                    dst.write_mask(np.where(np.asarray(mask, bool), 255, 0).astype("uint8"))
                if overviews:
                    dst.build_overviews(list(overviews), Resampling.nearest)
        return str(path)

    return factory


@pytest.fixture
def landsat_path() -> str:
    """The real Landsat 7 ETM+ sample (6 uint8 bands, no colour interpretation, EPSG:31985)."""
    return str(DATA_DIR / "L7_ETMs.tif")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random MGIMM saved with its processor: real weights for CLI/worker/engine tests."""
    from mgimm_core.model.testing_mgimm import tiny_model, tiny_processor

    directory = tmp_path_factory.mktemp("tiny_model")
    model = tiny_model()
    model.save_pretrained(str(directory))
    tiny_processor(model.config).save_pretrained(str(directory))
    return str(directory)
