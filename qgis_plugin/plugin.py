"""The plugin: toolbar and menu actions, the map tools, the MGIMM panel, the Processing provider,
and the flow draw -> plain request -> QgsTask -> dock + "MGIMM descriptions" layer.

Errors reach the user in the message bar with what to do (and a Details button with all of it),
never as a traceback dialog. MGIMM's result layers are kept above rasters added later.
"""

from __future__ import annotations

import os

from qgis.core import (Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsMapLayerType, QgsMessageLog,
                       QgsProject, QgsWkbTypes)
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .client import ClientError
from .fields import plain_value
from .map_tool import POLYGON, RECTANGLE, RegionMapTool
from .message_bar import push_message
from .messages import qgis_words
from .provider import MGIMMProvider
from .request_data import RequestError, describe_params, request_bands
from .settings import PluginSettings, reset_shared_client, shared_client
from .task import RequestTask

MENU = "&MGIMM"
ICON = os.path.join(os.path.dirname(__file__), "icon.svg")
ICONS = os.path.join(os.path.dirname(__file__), "icons")
#: regions per worker request: a cancel keeps the chunks that finished (the worker answers a
#: cancelled request with an error only); server and endpoint modes send chips, in requests of
#: server_chips.CHIPS_PER_REQUEST regions
WORKER_CHUNK = 16
TITLES = {"worker_missing": "MGIMM worker not available", "unreachable": "MGIMM server unreachable",
          "region_outside": "Region outside the raster", "no_crs": "Raster without CRS",
          "unauthorized": "MGIMM server refused the token", "cancelled": "MGIMM"}


def guided_summary(entries) -> str:
    """What a guided request did, for the panel's status line ("" for an unguided one)."""
    if not any("guide_objects" in entry for entry in entries):
        return ""
    from .layer import OBJECTS_TITLE

    used = sum(entry.get("guide_objects") or 0 for entry in entries)
    left = sum(entry.get("guide_objects_left") or 0 for entry in entries)
    if not used:
        return "; no guide object lies in the region(s) (an object counts when its centre is inside)"
    text = f"; {used} guide object{'s' * (used != 1)} described, in the \"{OBJECTS_TITLE}\" layer"
    if left:
        text += f" ({left} more left out: the largest ones per region are used)"
    return text


class MGIMMPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions: list = []
        self.toolbar = None
        self.dock = None
        self.tools: dict = {}
        self.tasks: dict = {}    # task -> its context (raster CRS, regions), kept alive while running
        self.last_result = None
        self.last_error = None
        self.guide_action = None
        self.diagnostics_task = None
        self.diagnostics_dialog = None

    # ------------------------------------------------------------------ lifecycle
    def initProcessing(self):
        if self.provider is None:
            self.provider = MGIMMProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        from .dock import DescriptionDock

        self.initProcessing()
        canvas = self.iface.mapCanvas()
        self.toolbar = self.iface.addToolBar("MGIMM")
        self.toolbar.setObjectName("MGIMMToolbar")
        self.dock = DescriptionDock(self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)

        for shape, text in ((POLYGON, "Describe a drawn polygon"), (RECTANGLE, "Describe a drawn rectangle")):
            action = self._action(text, checkable=True, icon=f"{shape}.svg")
            tool = RegionMapTool(canvas, shape)
            tool.setAction(action)
            tool.regionDrawn.connect(self.describe_drawn)
            action.triggered.connect(lambda checked, t=tool: self.iface.mapCanvas().setMapTool(t))
            self.tools[shape] = tool
            self.dock.add_tool(action)
        self.dock.add_tool(self._action("Describe selected features", callback=self.describe_selected,
                                        icon="selected.svg"))
        self.guide_action = self._action("Describe with guide layer", checkable=True, icon="guide.svg")
        self.guide_action.toggled.connect(self._guide_toggled)
        self.dock.add_tool(self.guide_action)
        self._action("Show the MGIMM panel", callback=self.dock.show, toolbar=False, icon="panel.svg")
        self._action("MGIMM settings…", callback=self.open_settings, toolbar=False, icon="settings.svg")
        self._action("MGIMM diagnostics…", callback=self.show_diagnostics, toolbar=False, icon="diagnostics.svg")
        self.dock.show_bands()
        QgsProject.instance().layersAdded.connect(self._layers_added)

    def _layers_added(self, layers) -> None:
        """After QGIS has placed new layers in the layer tree (and the panel's raster choice took the
        first raster): results back on top of them, the Bands row for the chosen raster."""
        QTimer.singleShot(0, self._after_layers_added)

    def _after_layers_added(self) -> None:
        from .layer import keep_results_on_top

        keep_results_on_top()
        if self.dock is not None:
            self.dock.show_bands()

    def _action(self, text, callback=None, checkable=False, toolbar=True, icon=None) -> QAction:
        path = os.path.join(ICONS, icon) if icon else ICON
        action = QAction(QIcon(path), text, self.iface.mainWindow())
        action.setProperty("mgimm_icon", path)
        action.setToolTip(text)
        action.setCheckable(checkable)
        if callback is not None:
            action.triggered.connect(lambda checked=False: callback())
        if toolbar:
            self.toolbar.addAction(action)
        self.iface.addPluginToMenu(MENU, action)
        self.actions.append(action)
        return action

    def _guide_toggled(self, on: bool) -> None:
        """Guided mode: the panel shows its guide layer choice (the first polygon layer that is not
        ours when none is chosen); drawn and selected regions are then described with it."""
        if self.dock is None:
            return
        self.dock.guide_row.setVisible(on)
        combo = self.dock.guide_combo
        if on and combo.currentLayer() is None:
            for layer in QgsProject.instance().mapLayers().values():
                if (layer.type() == QgsMapLayerType.VectorLayer and layer.geometryType() == QgsWkbTypes.PolygonGeometry
                        and not layer.customProperty("mgimm_geo/descriptions")
                        and not layer.customProperty("mgimm_geo/objects")):
                    combo.setLayer(layer)
                    break

    def guide_layer(self):
        """The guide layer when "Describe with guide layer" is on (None when off)."""
        if self.guide_action is None or not self.guide_action.isChecked() or self.dock is None:
            return None
        return self.dock.guide_combo.currentLayer()

    def unload(self):
        try:
            QgsProject.instance().layersAdded.disconnect(self._layers_added)
        except TypeError:   # initGui did not run
            pass
        for task in list(self.tasks):
            task.on_done = None
            task.cancel()
        self.tasks.clear()
        canvas = self.iface.mapCanvas()
        for tool in self.tools.values():
            if canvas.mapTool() is tool:
                canvas.unsetMapTool(tool)
            tool.remove_rubber_band()
        self.tools.clear()
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        reset_shared_client()

    # ------------------------------------------------------------------ user actions
    def open_settings(self):
        from .settings_dialog import SettingsDialog

        SettingsDialog(PluginSettings.load(), self.iface.mainWindow()).exec_()

    def show_diagnostics(self):
        """Ask the worker/server for its diagnostics (a task: it may have to start) and show them."""
        settings = PluginSettings.load()
        try:
            client = shared_client(settings)
        except ClientError as exc:
            self._diagnostics_done(None, settings, exc)
            return None
        task = RequestTask("MGIMM: diagnostics", client, "diagnostics", {},
                           on_done=lambda t: self._diagnostics_done(t.result, settings, t.error))
        self.diagnostics_task = task          # kept alive while it runs
        QgsApplication.taskManager().addTask(task)
        return task

    def _diagnostics_done(self, reply, settings, error):
        from .diagnostics import DiagnosticsDialog, report_text

        self.diagnostics_task = None
        self.diagnostics_dialog = DiagnosticsDialog(report_text(settings, reply, error, self.last_error),
                                                    self.iface.mainWindow())
        self.diagnostics_dialog.show()

    def raster_layer(self):
        """The raster chosen in the panel, else the active layer when it is a raster."""
        layer = self.dock.raster_combo.currentLayer() if self.dock is not None else None
        if layer is None:
            active = self.iface.activeLayer()
            if active is not None and active.type() == QgsMapLayerType.RasterLayer:
                layer = active
        return layer

    def describe_drawn(self, geometry):
        """A region drawn with a map tool (canvas CRS)."""
        self.describe([geometry], self.iface.mapCanvas().mapSettings().destinationCrs())

    def describe_selected(self):
        layer = self.iface.activeLayer()
        if (layer is None or layer.type() != QgsMapLayerType.VectorLayer
                or layer.geometryType() != QgsWkbTypes.PolygonGeometry or layer.selectedFeatureCount() == 0):
            self.warn("MGIMM", "Select polygons in a polygon layer (and make it the active layer), then "
                               "choose \"Describe selected features\" again.")
            return
        features = list(layer.getSelectedFeatures())
        names = layer.fields().names()
        properties = [{name: plain_value(f.attribute(name)) for name in names} for f in features]
        self.describe([f.geometry() for f in features], layer.crs(), properties)

    def describe(self, geometries, crs: QgsCoordinateReferenceSystem, properties=None):
        """Build the request on the main thread and start a task for it."""
        raster = self.raster_layer()
        if raster is None:
            self.warn("MGIMM", "Add a raster layer and choose it in the MGIMM panel (or make it the active "
                               "layer) before drawing a region.")
            return None
        settings = PluginSettings.load()
        canvas = self.iface.mapCanvas()
        guide = self.guide_layer()
        if self.guide_action is not None and self.guide_action.isChecked() and guide is None:
            self.warn("MGIMM", "Choose the guide layer (a polygon layer of objects) in the MGIMM panel, or turn "
                               "\"Describe with guide layer\" off.")
            return None
        first_id = self._next_region_id(settings)
        try:
            params = describe_params(raster, geometries, crs, embed=settings.cuts_chips,
                                     properties=properties, prompt=settings.prompt,
                                     max_new_tokens=settings.max_new_tokens,
                                     canvas_units_per_pixel=self._canvas_units_in(raster, canvas),
                                     first_id=first_id, guide_layer=guide, bands=request_bands(raster))
            if not settings.cuts_chips:
                params["_chunk"] = WORKER_CHUNK
            client = shared_client(settings)
        except (RequestError, ClientError) as exc:
            self.report(getattr(exc, "code", "bad_input"), str(exc))
            return None
        self._last_region_id = first_id + len(params["regions"]) - 1
        count = len(params["regions"])
        guided = f" with the guide objects of {guide.name()}" if guide is not None else ""
        task = RequestTask(f"MGIMM: describing {count} region{'s' * (count != 1)} of {raster.name()}{guided}",
                           client, "describe", params, on_done=self._describe_done)
        self.tasks[task] = {"crs": QgsCoordinateReferenceSystem(raster.crs()), "settings": settings,
                            "scene": (f"{raster.name()} ({raster.source()})" if "_temp" in params
                                      else params.get("raster") or params.get("raster_name")),
                            "rendered": "_temp" in params,
                            "regions": params["regions"]}
        if self.dock is not None:
            self.dock.follow(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def _next_region_id(self, settings) -> int:
        """Drawn regions are numbered on from the largest numeric region_id of the descriptions layer
        (and of requests still running), so every feature there keeps its own id."""
        from qgis.core import QgsVectorLayer

        from .layer import GPKG_LAYER

        largest = getattr(self, "_last_region_id", 0)
        path = settings.effective_layer_path()
        if os.path.exists(path):
            layer = QgsVectorLayer(f"{path}|layername={GPKG_LAYER}", "ids", "ogr")
            if layer.isValid() and layer.fields().indexFromName("region_id") >= 0:
                for value in layer.uniqueValues(layer.fields().indexFromName("region_id")):
                    if str(value).isdigit():
                        largest = max(largest, int(value))
        return largest + 1

    @staticmethod
    def _canvas_units_in(raster, canvas) -> float:
        """The canvas's map units per pixel, roughly, in the raster's CRS units (for web layers)."""
        try:
            extent = canvas.mapSettings().visibleExtent()
            from qgis.core import QgsCoordinateTransform
            transform = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), raster.crs(),
                                               QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
            return extent.width() / max(1, canvas.width())
        except Exception:  # an invalid transform: the chip falls back to 512 px across
            return 0.0

    # ------------------------------------------------------------------ results
    def _describe_done(self, task):
        context = self.tasks.pop(task, None)
        if context is None:
            return
        if task.error is not None:
            self.last_error = task.error
            if self.dock is not None:
                self.dock.task_failed(qgis_words(task.error.message))
            self.report(task.error.code, task.error.message)
            return
        result = task.result or {}
        self.last_result = result
        entries = result.get("regions") or []
        try:
            self._add_features(entries, context)
        except OSError as exc:
            self.report("bad_input", str(exc))
        for line in result.get("warnings") or []:
            self.warn("MGIMM: imagery unlike the model's", line)
        failed = [e for e in entries if e.get("error")]
        asked = len(context["regions"])
        if self.dock is not None:
            self.dock.show_results(entries)
            done = f"{len(entries) - len(failed)} of {asked} region(s) described in {task.elapsed:.1f} s"
            done += guided_summary(entries)
            self.dock.task_done(f"Cancelled: {done}; the finished ones are kept." if result.get("cancelled")
                                else done)
        for entry in failed:
            self.report(entry.get("error_code") or "bad_input", f"Region {entry.get('id')}: {entry['error']}")

    def _add_features(self, entries, context):
        from .layer import add_region_features, descriptions_layer, feature_values

        settings = context["settings"]
        layer = descriptions_layer(settings.effective_layer_path(), context["crs"])
        self._end_map_renders()
        wkt_by_id = {r["id"]: r["wkt"] for r in context["regions"]}
        items = []
        for entry in entries:
            wkt = wkt_by_id.get(str(entry.get("id")))
            if wkt is None:
                continue
            values = feature_values(entry, scene=context["scene"], prompt=settings.prompt or None,
                                    run_id="qgis")
            if context.get("rendered"):   # a web layer: its name and source, not the deleted chip file
                values["scene"] = context["scene"]
            items.append((wkt, values))
        self.last_feature_ids = add_region_features(layer, items, context["crs"])
        self.last_object_ids = []
        if any("objects" in entry for entry in entries):
            from .layer import add_object_features, objects_layer

            objects = objects_layer(settings.effective_layer_path(), context["crs"])
            self.last_object_ids = add_object_features(objects, entries, scene=context["scene"]
                                                       if context.get("rendered") else None)

    def _end_map_renders(self) -> None:
        """Before writing result features: renders.py says why. Writing triggers the repaint after."""
        from .renders import RENDER_STOP_WAIT_S, end_map_renders

        canvases = self.iface.mapCanvases() if hasattr(self.iface, "mapCanvases") else [self.iface.mapCanvas()]
        if not end_map_renders(canvases):
            QgsMessageLog.logMessage(f"map renders still running {RENDER_STOP_WAIT_S:g} s after they were "
                                     f"cancelled; writing the results anyway", "MGIMM", Qgis.Warning)

    # ------------------------------------------------------------------ messages
    def report(self, code: str, message: str):
        level = Qgis.Info if code == "cancelled" else Qgis.Warning
        self.warn(TITLES.get(code, "MGIMM"), message, level)

    def warn(self, title: str, message: str, level=Qgis.Warning):
        message = qgis_words(message)
        QgsMessageLog.logMessage(f"{title}: {message}", "MGIMM", level)
        if self.iface is not None:
            push_message(self.iface.messageBar(), title, message, level, 10)
