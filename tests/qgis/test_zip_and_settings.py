"""The ZIP for "Install from ZIP", the settings round trip, and the dialog's connection test."""

import configparser
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from qgis.core import QgsSettings

from plugin_fixtures import REPO, wait_until


def test_zip_holds_the_plugin_folder_with_valid_metadata(tmp_path):
    output = tmp_path / "plugin.zip"
    subprocess.run([sys.executable, str(REPO / "qgis_plugin" / "build_zip.py"), "-o", str(output)], check=True)
    with zipfile.ZipFile(output) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "profile" / "python" / "plugins")
    assert all(name.startswith("mgimm_geo/") for name in names)
    assert {"mgimm_geo/__init__.py", "mgimm_geo/metadata.txt", "mgimm_geo/icon.svg"} <= set(names)
    assert not any("__pycache__" in name or name.endswith(".pyc") or "build_zip" in name for name in names)
    metadata = configparser.ConfigParser()
    metadata.read(tmp_path / "profile" / "python" / "plugins" / "mgimm_geo" / "metadata.txt")
    general = metadata["general"]
    assert general["qgisMinimumVersion"] == "3.22" and general["hasProcessingProvider"] == "yes"
    for key in ("name", "description", "about", "version", "author", "email", "repository"):
        assert general[key]
    # The extracted plugin imports on its own, the way QGIS loads it.
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import mgimm_geo; "
                            "print(callable(mgimm_geo.classFactory))", str(tmp_path / "profile" / "python" / "plugins")],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "True", probe.stderr


def test_settings_round_trip_and_client_kind(plugin_module):
    from mgimm_geo.client import HttpClient, WorkerClient
    from mgimm_geo.settings import PluginSettings

    try:
        PluginSettings(mode="server", server_url="http://gpu-box:8765", token="t", max_new_tokens=50).save()
        loaded = PluginSettings.load()
        assert (loaded.mode, loaded.server_url, loaded.token, loaded.max_new_tokens) == ("server", "http://gpu-box:8765",
                                                                                          "t", 50)
        assert isinstance(loaded.make_client(), HttpClient)
        PluginSettings(worker_command="/env/bin/mgimm-geo", model="/models/m", device="cpu").save()
        client = PluginSettings.load().make_client()
        assert isinstance(client, WorkerClient)
        assert client.argv == ["/env/bin/mgimm-geo", "worker", "--model", "/models/m", "--device", "cpu"]
        assert "PYTHONPATH" not in client.environ and "GDAL_DATA" not in client.environ
        # an original-format LLaVA/GeoChat model's vision tower reaches the worker as --vision
        PluginSettings(model="/models/geochat", vision="/models/clip-336").save()
        argv = PluginSettings.load().make_client().argv
        assert argv[argv.index("--vision") + 1] == "/models/clip-336"
    finally:
        QgsSettings().remove("mgimm_geo")


def test_dialog_connection_test_shows_model_and_device(plugin_module, worker_settings):
    from mgimm_geo.settings_dialog import SettingsDialog

    dialog = SettingsDialog(worker_settings)
    dialog.test_connection()
    wait_until(lambda: dialog.test_button.isEnabled(), 180, "the connection test")
    assert dialog.test_result.text().startswith("OK: model tiny on cpu"), dialog.test_result.text()
    dialog.worker_command.setText("/nonexistent/mgimm-geo")
    dialog.test_connection()
    wait_until(lambda: dialog.test_button.isEnabled(), 30, "the failing connection test")
    assert dialog.test_result.text().startswith("Failed: Cannot start the MGIMM worker")


@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="qgis_process.bin (Debian package qgis) "
                    "is not installed; scripts/setup_qgis_env.sh installs it")
def test_qgis_process_lists_the_algorithms_of_the_installed_zip(tmp_path):
    """qgis_process.bin itself (the `qgis_process` wrapper script may start a display server)."""
    plugins = tmp_path / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    subprocess.run([sys.executable, str(REPO / "qgis_plugin" / "build_zip.py"), "-o", str(tmp_path / "p.zip")],
                   check=True)
    with zipfile.ZipFile(tmp_path / "p.zip") as archive:
        archive.extractall(plugins)
    # PATH without pyenv's shims: QGIS's embedded Python finds its home through `python3` on PATH.
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if ".pyenv" not in p)
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path), QT_QPA_PLATFORM="offscreen", PATH=path)
    # Enabled as `qgis_process.bin plugins enable mgimm_geo` records it (the profile's [PythonPlugins]
    # setting), written here: that sub-command starts a whole QGIS application only to store it, and
    # crashed (SIGSEGV) inside this suite once; `list` below loads the plugin from the same setting.
    settings = tmp_path / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    settings.parent.mkdir(parents=True)
    settings.write_text("[PythonPlugins]\nmgimm_geo=true\n", encoding="utf-8")
    listing = subprocess.run(["qgis_process.bin", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, f"qgis_process.bin list exited {listing.returncode}: {listing.stderr[-2000:]}"
    assert "mgimm:describe_regions\tDescribe regions" in listing.stdout, listing.stdout[-2000:] + listing.stderr
    assert "mgimm:describe_tiles\tDescribe scene tiles" in listing.stdout


def _settings_file_text() -> str:
    settings = QgsSettings()
    settings.sync()
    with open(settings.fileName(), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def test_token_goes_to_the_auth_database_not_qgis3_ini(plugin_module):
    from qgis.core import QgsApplication
    from mgimm_geo.settings import PluginSettings

    try:
        settings = PluginSettings(mode="server", server_url="http://gpu-box:8765", token="t0p-s3cret-value")
        settings.save()
        assert settings.authcfg in QgsApplication.authManager().configIds()
        assert QgsSettings().value("mgimm_geo/token") is None
        assert QgsSettings().value("mgimm_geo/authcfg") == settings.authcfg
        assert "t0p-s3cret-value" not in _settings_file_text()
        with open(QgsApplication.authManager().authenticationDatabasePath(), "rb") as handle:
            assert b"t0p-s3cret-value" not in handle.read()       # encrypted with the master password
        loaded = PluginSettings.load()
        assert (loaded.token, loaded.authcfg) == ("t0p-s3cret-value", settings.authcfg)
        assert loaded.make_client().token == "t0p-s3cret-value"
        PluginSettings(mode="server", server_url="http://gpu-box:8765", token="rotated").save()
        assert PluginSettings.load().authcfg == settings.authcfg        # the same config, updated
        assert PluginSettings.load().token == "rotated"
    finally:
        QgsSettings().remove("mgimm_geo")


def test_plain_token_of_an_older_version_is_migrated_on_load(plugin_module):
    from mgimm_geo.settings import PREFIX, PluginSettings

    try:
        store = QgsSettings()
        store.setValue(PREFIX + "mode", "server")
        store.setValue(PREFIX + "token", "legacy-plain-token")        # what QGIS3.ini held before
        assert "legacy-plain-token" in _settings_file_text()
        loaded = PluginSettings.load()
        assert loaded.token == "legacy-plain-token" and loaded.authcfg
        assert QgsSettings().value(PREFIX + "token") is None
        assert "legacy-plain-token" not in _settings_file_text()
        assert PluginSettings.load().token == "legacy-plain-token"
    finally:
        QgsSettings().remove("mgimm_geo")
