"""Screenshot of QGIS with the MGIMM panel describing a region of the demo scene -> docs/qgis_dock.png.

Run with QGIS's Python under Xvfb (it never imports torch; the model runs in a real worker started
with the project's Python):

    xvfb-run -a -s "-screen 0 1400x900x24" .venv-qgis/bin/python scripts/qgis_screenshot.py \
        --python "$(command -v python3)" [--model DIR] [-o docs/qgis_dock.png]

--python: the interpreter where mgimm-geo is installed (it writes the synthetic demo scene and runs
`-m batch.cli worker`). --model: a model folder (default: the embedded demo model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_demo_scene(python: str, directory: Path) -> dict:
    code = ("import json, sys\nfrom training.synthetic.demo_inputs import write_demo_inputs\n"
            "i = write_demo_inputs(sys.argv[1], seed=2024)\n"
            "print(json.dumps({'scene': str(i.scene), 'aoi': str(i.aoi)}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([python, "-c", code, str(directory)], check=True, capture_output=True, text=True,
                         cwd=REPO, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


class ScreenshotIface:
    """The QgisInterface calls the plugin makes, on a plain main window with a canvas."""

    def __init__(self, window, canvas, bar):
        self.window, self.canvas, self.bar, self.active = window, canvas, bar, None

    def mapCanvas(self):
        return self.canvas

    def mainWindow(self):
        return self.window

    def messageBar(self):
        return self.bar

    def activeLayer(self):
        return self.active

    def addToolBar(self, name):
        return self.window.addToolBar(name)

    def addPluginToMenu(self, menu, action):
        pass

    def removePluginMenu(self, menu, action):
        pass

    def addDockWidget(self, area, dock):
        self.window.addDockWidget(area, dock)

    def removeDockWidget(self, dock):
        self.window.removeDockWidget(dock)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the Python where mgimm-geo is installed")
    parser.add_argument("--model", default="", help="model folder (default: the embedded demo model)")
    parser.add_argument("-o", "--output", default=str(REPO / "docs" / "qgis_dock.png"))
    args = parser.parse_args()

    from qgis.core import (QgsApplication, QgsProject, QgsRasterLayer,
                           QgsSettings, QgsVectorLayer)
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget

    os.environ.setdefault("QGIS_CUSTOM_CONFIG_PATH", tempfile.mkdtemp(prefix="mgimm_qgis_profile_"))
    app = QgsApplication([], True)
    app.initQgis()
    work = Path(tempfile.mkdtemp(prefix="mgimm_screenshot_"))
    demo = write_demo_scene(args.python, work)

    window = QMainWindow()
    window.resize(1400, 820)
    central = QWidget()
    layout = QVBoxLayout(central)
    bar = QgsMessageBar()
    canvas = QgsMapCanvas()
    layout.addWidget(bar)
    layout.addWidget(canvas)
    window.setCentralWidget(central)
    scene = QgsRasterLayer(demo["scene"], "demo scene", "gdal")
    aoi = QgsVectorLayer(demo["aoi"], "demo AOIs", "ogr")
    QgsProject.instance().addMapLayer(scene)
    canvas.setDestinationCrs(scene.crs())
    canvas.setLayers([scene])
    canvas.setExtent(scene.extent())

    sys.path.insert(0, str(work / "plugins"))
    (work / "plugins").mkdir()
    (work / "plugins" / "mgimm_geo").symlink_to(REPO / "qgis_plugin", target_is_directory=True)
    import mgimm_geo
    from mgimm_geo.settings import PluginSettings

    PluginSettings(worker_command=f"{args.python} -m batch.cli worker", model=args.model,
                   layer_path=str(work / "descriptions.gpkg"), max_new_tokens=80).save()
    plugin = mgimm_geo.classFactory(ScreenshotIface(window, canvas, bar))
    plugin.initGui()
    plugin.dock.raster_combo.setLayer(scene)
    window.show()

    feature = next(aoi.getFeatures())
    task = plugin.describe([feature.geometry()], aoi.crs())
    deadline = time.monotonic() + 300
    while plugin.tasks and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    if plugin.last_error is not None or task is None:
        print(f"describe failed: {plugin.last_error}", file=sys.stderr)
        return 1
    layer = QgsProject.instance().mapLayersByName("MGIMM descriptions")[0]
    canvas.setLayers([layer, scene])
    canvas.setExtent(layer.extent().buffered(layer.extent().width() * 1.5))
    canvas.refreshAllLayers()
    for _ in range(100):  # let the canvas render
        app.processEvents()
        time.sleep(0.03)
    canvas.waitWhileRendering()
    app.processEvents()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(args.output, "PNG")
    print(args.output)
    plugin.unload()
    QgsSettings().remove("mgimm_geo")
    sys.stdout.flush()
    os._exit(0)  # skip Qt/QGIS teardown order crashes at interpreter exit; the PNG is written


if __name__ == "__main__":
    sys.exit(main())
