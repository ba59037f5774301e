"""Through a real `mgimm-geo worker` / `mgimm-geo serve` running the tiny random model in the
project's Python: a drawn polygon becomes a feature, Processing algorithms write GeoPackages,
cancel stops a request, errors land in the message bar with the fix."""

import json

import pytest
from osgeo import ogr
from qgis.core import (Qgis, QgsApplication, QgsFeature, QgsGeometry, QgsProcessingContext, QgsProcessingFeedback,
                       QgsProject, QgsRectangle, QgsVectorLayer)

from plugin_fixtures import WORKER_TIMEOUT, messages, wait_until
from test_map_tool_and_requests import draw_polygon, show_layer_on_canvas, utm_points
from test_outputs_look import assert_cli_look, gdal_warnings

@pytest.fixture
def plugin(module_plugin, iface, qgis_new_project):  # iface: clears the message bar
    module_plugin.last_result = module_plugin.last_error = None
    return module_plugin


def draw_over(plugin, canvas, layer, fractions):
    to_canvas = show_layer_on_canvas(canvas, layer)
    plugin.dock.raster_combo.setLayer(layer)
    plugin.actions[0].trigger()  # "Describe a drawn polygon"
    tool = canvas.mapTool()
    assert tool is plugin.tools["polygon"]
    draw_polygon(tool, canvas, [to_canvas.transform(p) for p in utm_points(layer, fractions)])


def test_drawn_polygon_becomes_a_described_feature(plugin, worker_settings, qgis_canvas, scene_layer, iface):
    draw_over(plugin, qgis_canvas, scene_layer, [(0.2, 0.2), (0.7, 0.3), (0.5, 0.8)])
    assert len(plugin.tasks) == 1
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the describe task")

    assert plugin.last_error is None, plugin.last_error
    entry = plugin.last_result["regions"][0]
    assert entry["error"] is None and entry["description"]
    layers = QgsProject.instance().mapLayersByName("MGIMM descriptions")
    assert len(layers) == 1
    feature = next(layers[0].getFeatures())
    assert feature["description"] == entry["description"] and feature["scene"] == scene_layer.source()
    assert feature["model"] == "tiny" and feature["region_id"] == entry["id"]
    assert feature.geometry().within(QgsGeometry.fromRect(scene_layer.extent()).buffer(1, 4))
    assert plugin.dock.description.toPlainText() == entry["description"]
    assert plugin.dock.thumbnail.pixmap() is not None and not plugin.dock.thumbnail.pixmap().isNull()
    assert messages(iface, Qgis.Warning) == [] and messages(iface, Qgis.Critical) == []


def test_selected_features_are_described_with_their_attributes(plugin, worker_settings, scene_layer, iface):
    polygons = QgsVectorLayer("Polygon?crs=EPSG:32633&field=name:string", "fields", "memory")
    features = []
    for i, (x, y) in enumerate([(500100, 4099700), (500300, 4099800)]):
        feature = QgsFeature(polygons.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y, x + 100, y + 100)))
        feature.setAttribute("name", f"field {i}")
        features.append(feature)
    polygons.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(polygons)
    polygons.selectAll()
    plugin.dock.raster_combo.setLayer(scene_layer)
    iface.setActiveLayer(polygons)
    plugin.describe_selected()
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the describe task")
    assert plugin.last_error is None, plugin.last_error
    first = int(plugin.last_result["regions"][0]["id"])
    assert [e["id"] for e in plugin.last_result["regions"]] == [str(first), str(first + 1)]   # numbered on
    layer = QgsProject.instance().mapLayersByName("MGIMM descriptions")[0]
    assert layer.featureCount() == 2


def test_cancel_stops_a_running_request(plugin_module, worker_settings, scene_layer):
    from mgimm_geo.settings import shared_client
    from mgimm_geo.task import RequestTask
    from qgis.core import QgsApplication

    client = shared_client()
    client.hello()  # the model is loaded: the request below starts at once
    regions = [{"id": str(i), "wkt": QgsGeometry.fromRect(QgsRectangle(500010 + 5 * i, 4099600, 500100 + 5 * i,
                                                                       4099700)).asWkt()} for i in range(60)]
    params = {"raster": scene_layer.source(), "regions": regions, "crs": "EPSG:32633", "batch_size": 1,
              "max_new_tokens": 40, "thumbnail": False}
    done = []
    task = RequestTask("cancel me", client, "describe", params, on_done=done.append)
    task.progressChanged.connect(lambda value: task.cancel() if value > 0 else None)
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: done, WORKER_TIMEOUT, "the cancelled task")
    assert task.error is not None and task.error.code == "cancelled", task.error
    assert client.running and client.hello()["model"] == "tiny"  # the worker survives a cancel


def test_cancel_keeps_the_regions_that_finished(plugin, worker_settings, scene_layer, iface):
    """An 80-region request goes to the worker in chunks of 16; cancelled as soon as the first chunk
    is in, the regions that finished are listed and written, and the panel says so. (Progress reaches
    the main thread queued, while the task goes on: with 5 chunks the cancel lands well before the
    end even when chunks of the tiny model take a fraction of a second.)"""
    from mgimm_geo.plugin import WORKER_CHUNK
    from mgimm_geo.settings import shared_client

    shared_client().hello()  # the model is loaded: the chunks below start at once
    count = 80
    regions = [QgsGeometry.fromRect(QgsRectangle(500010 + 2 * i, 4099600, 500100 + 2 * i, 4099700))
               for i in range(count)]
    plugin.dock.raster_combo.setLayer(scene_layer)
    task = plugin.describe(regions, scene_layer.crs())
    task.progressChanged.connect(lambda value: task.cancel() if value >= 100 * WORKER_CHUNK / count else None)
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the cancelled task")
    result = plugin.last_result
    assert result["cancelled"] and WORKER_CHUNK <= len(result["regions"]) < count, plugin.last_error
    assert plugin.dock.results.count() == len(result["regions"])
    assert plugin.dock.status.text().startswith("Cancelled:") and "kept" in plugin.dock.status.text()
    layer = QgsProject.instance().mapLayersByName("MGIMM descriptions")[0]
    assert layer.featureCount() == len(result["regions"])


def test_processing_algorithms_write_geopackages(plugin, plugin_module, worker_settings, qgis_processing, scene_layer,
                                                 tmp_path):
    import processing
    from processing.gui.Postprocessing import handleAlgorithmResults

    aoi = QgsVectorLayer("Polygon?crs=EPSG:32633&field=name:string", "aoi", "memory")  # not a file: saved first
    feature = QgsFeature(aoi.fields())
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(500100, 4099700, 500300, 4099900)))
    feature.setAttribute("name", "block")
    aoi.dataProvider().addFeatures([feature])

    out = str(tmp_path / "regions.gpkg")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    result = processing.run("mgimm:describe_regions", {"INPUT": scene_layer, "AOI": aoi, "MODE": 0,
                                                       "OUTPUT": out}, context=context, feedback=feedback)
    assert result["OUTPUT"] == out
    assert gdal_warnings(out) == []                       # the CLI's GeoPackage version suits QGIS 3.22's GDAL
    handleAlgorithmResults(QgsApplication.processingRegistry().algorithmById("mgimm:describe_regions"), context,
                           feedback)                      # what the Processing dialog does when it finishes
    assert_cli_look(QgsProject.instance().mapLayersByName("MGIMM regions")[0], plugin_module)
    dataset = ogr.Open(out)  # keep the dataset alive while its layer is used
    regions = dataset.GetLayerByName("regions")
    assert regions.GetFeatureCount() == 1
    row = regions.GetNextFeature()
    assert row.GetField("description") and row.GetField("name") == "block"

    tiles_out = str(tmp_path / "tiles.gpkg")
    processing.run("mgimm:describe_tiles", {"INPUT": scene_layer.source(), "TILE_SIZE": 32, "MODE": 0,
                                            "OUTPUT": tiles_out})
    dataset = ogr.Open(tiles_out)
    assert dataset.GetLayerByName("tiles").GetFeatureCount() == 4  # 64 x 48 pixels in 32-pixel tiles: 2 x 2
    dataset = None
    assert json.loads(processing.run("mgimm:describe_tiles", {
        "INPUT": scene_layer, "TILE_SIZE": 32, "MODE": 1, "OUTPUT": tiles_out})["SUMMARY"])


def test_missing_worker_is_reported_with_the_fix(plugin, plugin_module, qgis_canvas, scene_layer, iface, tmp_path):
    from mgimm_geo.settings import PluginSettings

    PluginSettings(worker_command="/nonexistent/bin/mgimm-geo worker",
                   layer_path=str(tmp_path / "d.gpkg")).save()
    draw_over(plugin, qgis_canvas, scene_layer, [(0.2, 0.2), (0.7, 0.3), (0.5, 0.8)])
    wait_until(lambda: not plugin.tasks, 30, "the failing task")
    warnings = messages(iface, Qgis.Warning)
    assert len(warnings) == 1
    assert warnings[0].startswith("MGIMM worker not available:") and "worker command" in warnings[0]
    assert "Traceback" not in warnings[0]


def test_region_outside_the_raster_is_reported_before_any_request(plugin, qgis_canvas, scene_layer, iface):
    show_layer_on_canvas(qgis_canvas, scene_layer)
    plugin.dock.raster_combo.setLayer(scene_layer)
    plugin.describe([QgsGeometry.fromRect(QgsRectangle(0, 0, 10, 10))], qgis_canvas.mapSettings().destinationCrs())
    assert not plugin.tasks
    assert messages(iface, Qgis.Warning)[0].startswith("Region outside the raster:")


# ------------------------------------------------------------------------------ server (plugin_fixtures.server)
def test_server_mode_describes_a_drawn_polygon(plugin, plugin_module, server, qgis_canvas, scene_layer, tmp_path):
    from mgimm_geo.settings import PluginSettings, shared_client

    url, token = server
    settings = PluginSettings(mode="server", server_url=url, token=token, layer_path=str(tmp_path / "d.gpkg"),
                              max_new_tokens=6)
    settings.save()
    assert shared_client().hello()["model"] == "tiny"
    draw_over(plugin, qgis_canvas, scene_layer, [(0.2, 0.2), (0.7, 0.3), (0.5, 0.8)])
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the describe task")
    assert plugin.last_error is None, plugin.last_error
    assert plugin.last_result["regions"][0]["description"]
    assert QgsProject.instance().mapLayersByName("MGIMM descriptions")[0].featureCount() == 1


def test_server_rejects_a_bad_token(plugin, plugin_module, server, qgis_canvas, scene_layer, iface, tmp_path):
    from mgimm_geo.client import ClientError
    from mgimm_geo.settings import PluginSettings, shared_client

    url, _ = server
    PluginSettings(mode="server", server_url=url, token="wrong", layer_path=str(tmp_path / "d.gpkg")).save()
    with pytest.raises(ClientError) as refused:
        shared_client().hello()
    assert refused.value.code == "unauthorized"
    draw_over(plugin, qgis_canvas, scene_layer, [(0.2, 0.2), (0.7, 0.3), (0.5, 0.8)])
    wait_until(lambda: not plugin.tasks, 30, "the refused task")
    assert plugin.last_error.code == "unauthorized"
    assert messages(iface, Qgis.Warning)[0].startswith("MGIMM server refused the token:")
