"""Endpoint mode: the plugin's worker asks a real `mgimm-geo serve` (an OpenAI-compatible endpoint)
for its model; the endpoint's key lives in QGIS's authentication database and reaches the worker in
its environment, never on its command line or in QGIS3.ini. The panel and Processing cut each
region's chip in QGIS and send the worker per-region `raster_b64`, as server mode sends a server:
the worker never gets the raster's path, and the results layer is server mode's."""

import json

import pytest
from osgeo import ogr
from qgis.core import (QgsGeometry, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProject, QgsRectangle, QgsSettings, QgsVectorLayer, QgsFeature)

from plugin_fixtures import wait_until, write_geotiff
from test_zip_and_settings import _settings_file_text

#: two regions on the 640 m x 480 m scene (scene_layer) and one east of it
REGIONS = [QgsRectangle(500100, 4099700, 500300, 4099900), QgsRectangle(500350, 4099600, 500500, 4099800),
           QgsRectangle(501000, 4099700, 501100, 4099800)]


def endpoint_settings(worker_command, server, layer_path):
    from mgimm_geo.settings import PluginSettings

    url, token = server
    return PluginSettings(mode="endpoint", worker_command=worker_command, endpoint_url=url + "/v1",
                          endpoint_key=token, layer_path=str(layer_path), max_new_tokens=6)


def record_requests(monkeypatch) -> list:
    """(type, params) of every request a fresh session client (the one the plugin and Processing
    then use for the saved settings) is sent; the requests still go to the real worker/server."""
    from mgimm_geo.settings import PluginSettings, reset_shared_client, shared_client

    reset_shared_client()            # no chip settings cached by an earlier test's client
    client = shared_client(PluginSettings.load())
    sent, request = [], client.request

    def recording(type, params=None, progress=None, cancelled=None):
        sent.append((type, json.loads(json.dumps(params or {}))))
        return request(type, params, progress=progress, cancelled=cancelled)

    monkeypatch.setattr(client, "request", recording)
    return sent


def assert_chips_only(sent, raster_path, region_count):
    """The worker got chips: a `chip_settings` request, then `describe` requests whose every region
    carries its own raster_b64 and none naming the raster (no `raster`, no `describe_file`)."""
    types = [t for t, _ in sent]
    assert types[0] == "chip_settings" and "describe_file" not in types, types
    describes = [p for t, p in sent if t == "describe"]
    assert describes, types
    for params in describes:
        assert "raster" not in params and "raster_b64" not in params, sorted(params)
        assert all(r.get("raster_b64") and r.get("chip_scale") for r in params["regions"])
        assert raster_path not in json.dumps({k: v for k, v in params.items() if k != "raster_name"})
    assert sum(len(p["regions"]) for p in describes) == region_count


def test_endpoint_mode_settings_keep_the_key_out_of_the_command_line_and_qgis3_ini(plugin_module,
                                                                                  worker_command):
    from mgimm_geo.client import WorkerClient
    from mgimm_geo.settings import PluginSettings

    try:
        PluginSettings(mode="endpoint", worker_command=worker_command, endpoint_url="http://127.0.0.1:9/v1",
                       served_model="qwen-vl", family="generic", endpoint_key="ep-k3y-value").save()
        assert "ep-k3y-value" not in _settings_file_text()
        loaded = PluginSettings.load()
        assert (loaded.mode, loaded.endpoint_key, loaded.family) == ("endpoint", "ep-k3y-value", "generic")
        client = loaded.make_client()
        assert isinstance(client, WorkerClient)
        argv = client.argv
        assert argv[argv.index("--model") + 1] == "http://127.0.0.1:9/v1"
        assert argv[argv.index("--served-model") + 1] == "qwen-vl" and "--family" in argv
        assert "ep-k3y-value" not in " ".join(argv) and client.environ["MGIMM_API_KEY"] == "ep-k3y-value"
    finally:
        QgsSettings().remove("mgimm_geo")


def test_endpoint_mode_describes_through_a_real_server(plugin_module, worker_command, server, tmp_path):
    from mgimm_geo.settings import PluginSettings
    from mgimm_geo.settings_dialog import SettingsDialog

    url, token = server
    settings = PluginSettings(mode="endpoint", worker_command=worker_command, endpoint_url=url + "/v1",
                              endpoint_key=token, layer_path=str(tmp_path / "descriptions.gpkg"), max_new_tokens=6)
    try:
        settings.save()
        dialog = SettingsDialog(PluginSettings.load())
        assert dialog.endpoint.url.isEnabled() and not dialog.model.isEnabled()
        dialog.test_connection()
        wait_until(lambda: dialog.test_button.isEnabled(), 180, "the connection test")
        assert dialog.test_result.text().startswith("OK: model tiny on " + url + "/v1"), dialog.test_result.text()
        client = PluginSettings.load().make_client()
        try:
            result = client.request("describe", {
                "raster": write_geotiff(tmp_path / "scene.tif"), "crs": "EPSG:32633", "max_new_tokens": 6,
                "regions": [{"id": "1", "wkt": "POLYGON ((500100 4099700, 500300 4099700, 500300 4099900, "
                                               "500100 4099900, 500100 4099700))"}]})
        finally:
            client.close()
        (entry,) = result["regions"]
        assert entry["error"] is None and entry["description"] and entry["model"] == "tiny"
    finally:
        QgsSettings().remove("mgimm_geo")


def test_endpoint_mode_panel_sends_chips_and_writes_server_modes_results_layer(
        plugin, plugin_module, worker_command, server, scene_layer, tmp_path, monkeypatch):
    """The same three regions (one off the raster) in server mode, then in endpoint mode: endpoint
    mode sends the worker chips, never the raster's path, and its entries and results-layer rows
    are server mode's (scene, valid fraction, GSD, model, chip window, the off-raster error row)."""
    from mgimm_geo.settings import PluginSettings

    url, token = server
    plugin.dock.raster_combo.setLayer(scene_layer)
    regions = [QgsGeometry.fromRect(r) for r in REGIONS]
    runs = {}
    try:
        for mode in ("server", "endpoint"):
            path = tmp_path / f"{mode}.gpkg"
            if mode == "server":
                PluginSettings(mode="server", server_url=url, token=token, layer_path=str(path),
                               max_new_tokens=6).save()
            else:
                endpoint_settings(worker_command, server, path).save()
            sent = record_requests(monkeypatch)
            assert plugin.describe(regions, scene_layer.crs()) is not None
            wait_until(lambda: not plugin.tasks, 300, f"the {mode} request")
            assert plugin.last_error is None, plugin.last_error
            dataset = ogr.Open(str(path))
            layer = dataset.GetLayerByName("regions")
            rows = sorted((f.items() for f in layer), key=lambda row: int(row["region_id"]))
            dataset = None
            runs[mode] = (sent, plugin.last_result["regions"], rows)
    finally:
        QgsSettings().remove("mgimm_geo")

    sent, entries, rows = runs["endpoint"]
    assert_chips_only(sent, scene_layer.source(), 2)          # the region off the raster is not sent
    assert token not in json.dumps(sent)                       # the key reaches the worker in its environment only
    server_sent, server_entries, server_rows = runs["server"]
    assert [t for t, _ in server_sent] == [t for t, _ in sent]
    assert len(entries) == len(server_entries) == 3 and len(rows) == len(server_rows) == 3
    for entry, other in zip(entries, server_entries):
        assert entry["error_code"] == other["error_code"], (entry["error"], other["error"])
        for name in ("scene", "gsd_m", "valid_fraction", "model", "chip"):
            assert entry.get(name) == other.get(name), name
        assert bool(entry["thumbnail_png_b64"]) == bool(other["thumbnail_png_b64"])
    entries = sorted(entries, key=lambda e: int(e["id"]))
    assert [e["error_code"] for e in entries] == [None, None, "region_outside"]
    assert entries[0]["model"] == "tiny" and entries[0]["chip"]["pixels"] > 0
    # the same columns, in the same order: the tiny MGIMM model behind the server measures no_object_p
    # and object_p (fields added when first used; object_p where its answer names a class), and as an
    # endpoint it sends them beside each row (docs/protocol.md), so endpoint mode writes them too
    assert list(rows[0]) == list(server_rows[0]) and "no_object_p" in rows[0]
    named = [r for r in server_rows if r["object"] not in (None, "none")]   # answers naming a class
    assert ("object_p" in server_rows[0]) == bool(named)
    for row in server_rows if named else []:
        assert (0.0 < row["object_p"] <= 1.0) if row in named else row["object_p"] is None, row
    for row, other in zip(rows, server_rows):        # the same forward pass, summed in another batch
        for name in ("no_object_p", "object_p") if named else ("no_object_p",):
            assert (row[name] is None) == (other[name] is None), name
            assert row[name] is None or abs(row[name] - other[name]) <= 1e-5 * max(abs(other[name]), 1e-12), name
    for row, other in zip(rows, server_rows):
        for name in ("scene", "valid_fraction", "gsd_m", "model", "prompt"):
            assert row[name] == other[name], name
        assert (row["error"] is None) == (other["error"] is None)
    assert rows[2]["error"] and "outside" in rows[2]["error"]


def test_processing_in_endpoint_mode_sends_chips(plugin, plugin_module, worker_command, server, qgis_processing,
                                                 qgis_new_project, scene_layer, tmp_path, monkeypatch):
    import processing

    endpoint_settings(worker_command, server, tmp_path / "d.gpkg").save()
    aoi = QgsVectorLayer("Polygon?crs=EPSG:32633&field=name:string", "aoi", "memory")
    features = []
    for i, rect in enumerate(REGIONS[:2]):
        feature = QgsFeature(aoi.fields())
        feature.setGeometry(QgsGeometry.fromRect(rect))
        feature.setAttributes([f"block {i}"])
        features.append(feature)
    aoi.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(aoi)
    try:
        sent = record_requests(monkeypatch)
        out = str(tmp_path / "regions.gpkg")
        context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
        context.setProject(QgsProject.instance())
        result = processing.run("mgimm:describe_regions", {"INPUT": scene_layer, "AOI": aoi, "MODE": 0,
                                                           "OUTPUT": out}, context=context, feedback=feedback)
        assert_chips_only(sent, scene_layer.source(), 2)
        summary = json.loads(result["SUMMARY"])
        assert summary["engine"] == "endpoint, region chips"
        assert (summary["described"], summary["failed"], summary["model"]) == (2, 0, "tiny")
        dataset = ogr.Open(out)
        rows = sorted((f.items() for f in dataset.GetLayerByName("regions")), key=lambda r: r["name"])
        dataset = None
        assert [r["name"] for r in rows] == ["block 0", "block 1"] and all(r["description"] for r in rows)
        with pytest.raises(QgsProcessingException, match="endpoint's model"):   # refused before any output
            processing.run("mgimm:describe_regions", {"INPUT": scene_layer, "AOI": aoi, "GUIDE": aoi, "MODE": 0,
                                                      "OUTPUT": str(tmp_path / "guided.gpkg")},
                           context=context, feedback=feedback)
        assert not (tmp_path / "guided.gpkg").exists()
    finally:
        QgsSettings().remove("mgimm_geo")
