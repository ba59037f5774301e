"""Endpoint mode: the plugin's worker asks a real `mgimm-geo serve` (an OpenAI-compatible endpoint)
for its model; the endpoint's key lives in QGIS's authentication database and reaches the worker in
its environment, never on its command line or in QGIS3.ini."""

from qgis.core import QgsSettings

from plugin_fixtures import wait_until, write_geotiff
from test_zip_and_settings import _settings_file_text


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
