"""Server mode sends each region's chip, cut in QGIS, never the raster: a real 1 GB GeoTIFF and 50
regions through a real `mgimm-geo serve` (its default 64 MB request limit, no --root, so it reads
none of our files), each region's answer compared with a real `mgimm-geo worker` reading the whole
file (the same tiny model: the same description for the same region), and Processing in server mode
(selected features only, no temporary AOI file).

Set MGIMM_CHIP_REPORT to a file path to get the measured figures as JSON.
"""

import glob
import json
import os
import tempfile
import time

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from qgis.core import (QgsApplication, QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingContext,
                       QgsProcessingFeatureSourceDefinition, QgsProcessingFeedback, QgsProject, QgsRasterLayer,
                       QgsRectangle, QgsVectorLayer)

from plugin_fixtures import wait_until
from test_outputs_look import assert_cli_look, gdal_warnings

SIDE = 18600        # pixels: 18600 x 18600 x 3 bands uint8, uncompressed = 1.04 GB
RES = 0.5
ORIGIN = (500000.0, 4200000.0)


@pytest.fixture(scope="session")
def big_raster(tmp_path_factory) -> str:
    """A real 1 GB GeoTIFF (uncompressed, tiled, no overviews), written row-block by row-block
    with a pattern that differs across the scene (so every region's chip differs)."""
    path = str(tmp_path_factory.mktemp("big") / "big_1gb.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, SIDE, SIDE, 3, gdal.GDT_Byte,
                                                   ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512"])
    dataset.SetGeoTransform((ORIGIN[0], RES, 0.0, ORIGIN[1], 0.0, -RES))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset.SetProjection(srs.ExportToWkt())
    columns = np.arange(SIDE, dtype=np.uint32)
    for b in range(1, 4):
        band = dataset.GetRasterBand(b)
        band.SetColorInterpretation([gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand][b - 1])
        row = (columns * (b * 7) // 97 % 256).astype(np.uint8)
        for y in range(0, SIDE, 512):
            h = min(512, SIDE - y)
            block = np.broadcast_to(row, (h, SIDE)) ^ np.uint8((y // 512 * 13 * b) % 256)
            band.WriteArray(np.ascontiguousarray(block), 0, y)
    dataset = None
    assert os.path.getsize(path) > 1_000_000_000
    return path


def fifty_regions():
    """50 regions in the raster's CRS: small to 9000 px across, polygons and rectangles, some over
    the raster's edges, two outside it."""
    rng = np.random.default_rng(13)
    extent = SIDE * RES
    regions = []
    for i in range(50):
        if i < 30:
            size = float(rng.uniform(3, 1500)) * RES
        elif i < 38:
            size = float(rng.uniform(2500, 9000)) * RES
        else:
            size = float(rng.uniform(20, 800)) * RES
        if i < 38:
            x = ORIGIN[0] + rng.uniform(0.05, 0.95) * extent - size / 2
            y = ORIGIN[1] - rng.uniform(0.05, 0.95) * extent - size / 2
        elif i < 48:   # over an edge or a corner
            x = ORIGIN[0] + [-0.3, 0.8, 0.2, -0.4, 0.7][i % 5] * size + [0, extent - size, 0, 0, extent - size][i % 5]
            y = ORIGIN[1] - [0.5, 0.3, 0.2, 0.6, 1.2][i % 5] * size
        else:          # outside
            x, y = ORIGIN[0] + extent + 1000 * (i - 47), ORIGIN[1]
        if i % 3 == 0:
            regions.append(QgsGeometry.fromRect(QgsRectangle(x, y - size / 2, x + size, y + size / 3)))
        else:
            points = [QgsPointXY(x, y), QgsPointXY(x + size, y + 0.2 * size), QgsPointXY(x + 0.4 * size, y + size)]
            regions.append(QgsGeometry.fromPolygonXY([points + [points[0]]]))
    return regions


def test_1gb_raster_and_50_regions_go_as_chips_and_match_the_worker(
        module_plugin, plugin_module, server, big_raster, worker_command, tiny_model_dir, tmp_path, qgis_new_project):
    from mgimm_geo.client import WorkerClient, worker_argv
    from mgimm_geo.request_data import describe_params
    from mgimm_geo.settings import PluginSettings

    plugin = module_plugin
    layer = QgsRasterLayer(big_raster, "big", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    plugin.dock.raster_combo.setLayer(layer)
    url, token = server
    PluginSettings(mode="server", server_url=url, token=token, layer_path=str(tmp_path / "d.gpkg"),
                   max_new_tokens=6).save()
    regions = fifty_regions()

    started = time.perf_counter()
    task = plugin.describe(regions, layer.crs())
    assert task is not None
    wait_until(lambda: not plugin.tasks, 900, "the 50-region server request")
    server_seconds = time.perf_counter() - started
    assert plugin.last_error is None, plugin.last_error
    served = plugin.last_result
    assert len(served["regions"]) == 50 and not served["cancelled"]
    assert served["largest_request_bytes"] < 16 * 2**20      # the raster is 1 GB; the server limit 64 MB
    by_id = {e["id"]: e for e in served["regions"]}
    assert [by_id[str(i)]["error_code"] for i in (49, 50)] == ["region_outside"] * 2
    assert all(by_id[str(i)]["error"] is None for i in range(1, 49)), [e["error"] for e in served["regions"]]
    assert sum(1 for e in served["regions"] if e["description"]) > 10   # a random tiny model: some say nothing
    descriptions = QgsProject.instance().mapLayersByName("MGIMM descriptions")[0]
    assert descriptions.featureCount() == 50

    # The same regions, the same model, through a worker reading the whole file.
    params = describe_params(layer, regions, layer.crs(), max_new_tokens=6)
    params["thumbnail"] = False
    worker = WorkerClient(worker_argv(worker_command, tiny_model_dir, "cpu"), heartbeat_timeout=120)
    try:
        started = time.perf_counter()
        local = {e["id"]: e for e in worker.request("describe", params)["regions"]}
        worker_seconds = time.perf_counter() - started
    finally:
        worker.close()
    report = {"raster_bytes": os.path.getsize(big_raster), "regions": 50, "server_seconds": round(server_seconds, 1),
              "worker_seconds": round(worker_seconds, 1), "largest_request_bytes": served["largest_request_bytes"],
              "exact_chips": 0, "approximate_chips": 0, "same_description": 0, "differing": []}
    for rid, entry in by_id.items():
        other = local[rid]
        assert entry["error_code"] == other["error_code"], (rid, entry["error"], other["error"])
        if entry["error_code"]:
            continue
        chip = entry["chip"]
        same = (entry["description"] == other["description"] and entry["attributes"] == other["attributes"])
        report["same_description"] += same
        report["exact_chips" if chip["exact"] else "approximate_chips"] += 1
        assert entry["gsd_m"] == pytest.approx(other["gsd_m"], rel=1e-6)
        assert entry["scene"] == other["scene"] == os.path.realpath(big_raster)
        if chip["exact"]:
            assert same, (rid, chip, entry["description"], other["description"])
            assert entry["valid_fraction"] == pytest.approx(other["valid_fraction"], abs=1e-9)
        else:
            assert entry["valid_fraction"] == pytest.approx(other["valid_fraction"], abs=0.02)
            if not same:
                report["differing"].append({"id": rid, "window": chip["window"], "server": entry["description"],
                                            "worker": other["description"]})
    if os.environ.get("MGIMM_CHIP_REPORT"):
        with open(os.environ["MGIMM_CHIP_REPORT"], "w") as handle:
            json.dump(report, handle, indent=1)
    # the tiny model (input 32 < minimum window 48) sends windows up to 2048 px at full resolution
    # (exact) and larger ones decimated to 2048 px (approximate: decimated twice)
    assert report["exact_chips"] >= 30 and report["exact_chips"] + report["approximate_chips"] == 48


def test_processing_in_server_mode_sends_chips_of_the_selected_features(
        module_plugin, plugin_module, server, qgis_processing, qgis_new_project, scene_layer, tmp_path):
    import processing
    from mgimm_geo.settings import PluginSettings
    from processing.gui.Postprocessing import handleAlgorithmResults

    url, token = server
    PluginSettings(mode="server", server_url=url, token=token, layer_path=str(tmp_path / "d.gpkg"),
                   max_new_tokens=6).save()
    aoi = QgsVectorLayer("Polygon?crs=EPSG:32633&field=name:string&field=description:string", "aoi", "memory")
    features = []
    for i, x in enumerate((500100, 500300, 500500)):
        feature = QgsFeature(aoi.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, 4099700, x + 100, 4099900)))
        feature.setAttributes([f"block {i}", f"their note {i}"])
        features.append(feature)
    aoi.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(aoi)
    aoi.selectByIds([f.id() for f in aoi.getFeatures()][:2])
    temp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "mgimm_*")))

    out = str(tmp_path / "regions.gpkg")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    result = processing.run("mgimm:describe_regions", {
        "INPUT": scene_layer, "AOI": QgsProcessingFeatureSourceDefinition(aoi.id(), selectedFeaturesOnly=True),
        "MODE": 0, "OUTPUT": out}, context=context, feedback=feedback)
    assert gdal_warnings(out) == []
    handleAlgorithmResults(QgsApplication.processingRegistry().algorithmById("mgimm:describe_regions"), context,
                           feedback)                      # what the Processing dialog does when it finishes
    assert_cli_look(QgsProject.instance().mapLayersByName("MGIMM regions")[0], plugin_module)
    assert result["OUTPUT"] == out
    summary = json.loads(result["SUMMARY"])
    assert summary["described"] == 2 and summary["failed"] == 0
    dataset = ogr.Open(out)
    regions = dataset.GetLayerByName("regions")
    rows = sorted((regions.GetNextFeature() for _ in range(regions.GetFeatureCount())), key=lambda r: r.GetField("name"))
    assert [r.GetField("name") for r in rows] == ["block 0", "block 1"]
    assert [r.GetField("in_description") for r in rows] == ["their note 0", "their note 1"]  # the CLI's rule
    assert all(r.GetField("description") and r.GetField("model") == "tiny" for r in rows)
    dataset = None
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "mgimm_*"))) == temp_before   # nothing left behind
