"""The panel and the tools feel like QGIS's own: the dock narrows, a request's regions are listed and
browsable, a double click closes a polygon without starting the next, every action has its own
icon, settings have browse buttons, messages name QGIS settings (not CLI flags), web-layer rows name
the layer, drawn regions get unique ids."""

import os

from qgis.core import Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import QEvent, Qt

from plugin_fixtures import REPO, messages
from test_map_tool_and_requests import click, show_layer_on_canvas, utm_points


def test_dock_narrows_like_qgis_panels(plugin):
    assert plugin.dock.widget().minimumSizeHint().width() < 260       # was 662 px
    assert plugin.dock.minimumSizeHint().width() < 280


def test_every_action_has_its_own_icon_and_they_ship_in_the_zip(plugin):
    import sys
    sys.path.insert(0, str(REPO / "qgis_plugin"))
    from build_zip import plugin_files

    icons = [action.property("mgimm_icon") for action in plugin.actions]
    assert len(icons) == len(set(icons)) == 7 and all(os.path.isfile(path) and "/icons/" in path for path in icons)
    shipped = {str(path) for path in plugin_files()}
    assert {f"icons/{os.path.basename(path)}" for path in icons if "icons" in path} <= shipped
    assert all(not action.icon().isNull() for action in plugin.actions)


def test_results_of_a_request_are_listed_and_browsable(plugin):
    entries = [{"id": str(i), "description": f"region {i} text", "attributes": {"color": "red", "object": f"car {i}"},
                "valid_fraction": 1.0} for i in (7, 8, 9)]
    plugin.dock.show_results(entries)
    assert plugin.dock.results.count() == 3 and plugin.dock.results.item(1).text() == "8: red car 8"
    assert plugin.dock.description.toPlainText() == "region 7 text"
    plugin.dock.results.setCurrentRow(2)
    assert plugin.dock.description.toPlainText() == "region 9 text"


def test_a_guided_result_says_which_guide_object_got_which_attributes(plugin):
    from mgimm_geo.plugin import guided_summary

    objects = [{"region_id": "13", "object": "building", "attribute_text": "a small red rectangular building"},
               {"region_id": "4", "object": "vehicle", "attribute_text": "a small red rectangular vehicle"}]
    entry = {"id": "1", "description": "Two red things.", "attributes": {"name": "vehicle", "color": "red"},
             "guide_objects": 2, "guide_objects_left": 1, "objects": objects}
    plugin.dock.show_results([entry])
    assert plugin.dock.description.toPlainText() == ("Two red things.\n\nGuide objects:\n"
                                                     "13: a small red rectangular building\n"
                                                     "4: a small red rectangular vehicle")
    table = plugin.dock.attributes
    shown = {table.item(i, 0).text(): table.item(i, 1).text() for i in range(table.rowCount())}
    assert shown["object"] == "vehicle" and "name" not in shown      # the layer's field name, not the wire's
    assert shown["guide_objects"] == "2" and shown["guide_objects_left"] == "1"
    plugin.dock.show_results([dict(entry, row={"region_id": "1", "no_object_p": 0.000592816, "object_p": 0.98768})])
    shown = {table.item(i, 0).text(): table.item(i, 1).text() for i in range(table.rowCount())}
    assert shown["no_object_p"] == "0.000593"            # the model's own doubt, from the layer's row
    assert shown["object_p"] == "0.9877"                 # and how sure it was of the class it named
    one_row = plugin.dock.results.maximumHeight()                      # a single region: the list is one row tall
    plugin.dock.show_results([dict(entry, id=str(i)) for i in range(8)])
    assert one_row < 60 and plugin.dock.results.maximumHeight() > 4 * one_row - 4 * plugin.dock.results.frameWidth()
    assert guided_summary([entry]) == ('; 2 guide objects described, in the "MGIMM guide objects" layer '
                                       '(1 more left out: the largest ones per region are used)')
    assert "no guide object" in guided_summary([{"id": "1", "guide_objects": 0, "guide_objects_left": 0}])
    assert guided_summary([{"id": "1", "description": "unguided"}]) == ""


def test_double_click_closes_the_polygon_and_starts_nothing(plugin_module, qgis_canvas, scene_layer):
    from mgimm_geo.map_tool import RegionMapTool
    from qgis.gui import QgsMapMouseEvent
    from test_map_tool_and_requests import pixel_of

    to_canvas = show_layer_on_canvas(qgis_canvas, scene_layer)
    tool = RegionMapTool(qgis_canvas, "polygon")
    drawn = []
    tool.regionDrawn.connect(drawn.append)
    corners = [to_canvas.transform(p) for p in utm_points(scene_layer, [(0.2, 0.2), (0.6, 0.25), (0.4, 0.7)])]
    for point in corners[:-1]:
        click(tool, qgis_canvas, point, QEvent.MouseButtonPress)
        click(tool, qgis_canvas, point, QEvent.MouseButtonRelease)
    last = corners[-1]   # Qt's double click: press, release, double click, release
    click(tool, qgis_canvas, last, QEvent.MouseButtonPress)
    click(tool, qgis_canvas, last, QEvent.MouseButtonRelease)
    tool.canvasDoubleClickEvent(QgsMapMouseEvent(qgis_canvas, QEvent.MouseButtonDblClick, pixel_of(qgis_canvas, last),
                                                 Qt.LeftButton, Qt.LeftButton, Qt.NoModifier))
    click(tool, qgis_canvas, last, QEvent.MouseButtonRelease)
    assert len(drawn) == 1 and len(drawn[0].asPolygon()[0]) == 4
    assert tool.points == []          # no new polygon started by the double click's release
    click(tool, qgis_canvas, corners[0], QEvent.MouseButtonPress)
    click(tool, qgis_canvas, corners[0], QEvent.MouseButtonRelease)
    assert len(tool.points) == 1      # the next click starts the next polygon as usual


def test_messages_name_qgis_settings_not_cli_flags(plugin, iface):
    plugin.warn("MGIMM", "out.gpkg exists; use --overwrite or --append, and choose bands with -b/--bands.")
    text = messages(iface, Qgis.Warning)[-1]
    assert "--" not in text and "-b/" not in text
    assert '"If the output exists: overwrite"' in text and "the Bands row of the MGIMM panel" in text


def test_settings_have_browse_buttons(plugin_module):
    from mgimm_geo.client import worker_argv
    from mgimm_geo.settings import PluginSettings
    from mgimm_geo.settings_dialog import SettingsDialog

    dialog = SettingsDialog(PluginSettings(model="/models/m", layer_path="/data/d.gpkg"))
    assert isinstance(dialog.model, QgsFileWidget) and dialog.model.storageMode() == QgsFileWidget.GetDirectory
    assert isinstance(dialog.vision, QgsFileWidget) and dialog.vision.storageMode() == QgsFileWidget.GetDirectory
    assert dialog.layer_path.storageMode() == QgsFileWidget.SaveFile and "gpkg" in dialog.layer_path.filter()
    dialog.set_worker_program("/opt/my env/bin/mgimm-geo")
    assert worker_argv(dialog.worker_command.text()) == ["/opt/my env/bin/mgimm-geo", "worker"]
    edited = dialog.edited_settings()
    assert (edited.model, edited.layer_path) == ("/models/m", "/data/d.gpkg")


def test_web_layer_rows_name_the_layer_and_drawn_ids_are_unique(plugin, plugin_module, tmp_path, qgis_new_project):
    from mgimm_geo.layer import descriptions_layer
    from mgimm_geo.settings import PluginSettings

    settings = PluginSettings(layer_path=str(tmp_path / "d.gpkg"))
    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    wkt = "POLYGON((500100 4099700, 500300 4099700, 500300 4099900, 500100 4099700))"
    entry = {"id": "1", "description": "a road", "scene": "/tmp/mgimm_chip_deleted.tif", "model": "tiny"}
    context = {"crs": crs, "settings": settings, "scene": "Esri imagery (type=xyz&url=https://example.test/{z}/{x}/{y})",
               "rendered": True, "regions": [{"id": "1", "wkt": wkt}]}
    plugin._add_features([entry], context)
    layer = descriptions_layer(settings.effective_layer_path(), crs)
    feature = next(layer.getFeatures())
    assert feature["scene"] == context["scene"]                   # not the deleted temp chip
    plugin._last_region_id = 0
    assert plugin._next_region_id(settings) == 2                   # numbered on from the layer's ids


def test_map_renders_end_before_results_are_written(plugin, plugin_module, tmp_path, qgis_new_project,
                                                    qgis_canvas):
    """A canvas render in flight over the descriptions GeoPackage is cancelled and its threads have
    ended before the plugin writes to the file (a render thread reading it while the main thread
    wrote crashed QGIS 3.22, once in CI even after stopRendering(), which does not wait), without
    waiting for the whole render (which takes far longer than the write)."""
    import time

    from mgimm_geo.layer import add_region_features, descriptions_layer
    from mgimm_geo.renders import render_threads
    from mgimm_geo.settings import PluginSettings
    from plugin_fixtures import wait_until

    settings = PluginSettings(layer_path=str(tmp_path / "d.gpkg"))
    crs = QgsCoordinateReferenceSystem("EPSG:32633")

    def square(i: int) -> str:
        x, y = 500000 + (i % 100) * 20, 4099000 + (i // 100) * 20
        return f"POLYGON(({x} {y}, {x + 15} {y}, {x + 15} {y + 15}, {x} {y + 15}, {x} {y}))"

    layer = descriptions_layer(settings.effective_layer_path(), crs)
    add_region_features(layer, [(square(i), {"region_id": str(i), "description": f"square {i}"})
                                for i in range(3000)], crs)     # labelled squares: seconds to draw
    show_layer_on_canvas(qgis_canvas, layer)
    cancelled = []
    qgis_canvas.mapRefreshCanceled.connect(lambda: cancelled.append(True))
    try:
        for attempt in range(3):
            cancelled.clear()
            qgis_canvas.refresh()
            wait_until(qgis_canvas.isDrawing, 10, "the canvas to start drawing")
            wait_until(lambda: render_threads() > 0, 10, "a render thread to start")
            entry = {"id": "w", "description": "a road", "scene": "scene.tif", "model": "tiny"}
            context = {"crs": crs, "settings": settings, "scene": "scene.tif",
                       "regions": [{"id": "w", "wkt": square(5000 + attempt)}]}
            started = time.monotonic()
            plugin._add_features([entry], context)
            assert cancelled == [True] and render_threads() == 0 and not qgis_canvas.isDrawing()
            assert time.monotonic() - started < 5
        # as the plugin writes: in a task's finished() (renders.py counts running tasks by status,
        # since task managers differ in when a finished task stops counting as active)
        cancelled.clear()
        qgis_canvas.refresh()
        wait_until(lambda: render_threads() > 0, 10, "a render thread to start")
        seen = []

        def write(exception, result=None):
            plugin._add_features([entry], dict(context, regions=[{"id": "w", "wkt": square(5010)}]))
            seen.append(render_threads())

        task = QgsTask.fromFunction("write results", lambda task: None, on_finished=write)
        QgsApplication.taskManager().addTask(task)
        wait_until(lambda: seen, 30, "the task's finished()")
        assert seen == [0] and cancelled == [True]
        assert layer.featureCount() == 3004
    finally:
        qgis_canvas.mapRefreshCanceled.disconnect()
        qgis_canvas.setLayers([])


def test_columns_the_core_adds_when_used_become_fields_of_the_descriptions_layer(plugin, plugin_module, tmp_path,
                                                                               qgis_new_project):
    """no_object_p and object_p (models with region tokens) and the guide counts reach the plugin's layer as they
    reach the CLI's GeoPackage: a field added when a row first has them."""
    from qgis.core import NULL

    from mgimm_geo.layer import descriptions_layer
    from mgimm_geo.settings import PluginSettings

    settings = PluginSettings(layer_path=str(tmp_path / "d.gpkg"))
    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    wkt = "POLYGON((500100 4099700, 500300 4099700, 500300 4099900, 500100 4099700))"

    def describe(region_id: str, **measured):
        row = {"region_id": region_id, "scene": "s.tif", "description": "a road", **measured}
        plugin._add_features([{"id": region_id, "row": row}],
                             {"crs": crs, "settings": settings, "scene": "s.tif",
                              "regions": [{"id": region_id, "wkt": wkt}]})
        return descriptions_layer(settings.effective_layer_path(), crs)

    assert describe("1").fields().indexFromName("no_object_p") < 0        # no row had it yet
    layer = describe("2", no_object_p=0.125, object_p=0.75, guide_objects=2, guide_objects_left=1, unknown_key="x")
    rows = {f["region_id"]: (f["no_object_p"], f["object_p"], f["guide_objects"], f["guide_objects_left"])
            for f in layer.getFeatures()}
    assert rows == {"1": (NULL, NULL, NULL, NULL), "2": (0.125, 0.75, 2, 1)}
    assert layer.fields().indexFromName("unknown_key") < 0                 # only the core's own columns
