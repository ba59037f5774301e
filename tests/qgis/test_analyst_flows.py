"""What an analyst meets in QGIS (issue 23), in QGIS 3.22 headless with a real worker and server:
band choice for rasters without RGB colour interpretation, results kept above rasters, no
authentication database in worker mode, a panel cleared on error, unlabelled empty regions and
barely tinted fills, cancelled tile runs that load what they kept with percentages on the way,
messages with Details in QGIS's words, warnings in the Processing log, several chips per server
request."""

from __future__ import annotations

import json

import pytest
from osgeo import gdal, osr
from plugin_fixtures import WORKER_TIMEOUT, messages, wait_until
from qgis.core import (NULL, Qgis, QgsApplication, QgsExpression, QgsExpressionContext, QgsExpressionContextUtils,
                       QgsFeature, QgsGeometry, QgsProcessingContext, QgsProcessingFeedback, QgsProject,
                       QgsRasterLayer, QgsRectangle)
from qgis.PyQt.QtWidgets import QApplication, QMessageBox, QPushButton


def write_landsat(path, *, width=64, height=48, metadata=None, descriptions=None) -> str:
    """A 6-band uint16 stack, as Landsat 5 TM surface reflectance comes (bands 1-5, 7): no colour
    interpretation, so the core cannot choose red, green, blue itself. 16-pixel blocks."""
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 6, gdal.GDT_UInt16,
                                                   ["TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16"])
    dataset.SetGeoTransform((500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset.SetProjection(srs.ExportToWkt())
    import numpy as np

    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.uint16)
    for b in range(1, 7):
        band = dataset.GetRasterBand(b)
        band.WriteArray(ramp * b + 1000 * b)
        band.SetColorInterpretation(gdal.GCI_Undefined if b > 1 else gdal.GCI_GrayIndex)
        if descriptions:
            band.SetDescription(descriptions[b - 1])
    if metadata:
        dataset.SetMetadata(metadata)
    dataset.FlushCache()
    dataset = None
    return str(path)


# ------------------------------------------------------------------------------ 1. bands
def test_band_default_from_colour_interpretation_names_or_sensor(plugin_module):
    from mgimm_geo.bands import default_bands

    assert default_bands(["red", "green", "blue"]) is None                          # the core's own default
    assert default_bands(["gray"]) is None
    assert default_bands(["blue", "green", "red", "undefined"]) is None            # RGB by interpretation
    assert default_bands(["undefined"] * 4, ["blue", "green", "red", "nir"]).bands == (3, 2, 1)
    assert default_bands(["undefined"] * 6, hint="LT05_L2SP_stack.tif").bands == (3, 2, 1)
    assert default_bands(["undefined"] * 7, hint="SPACECRAFT_ID=LANDSAT_8").bands == (4, 3, 2)
    oli = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]                    # OLI without the coastal band
    assert default_bands(["undefined"] * 6, oli, hint="LC08_x.tif").bands == (3, 2, 1)
    guess = default_bands(["undefined"] * 5)
    assert guess.bands == (1, 2, 3) and not guess.certain
    # what the Bands row shows without a remembered choice
    from mgimm_geo.bands import shown_bands

    assert shown_bands(["Blue", "Green", "Red", "Undefined"], None) == (3, 2, 1)
    assert shown_bands(["gray", "undefined", "undefined"], None) == (1, 2, 3)
    assert shown_bands(["undefined"] * 6, default_bands(["undefined"] * 6, hint="LT05_x.tif")) == (3, 2, 1)


def test_six_band_landsat_gets_a_band_choice_remembered_per_layer(plugin, plugin_module, worker_settings, tmp_path):
    from mgimm_geo.bands import PROPERTY
    from mgimm_geo.request_data import request_bands

    landsat = QgsRasterLayer(write_landsat(tmp_path / "stack.tif", metadata={"SPACECRAFT_ID": "LANDSAT_5"},
                                           descriptions=["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"]),
                             "landsat", "gdal")
    other = QgsRasterLayer(write_landsat(tmp_path / "other.tif"), "other", "gdal")
    QgsProject.instance().addMapLayers([landsat, other])
    dock = plugin.dock
    dock.raster_combo.setLayer(landsat)
    wait_until(lambda: dock.bands_row.isVisibleTo(dock), 5, "the Bands row")
    names = [dock.band_combos[0].itemText(i) for i in range(dock.band_combos[0].count())]
    assert len(names) == 6
    assert [c.currentBand() for c in dock.band_combos] == [3, 2, 1]                # Landsat 5 true colour
    assert "SR_B3" in dock.band_combos[0].currentText() and "SR_B7" in names[5]  # the bands by name
    assert "Landsat 4-7" in dock.bands_row.toolTip()
    dock.band_combos[0].setBand(4)                                                   # the user's choice
    assert landsat.customProperty(PROPERTY) == "4,2,1"
    dock.raster_combo.setLayer(other)                                                # unknown sensor: a guess
    assert [c.currentBand() for c in dock.band_combos] == [1, 2, 3]
    assert "Choose the red, green and blue bands" in dock.status.text()
    dock.raster_combo.setLayer(landsat)
    assert [c.currentBand() for c in dock.band_combos] == [4, 2, 1]                # remembered
    assert request_bands(landsat) == [4, 2, 1]

    plugin.describe([QgsGeometry.fromRect(QgsRectangle(500100, 4099700, 500300, 4099900))], landsat.crs())
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the describe task")
    assert plugin.last_error is None, plugin.last_error
    assert plugin.last_result["regions"][0]["description"]


def test_band_error_speaks_of_the_panel_not_of_cli_flags(plugin_module):
    from mgimm_geo.messages import qgis_words

    core = ("x.tif: 6 bands and no red/green/blue colour interpretation, so which bands to show is ambiguous. "
            "Choose three bands to show as red, green, blue (e.g. 3,2,1; on the command line -b 3,2,1), or one "
            "band for grey (-b 1).")
    said = qgis_words(core)
    assert "-b" not in said and "Bands row" in said


# ------------------------------------------------------------------------------ 2. results on top
def test_descriptions_stay_above_a_raster_added_later(plugin, plugin_module, qgis_new_project, scene_layer, tmp_path):
    from mgimm_geo.layer import descriptions_layer, objects_layer

    objects = objects_layer(str(tmp_path / "d.gpkg"), scene_layer.crs())
    descriptions = descriptions_layer(str(tmp_path / "d.gpkg"), scene_layer.crs())
    later = QgsRasterLayer(write_landsat(tmp_path / "later.tif"), "later", "gdal")
    QgsProject.instance().addMapLayer(later)
    root = QgsProject.instance().layerTreeRoot()
    wait_until(lambda: root.findLayers()[0].layer() is objects, 10, "the results back on top")
    order = [node.layer() for node in root.findLayers()]
    assert order[:2] == [objects, descriptions] and later in order[2:]


# ------------------------------------------------------------------------------ 3. no auth database in worker mode
def test_worker_mode_never_touches_the_auth_database(plugin, plugin_module, worker_settings, scene_layer,
                                                     monkeypatch):
    from mgimm_geo import settings as settings_module
    from mgimm_geo.settings import PREFIX, PluginSettings, store_token
    from qgis.core import QgsSettings

    QgsSettings().setValue(PREFIX + "authcfg", store_token("saved-once", "http://gpu-box:8765"))
    touched = []

    def no_auth_manager():
        touched.append(True)
        raise AssertionError("the authentication database was opened in worker mode")

    monkeypatch.setattr(settings_module, "_auth_manager", no_auth_manager)
    loaded = PluginSettings.load()
    assert loaded.mode == "worker" and loaded.token == "" and loaded.authcfg
    loaded.save()
    plugin.describe([QgsGeometry.fromRect(QgsRectangle(500100, 4099700, 500300, 4099900))], scene_layer.crs())
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the describe task")
    assert plugin.last_error is None, plugin.last_error
    assert touched == []


# ------------------------------------------------------------------------------ 4. panel cleared on error
def test_an_error_clears_the_previous_answer_from_the_panel(plugin, plugin_module, scene_layer, tmp_path):
    from mgimm_geo.settings import PluginSettings

    plugin.dock.show_results([{"id": "1", "description": "an old answer", "attributes": {"object": "building"}}])
    assert plugin.dock.description.toPlainText() == "an old answer"
    PluginSettings(worker_command="/nonexistent/bin/mgimm-geo worker", layer_path=str(tmp_path / "d.gpkg")).save()
    plugin.dock.raster_combo.setLayer(scene_layer)
    plugin.describe([QgsGeometry.fromRect(QgsRectangle(500100, 4099700, 500300, 4099900))], scene_layer.crs())
    wait_until(lambda: not plugin.tasks, 30, "the failing task")
    assert plugin.last_error.code == "worker_missing"
    assert plugin.dock.description.toPlainText() == "" and plugin.dock.results.count() == 0
    assert plugin.dock.attributes.rowCount() == 0 and plugin.dock.status.text().startswith("Cannot start")


# ------------------------------------------------------------------------------ 5. labels and fills
def _label(layer, values) -> object:
    feature = QgsFeature(layer.fields())
    for name, value in values.items():
        feature.setAttribute(name, value)
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(feature)
    value = QgsExpression(layer.labeling().settings().fieldName).evaluate(context)
    return None if value is None or value == NULL else value


def test_empty_regions_are_unlabelled_and_fills_barely_tinted(plugin_module, qgis_new_project, tmp_path):
    from mgimm_geo.layer import descriptions_layer
    from qgis.core import QgsCoordinateReferenceSystem

    layer = descriptions_layer(str(tmp_path / "d.gpkg"), QgsCoordinateReferenceSystem("EPSG:32633"))
    assert _label(layer, {"object": "none", "description": "No distinct objects stand out."}) is None
    assert _label(layer, {"object": "building", "color": "red"}) == "red building"
    assert _label(layer, {"error": "region outside"}) == "region outside"
    assert layer.renderer().symbol().color().alpha() <= 25


# ------------------------------------------------------------------------------ 6 + 7. cancelled tiles, progress
def test_cancelled_tile_run_loads_what_it_kept_with_percentages(plugin, plugin_module, worker_settings,
                                                               qgis_processing, tmp_path):
    from processing.gui.Postprocessing import handleAlgorithmResults

    from mgimm_geo.settings import shared_client

    raster = QgsRasterLayer(write_landsat(tmp_path / "big.tif", width=512, height=512, descriptions=[
        "blue", "green", "red", "nir", "swir1", "swir2"]), "big", "gdal")
    QgsProject.instance().addMapLayer(raster)
    shared_client().hello()                                 # the model loaded: the run starts at once
    out = str(tmp_path / "tiles.gpkg")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("mgimm:describe_tiles")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    seen = []

    def on_progress(value):
        seen.append(value)
        if 0 < value < 100:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    results, ok = algorithm.run({"INPUT": raster, "TILE_SIZE": 16, "MODE": 0, "OUTPUT": out}, context, feedback)
    assert ok, results
    assert any(0 < value < 100 for value in seen), seen          # a percentage, not a busy bar
    handleAlgorithmResults(algorithm, context, feedback)         # the dialog's loading: nothing once cancelled
    wait_until(lambda: QgsProject.instance().mapLayersByName("MGIMM tiles"), 10, "the kept tiles loaded")
    loaded = QgsProject.instance().mapLayersByName("MGIMM tiles")
    assert len(loaded) == 1 and 0 < loaded[0].featureCount() < 32 * 32
    assert loaded[0].renderer().symbol().color().alpha() <= 25
    assert _label(loaded[0], {"description": "No distinct objects stand out, mainly farmland."}) is None


class _WarningClient:
    """A client answering describe_file with a summary that carries the GSD warning."""

    def request(self, type, params=None, progress=None, cancelled=None):
        return {"output": params["output"], "described": 1, "failed": 0,
                "warnings": ["scene.tif: 10 m pixels, but the model was trained on 0.5 m imagery"]}


def test_processing_puts_warnings_in_its_log(plugin, plugin_module, worker_settings, qgis_processing, scene_layer,
                                             monkeypatch, tmp_path):
    from mgimm_geo import algorithms

    monkeypatch.setattr(algorithms, "shared_client", lambda: _WarningClient())
    warned = []

    class Feedback(QgsProcessingFeedback):
        def pushWarning(self, text):  # noqa: N802 (Qt's name)
            warned.append(text)
            super().pushWarning(text)

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("mgimm:describe_tiles")
    context = QgsProcessingContext()
    results, ok = algorithm.run({"INPUT": scene_layer, "TILE_SIZE": 32, "MODE": 0,
                                 "OUTPUT": str(tmp_path / "t.gpkg")}, context, Feedback())
    assert ok and json.loads(results["SUMMARY"])["warnings"]
    assert warned == ["scene.tif: 10 m pixels, but the model was trained on 0.5 m imagery"]


# ------------------------------------------------------------------------------ 7. messages
def test_messages_have_details_with_the_whole_text(plugin, iface):
    long = "The MGIMM worker stopped. " + "A long reason. " * 30 + "Check the worker command in MGIMM settings."
    plugin.warn("MGIMM", long)
    assert messages(iface, Qgis.Warning)[-1] == f"MGIMM:{long}"
    item = iface.messageBar().items[-1]
    (button,) = [b for b in item.findChildren(QPushButton) if b.text() == "Details"]
    button.click()
    boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
    assert boxes and boxes[-1].text() == long
    boxes[-1].close()


def test_wrong_token_message_speaks_of_settings_not_http(plugin_module, server):
    from mgimm_geo.client import ClientError, HttpClient

    url, _ = server
    with pytest.raises(ClientError) as refused:
        HttpClient(url, "wrong").hello()
    text = refused.value.message
    assert refused.value.code == "unauthorized" and "MGIMM settings" in text
    assert "HTTP" not in text and "Bearer" not in text and "Authorization:" not in text


def test_cancelled_request_says_how_long_it_ran(plugin, plugin_module, worker_settings, scene_layer):
    from mgimm_geo.plugin import WORKER_CHUNK
    from mgimm_geo.settings import shared_client

    shared_client().hello()
    count = 16 * WORKER_CHUNK
    regions = [QgsGeometry.fromRect(QgsRectangle(500010 + i % 200, 4099600, 500100 + i % 200, 4099700))
               for i in range(count)]
    plugin.dock.raster_combo.setLayer(scene_layer)
    task = plugin.describe(regions, scene_layer.crs())
    task.progressChanged.connect(lambda value: task.cancel() if value > 0 else None)
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the cancelled task")
    status = plugin.dock.status.text()
    assert status.startswith("Cancelled:"), status
    assert f"in {task.elapsed:.1f} s" in status
    assert task.elapsed >= plugin.last_result["seconds"]          # the whole wait, not the last chunk's


# ------------------------------------------------------------------------------ 8. several chips per request
def test_server_mode_sends_several_chips_per_request(plugin_module, server, tmp_path):
    from mgimm_geo.client import HttpClient
    from mgimm_geo.request_data import chip_jobs, raster_info
    from mgimm_geo.server_chips import CHIPS_PER_REQUEST, describe_chips
    from plugin_fixtures import write_geotiff

    url, token = server
    client = HttpClient(url, token)
    sent = []
    request = client.request

    def counting(type, params=None, **kwargs):
        sent.append((type, len((params or {}).get("regions") or [])))
        return request(type, params, **kwargs)

    client.request = counting
    info = raster_info(write_geotiff(tmp_path / "s.tif"))
    count = CHIPS_PER_REQUEST + 4
    geometries = [QgsGeometry.fromRect(QgsRectangle(500010 + 10 * i, 4099600, 500100 + 10 * i, 4099700))
                  for i in range(count)]
    jobs = chip_jobs(info, geometries, [str(i) for i in range(count)], [{} for _ in range(count)])
    result = describe_chips(client, info, jobs, {"crs": "EPSG:32633", "max_new_tokens": 4, "thumbnail": False})
    assert [e["id"] for e in result["regions"]] == [str(i) for i in range(count)]
    assert all(e["description"] for e in result["regions"])
    assert [n for t, n in sent if t == "describe"] == [CHIPS_PER_REQUEST, 4]
