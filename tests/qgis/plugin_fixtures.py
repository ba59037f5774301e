"""Fixtures of the QGIS suite: the plugin under its installed name, a recording iface, tiny rasters,
and a real worker built from the project's Python (MGIMM_TEST_PYTHON, set by tests/plugin/test_qgis_plugin.py).

Real parts everywhere except the QGIS main window: QGIS cannot open its full application window
headless, so `RecordingIface` stands in for QgisInterface (a real QMainWindow, canvas, toolbars and
dock areas; it records menus so the tests can see what the plugin leaves behind).
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
import sys
import time
from pathlib import Path

import pytest
from osgeo import gdal, osr
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsSettings
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtWidgets import QToolBar

REPO = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT = 180  # s: the first request starts Python + torch and loads the model
PLUGIN_NAME = "mgimm_geo"


@pytest.fixture(scope="session")
def plugin_module(tmp_path_factory):
    """The plugin package imported as QGIS installs it: a folder named mgimm_geo."""
    root = tmp_path_factory.mktemp("plugins")
    (root / PLUGIN_NAME).symlink_to(REPO / "qgis_plugin", target_is_directory=True)
    sys.path.insert(0, str(root))
    import mgimm_geo

    return mgimm_geo


class RecordingMessageBar(QgsMessageBar):
    """A real QgsMessageBar (items with their buttons, as in QGIS) that also records each message as
    "title:text" per level, as pytest-qgis's mock bar does."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.messages: dict = {Qgis.Info: [], Qgis.Warning: [], Qgis.Critical: [], Qgis.Success: []}
        self.items: list = []

    def get_messages(self, level) -> list:
        return self.messages[level]

    def pushItem(self, item):  # noqa: N802 (Qt's name)
        self.messages[item.level()].append(f"{item.title()}:{item.text()}")
        self.items.append(item)
        super().pushItem(item)


class RecordingIface:
    """The QgisInterface calls the plugin makes, on pytest-qgis's window and canvas, with one real
    recording message bar per window (shared by every RecordingIface of the session)."""

    def __init__(self, base):
        self.base = base
        self.menus: dict = {}
        self.docks: list = []
        self.toolbars: list = []
        if getattr(base, "_mgimm_message_bar", None) is None:
            base._mgimm_message_bar = RecordingMessageBar(base.mainWindow())

    def mapCanvas(self):
        return self.base.mapCanvas()

    def mainWindow(self):
        return self.base.mainWindow()

    def messageBar(self):
        return self.base._mgimm_message_bar

    def activeLayer(self):
        return self.base.activeLayer()

    def setActiveLayer(self, layer):
        self.base.setActiveLayer(layer)

    def addToolBar(self, name):
        toolbar = QToolBar(name, self.mainWindow())
        self.mainWindow().addToolBar(toolbar)
        self.toolbars.append(toolbar)
        return toolbar

    def addPluginToMenu(self, menu, action):
        self.menus.setdefault(menu, []).append(action)

    def removePluginMenu(self, menu, action):
        self.menus[menu].remove(action)
        if not self.menus[menu]:
            del self.menus[menu]

    def addDockWidget(self, area, dock):
        self.mainWindow().addDockWidget(area, dock)
        self.docks.append(dock)

    def removeDockWidget(self, dock):
        self.mainWindow().removeDockWidget(dock)
        self.docks.remove(dock)


def messages(iface, level) -> list:
    return iface.messageBar().get_messages(level)


def clear_messages(iface) -> None:
    for texts in iface.messageBar().messages.values():
        texts.clear()


@pytest.fixture
def iface(qgis_iface):
    recording = RecordingIface(qgis_iface)
    clear_messages(recording)
    return recording


@pytest.fixture
def plugin(plugin_module, iface, qgis_new_project):
    instance = plugin_module.classFactory(iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.fixture(scope="module")
def module_plugin(plugin_module, qgis_iface):
    """One plugin per test module, so the worker (and its loaded model) serves every test."""
    instance = plugin_module.classFactory(RecordingIface(qgis_iface))
    instance.initGui()
    yield instance
    instance.unload()


def wait_until(predicate, timeout: float = 60.0, what: str = "the condition") -> None:
    """Process Qt events until `predicate()` holds (QgsTask results arrive through the event loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        QgsApplication.processEvents()
        time.sleep(0.02)


def write_geotiff(path, *, width=64, height=48, origin=(500000.0, 4100000.0), res=10.0, epsg=32633,
                  bands=3) -> str:
    """A north-up uint8 RGB GeoTIFF (epsg None: no CRS) with a gradient, via GDAL."""
    driver = gdal.GetDriverByName("GTiff")
    dataset = driver.Create(str(path), width, height, bands, gdal.GDT_Byte)
    dataset.SetGeoTransform((origin[0], res, 0.0, origin[1], 0.0, -res))
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        dataset.SetProjection(srs.ExportToWkt())
    for b in range(1, bands + 1):
        band = dataset.GetRasterBand(b)
        band.Fill(40 * b)
        band.SetColorInterpretation([gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand][(b - 1) % 3])
    dataset.FlushCache()
    dataset = None
    return str(path)


@pytest.fixture
def scene_layer(tmp_path):
    """A 640 m x 480 m RGB scene in UTM 33N, added to the project."""
    layer = QgsRasterLayer(write_geotiff(tmp_path / "scene_rgb.tif"), "scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


# ----------------------------------------------------------------------- the real worker
def worker_python() -> str:
    python = os.environ.get("MGIMM_TEST_PYTHON")
    if not python:
        pytest.skip("MGIMM_TEST_PYTHON (the project's Python, with mgimm-geo and torch) is not set; "
                    "run these through tests/plugin/test_qgis_plugin.py")
    return python


def project_environment() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "QGIS_CUSTOM_CONFIG_PATH", "QT_QPA_PLATFORM")}
    return env


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random MGIMM model folder, written by the project's Python (QGIS's cannot import torch)."""
    python = worker_python()
    directory = tmp_path_factory.mktemp("model") / "tiny"  # the model id is the folder name
    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from mgimm_core.model.testing_mgimm import tiny_model, tiny_processor\n"
            "m = tiny_model(); m.save_pretrained(sys.argv[1]); tiny_processor(m.config).save_pretrained(sys.argv[1])\n")
    subprocess.run([python, "-c", code, str(directory)], check=True, env=project_environment(),
                   capture_output=True, timeout=300)
    return str(directory)


@pytest.fixture(scope="session")
def worker_command(tiny_model_dir) -> str:
    return f"{worker_python()} -m batch.cli worker --heartbeat 0.5"


@pytest.fixture
def worker_settings(plugin_module, worker_command, tiny_model_dir, tmp_path):
    """Plugin settings pointing at a real worker on the tiny model; the GeoPackage in tmp_path."""
    from mgimm_geo.settings import PluginSettings

    settings = PluginSettings(mode="worker", worker_command=worker_command, model=tiny_model_dir, device="cpu",
                              layer_path=str(tmp_path / "descriptions.gpkg"), max_new_tokens=6)
    settings.save()
    yield settings
    QgsSettings().remove("mgimm_geo")


# ----------------------------------------------------------------------- the real server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tiny_model_dir, tmp_path_factory):
    """A real `mgimm-geo serve` on the tiny model with a token, its default request limit (64 MB) and
    no --root (so it can read no file of ours: every raster must come as raster_b64). Its log goes to
    a file (a pipe nobody reads would fill and stall it)."""
    port, token = free_port(), "s3cret-token"
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    log = open(log_path, "wb")
    process = subprocess.Popen([worker_python(), "-m", "batch.cli", "serve", "--port", str(port), "--model",
                                tiny_model_dir, "--device", "cpu", "--token", token, "--threads", "1"],
                               env=project_environment(), stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WORKER_TIMEOUT
    while True:
        try:
            request = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {token}"})
            urllib.request.urlopen(request, timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                pytest.fail(f"mgimm-geo serve did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
    yield url, token
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session", autouse=True)
def auth_master_password():
    """QGIS's authentication database unlocked with a master password, as the user does in QGIS's
    master password dialog (a dialog cannot be answered headless, so the test sets it; the database
    itself is real, in pytest-qgis's temporary profile)."""
    manager = QgsApplication.authManager()
    assert not manager.isDisabled()
    assert manager.setMasterPassword("mgimm-test-master-password", True)
