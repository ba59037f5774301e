"""The QGIS plugin's chip placement (qgis_plugin/chips.py) is the core's (mgimm_core/regions.py).

In server mode the plugin cuts each region's chip itself and sends only that (it cannot import
mgimm_core, so it repeats the placement arithmetic). These tests keep the two one behaviour: for many
scenes, regions and chip settings the plugin's window and read shape equal `place_region`'s, and,
where the plugin says its chip is exact, the server placing the region on the chip (the core itself,
run on the chip as a GeoTIFF) reads the same pixels, mask, box, valid fraction and GSD as the core
reading the whole raster. The chip is written here with rasterio in place of QGIS's GDAL (the same
GDAL RasterIO call, `read(window, out_shape)`); tests/qgis/test_server_chips.py does it in QGIS.
The `chip_settings` request answers without loading the model.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.windows import Window

from mgimm_core.regions import AOIFeature, ChipSettings, place_region, read_region
from mgimm_core.scene import Scene

CHIPS_FILE = Path(__file__).resolve().parents[2] / "qgis_plugin" / "chips.py"
SETTINGS = [ChipSettings(32, 0.25, 48), ChipSettings(128, 0.25, 48), ChipSettings(336, 0.25, 48),
            ChipSettings(224, 0.5, 16), ChipSettings(64, 0.0, 8)]


def plugin_chips():
    spec = importlib.util.spec_from_file_location("plugin_chips", CHIPS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


chips = plugin_chips()


def plugin_bounds(polygon, gt, width, height):
    """What request_data.py chip_jobs computes in QGIS: the region in pixels (the inverse
    geotransform of chips.py), clipped to the raster, its bounds (here with shapely, there GEOS too)."""
    a, b, c, d, e, f = chips.inverse_geotransform(gt)
    pixels = shapely.transform(polygon, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                     d * xy[:, 0] + e * xy[:, 1] + f]))
    inside = pixels.intersection(shapely.box(0, 0, width, height))
    return None if inside.is_empty or inside.area == 0 else inside.bounds


def random_polygon(rng, x0, y0, size):
    """A star-shaped polygon (5-9 corners) around (x0, y0), `size` across."""
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.2, 0.5, n) * size
    polygon = shapely.Polygon(np.column_stack([x0 + radii * np.cos(angles), y0 + radii * np.sin(angles)]))
    return polygon if polygon.is_valid else polygon.convex_hull


def regions_for(rng, width, height, res, count):
    """Polygons and rectangles of 0.5 px to 1.5 scenes across, some over the edges, some on the grid."""
    out = []
    for i in range(count):
        size = float(np.exp(rng.uniform(np.log(0.5), np.log(1.5 * max(width, height))))) * res
        x = rng.uniform(-0.1, 1.1) * width * res
        y = -rng.uniform(-0.1, 1.1) * height * res
        if i % 4 == 0:   # a rectangle on pixel edges
            col, row, w = int(x / res), int(-y / res), max(1, int(size / res))
            out.append(shapely.box(col * res, -(row + w) * res, (col + w) * res, -row * res))
        else:
            out.append(random_polygon(rng, x, y, size))
    return out


def sparse_scene(width, height, res, crs="EPSG:32633"):
    memfile = MemoryFile()
    transform = Affine(res, 0, 0, 0, -res, 0)
    with memfile.open(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=crs,
                      transform=transform, tiled=True, blockxsize=256, blockysize=256, sparse_ok=True):
        pass
    return memfile, Scene.open(memfile.name)


@pytest.mark.parametrize("seed", range(6))
def test_plugin_window_is_the_core_window(seed):
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(20, 30000)), int(rng.integers(20, 30000))
    res = float(rng.choice([0.3, 0.5, 10.0, 0.07]))
    memfile, scene = sparse_scene(width, height, res)
    gt = scene.transform.to_gdal()
    crs = pyproj.CRS.from_user_input("EPSG:32633")
    compared = 0
    try:
        for settings in SETTINGS:
            for i, polygon in enumerate(regions_for(rng, width, height, res, 60)):
                bounds = plugin_bounds(polygon, gt, width, height)
                try:
                    core = place_region(scene, AOIFeature(str(i), polygon, crs), settings)
                except Exception as exc:       # outside or no area: the plugin finds nothing too
                    assert bounds is None or exc.code in ("region_too_small",), (polygon.wkt, exc)
                    continue
                assert bounds is not None, polygon.wkt
                plan = chips.chip_window(bounds, scene_width=width, scene_height=height,
                                         settings=chips.ChipSettings(*settings.__dict__.values()))
                w = core.window
                assert (plan.col_off, plan.row_off, plan.side, plan.side) == (w.col_off, w.row_off, w.width,
                                                                              w.height), polygon.wkt
                assert (plan.read, plan.read) == core.out_shape
                compared += 1
    finally:
        scene.close()
        memfile.close()
    assert compared > 150


def write_chip(scene_path, plan, path, nodata=None):
    """The plugin's chip (qgis_plugin/server_chips.py cut_chip) for a window on the raster: the same
    GDAL decimated read, the chip's geotransform from chips.py."""
    with rasterio.open(scene_path) as src:
        window = Window(plan.col_off, plan.row_off, plan.side, plan.side)
        data = src.read(window=window, out_shape=(src.count, plan.read, plan.read))
        gt = chips.chip_geotransform(src.transform.to_gdal(), plan)
        profile = dict(driver="GTiff", width=plan.read, height=plan.read, count=src.count, dtype=data.dtype,
                       crs=src.crs, transform=Affine.from_gdal(*gt), nodata=nodata)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.colorinterp = src.colorinterp


@pytest.mark.parametrize("seed", range(3))
def test_server_reads_the_core_pixels_from_an_exact_chip(seed, make_raster, tmp_path):
    """Window on the raster: the server's placement on the chip is the whole chip, and what the model
    gets (image, mask, box) and what the row says (valid fraction, GSD) are the core's."""
    rng = np.random.default_rng(100 + seed)
    width, height, res = int(rng.integers(300, 2500)), int(rng.integers(300, 2500)), 0.5
    data = rng.integers(0, 256, size=(3, height, width), dtype=np.uint8)
    path = make_raster(f"noise{seed}.tif", width=width, height=height, data=data, res=res, origin=(0.0, 0.0),
                       nodata=None)
    crs = pyproj.CRS.from_user_input("EPSG:32633")
    exact = approximate = 0
    with Scene.open(path) as scene:
        gt = scene.transform.to_gdal()
        for settings in SETTINGS:
            plugin_settings = chips.ChipSettings(settings.input_size, settings.context, settings.min_window)
            for i, polygon in enumerate(regions_for(rng, width, height, res, 12)):
                bounds = plugin_bounds(polygon, gt, width, height)
                if bounds is None:
                    continue
                plan, is_exact = chips.server_chip(bounds, scene_width=width, scene_height=height,
                                                   settings=plugin_settings)
                if not is_exact or not plan.inside_scene(width, height):
                    approximate += 1     # windows passing the edges: cut by the QGIS suite's GDAL code
                    continue
                try:
                    core = read_region(scene, place_region(scene, AOIFeature(str(i), polygon, crs), settings))
                except Exception as exc:
                    assert exc.code == "region_too_small"
                    continue
                chip_path = tmp_path / f"chip_{seed}_{i}.tif"
                write_chip(path, plan, chip_path)
                with Scene.open(str(chip_path)) as chip_scene:
                    served = read_region(chip_scene, place_region(chip_scene, AOIFeature(str(i), polygon, crs),
                                                                  settings))
                w = served.window
                assert (w.col_off, w.row_off, w.width) == (0, 0, plan.read)
                assert served.out_shape == core.out_shape
                assert np.array_equal(served.image, core.image), polygon.wkt
                assert np.array_equal(served.mask, core.mask), polygon.wkt
                assert served.box == pytest.approx(core.box, abs=1e-6)
                assert served.valid_fraction == pytest.approx(core.valid_fraction, abs=1e-9)
                assert served.gsd_m == pytest.approx(core.gsd_m, rel=1e-9)
                exact += 1
    assert exact > 20, (exact, approximate)


def test_decimated_chip_is_exact_for_usual_models():
    """A window larger than the model input with a minimum window no larger than it goes as the
    decimated chip itself (the smallest request); only min_window > input needs full resolution."""
    for input_size in (128, 224, 336):
        settings = chips.ChipSettings(input_size, 0.25, 48)
        for extent in (100.0, 333.3, 1000.0, 5000.0, 12345.6):
            bounds = (1000.0, 2000.0, 1000.0 + extent, 2000.0 + extent / 2)
            plan, exact = chips.server_chip(bounds, scene_width=40000, scene_height=40000, settings=settings)
            assert exact and plan.read == min(plan.side, input_size)
    plan, exact = chips.server_chip((10.0, 10.0, 30.0, 30.0), scene_width=400, scene_height=400,
                                    settings=chips.ChipSettings(32, 0.25, 48))
    assert exact and plan.read == plan.side == 48   # tiny model (input 32 < min_window 48): full resolution


def test_chip_settings_request_loads_no_model(tmp_path_factory):
    from mgimm_core.engines import LoadOptions
    from mgimm_core.model_dir import ModelDirectory
    from mgimm_core.service import Service

    from tests.service.test_service import save_tiny_model

    directory = save_tiny_model(tmp_path_factory)
    service = Service(directory, load=LoadOptions(device="cpu"))
    reply = service.handle("chip_settings")
    chip = ModelDirectory.resolve(directory).chip
    assert (reply["chip_size"], reply["chip_context"], reply["chip_min_window"]) == (chip.input_size, chip.context,
                                                                                     chip.min_window)
    assert reply["loaded"] is False and not service.loaded and reply["protocol"] == 1
