"""Runs inside the real QGIS desktop (`qgis --code scripts/qgis_desktop_driver.py`), started by
scripts/qgis_desktop_screenshots.sh: it arranges the window, and at each step writes a file into
$MGIMM_SHOT_DIR for the shell script, which does the user's part with xdotool (dragging the
rectangle on the canvas) and takes the pictures with ImageMagick's `import`.

$MGIMM_SHOT_MODE is the scenario:

- plain: 1. the demo scene and AOIs are loaded, the MGIMM panel shows the scene, the "Describe a drawn
  rectangle" tool is on: drag.json gives the screen corners of the AOI object nearest the scene's
  centre; 2. the worker answered: described.json; 3. after the first picture (shot1.done), the
  Processing dialog of "Describe regions" is open: processing.json; 4. after the second picture
  (shot2.done), QGIS exits.
- guided: 1. the demo scene and its truth footprints (truth.gpkg) are loaded, "Describe with guide
  layer" is on with the footprints as the panel's Guide layer, the rectangle tool is on: drag.json
  gives the corners of a rectangle around the four footprints nearest the scene's centre; 2. the
  worker answered and the "MGIMM guide objects" layer is drawn: described.json (with the objects);
  3. after the picture (shot1.done), QGIS exits.
- bands: 1. a 6-band Landsat-5-like stack made from the demo scene (blue, green, red, then three more;
  no colour interpretation, SPACECRAFT_ID=LANDSAT_5) is loaded over the scene and chosen in the panel,
  whose Bands row shows its default (true colour 3,2,1); the rectangle tool is on: drag.json as in
  plain; 2. described.json (with the bands used); 3. after the picture (shot1.done), the "Describe
  scene tiles" dialog runs on the stack and is cancelled once its progress bar shows a percentage; the
  tiles it kept are loaded: processing.json; 4. after the second picture (shot2.done), the
  diagnostics dialog is open: diagnostics.json; 5. after the third picture (shot3.done), QGIS exits.
- real: 1. a real scene (the Landsat 7 sample of ../shared/data, 6 bands) and one AOI over its city are
  loaded, the panel's Bands row is set to 3,2,1 (true colour), the rectangle tool is on: drag.json
  gives the AOI's corners; 2. the worker answered: described.json, with the run's warnings (the demo
  model's card says it never saw a real image); 3. after the picture (shot1.done), QGIS exits.
"""

import builtins
import json
import os

from qgis.core import QgsCoordinateTransform, QgsFillSymbol, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QPoint, QTimer
from qgis.utils import iface, plugins

WORK = os.environ["MGIMM_SHOT_DIR"]
MODE = os.environ.get("MGIMM_SHOT_MODE", "plain")
GUIDED = MODE == "guided"
BANDS = MODE == "bands"
REAL = MODE == "real"
GUIDE_COUNT = 4         # footprints in the guided rectangle
state = {"step": 0, "ticks": 0, "dialog": None}


def write(name, data):
    with open(os.path.join(WORK, name + ".tmp"), "w") as handle:
        json.dump(data, handle)
    os.replace(os.path.join(WORK, name + ".tmp"), os.path.join(WORK, name))


def landsat_stack(scene):
    """A 6-band uint16 stack of `scene`'s pixels as Landsat 5 TM bands 1-5, 7 come (blue, green, red,
    near and short-wave infrared; no colour interpretation), added to the project."""
    from osgeo import gdal

    source = gdal.Open(scene.source())
    blue, green, red = (source.GetRasterBand(b).ReadAsArray().astype("uint16") * 40 for b in (3, 2, 1))
    path = os.path.join(WORK, "LT05_demo_stack.tif")
    stack = gdal.GetDriverByName("GTiff").Create(path, source.RasterXSize, source.RasterYSize, 6, gdal.GDT_UInt16,
                                                 ["TILED=YES", "COMPRESS=DEFLATE"])
    stack.SetGeoTransform(source.GetGeoTransform())
    stack.SetProjection(source.GetProjection())
    # the scene's own tags (training/synthetic/export.py) stay: the stack is still the synthetic world's
    stack.SetMetadata({**source.GetMetadata(), "SPACECRAFT_ID": "LANDSAT_5"})
    for index, (name, data) in enumerate((("SR_B1", blue), ("SR_B2", green), ("SR_B3", red), ("SR_B4", green),
                                          ("SR_B5", red), ("SR_B7", blue)), start=1):
        band = stack.GetRasterBand(index)
        band.WriteArray(data)
        band.SetDescription(name)
        band.SetColorInterpretation(gdal.GCI_Undefined)
    stack = source = None
    layer = QgsRasterLayer(path, "LT05_demo_stack", "gdal")
    renderer = layer.renderer()                 # shown in true colour, as the model sees it (3,2,1)
    renderer.setRedBand(3)
    renderer.setBlueBand(1)
    QgsProject.instance().addMapLayer(layer)
    return layer


def layers():
    """The scene and the vector layer given on the command line (the AOIs, or the guide footprints);
    in the bands scenario the 6-band stack stands for the scene."""
    rasters = [layer for layer in QgsProject.instance().mapLayers().values() if isinstance(layer, QgsRasterLayer)]
    scene = next((layer for layer in rasters if layer.bandCount() == 6), rasters[0]) if BANDS else rasters[0]
    aoi = next(layer for layer in QgsProject.instance().mapLayers().values()
               if isinstance(layer, QgsVectorLayer) and not layer.customProperty("mgimm_geo/descriptions")
               and not layer.customProperty("mgimm_geo/objects"))
    return scene, aoi


def guided_box(plugin, scene, guide):
    """Guided mode on with `guide` as the panel's Guide layer; the rectangle (canvas CRS) around the
    GUIDE_COUNT footprints nearest the scene's centre, a little larger than they are."""
    guide.renderer().setSymbol(QgsFillSymbol.createSimple(   # footprints as an analyst shows them: outlines
        {"style": "no", "outline_color": "40,40,40,160", "outline_width": "0.3"}))
    guide.setName("footprints")
    plugin.guide_action.setChecked(True)
    plugin.dock.guide_combo.setLayer(guide)
    to_canvas = QgsCoordinateTransform(guide.crs(), scene.crs(), QgsProject.instance())
    centre = scene.extent().center()
    boxes = sorted((to_canvas.transformBoundingBox(f.geometry().boundingBox()) for f in guide.getFeatures()),
                   key=lambda b: b.center().distance(centre))[:GUIDE_COUNT]
    box = boxes[0]
    for other in boxes[1:]:
        box.combineExtentWith(other)
    return box.buffered(max(box.width(), box.height()) * 0.1)


def tick():
    state["ticks"] += 1
    plugin = plugins.get("mgimm_geo")
    canvas = iface.mapCanvas()
    if state["step"] == 0:
        if plugin is None or len(QgsProject.instance().mapLayers()) < 2 or state["ticks"] < 6:
            return
        window = iface.mainWindow()
        window.setGeometry(0, 0, 1400, 900)
        scene, aoi = layers()
        if BANDS:
            scene = landsat_stack(scene)
        plugin.dock.raster_combo.setLayer(scene)
        plugin.dock.show_bands(scene)
        if REAL:                                # as a user sets a 6-band Landsat 7 file to true colour
            for combo, band in zip(plugin.dock.band_combos, (3, 2, 1)):
                combo.setBand(band)
        plugin.dock.show()
        plugin.dock.raise_()
        QgsProject.instance().setCrs(scene.crs())
        if GUIDED:
            box = guided_box(plugin, scene, aoi)
            view = box.buffered(max(box.width(), box.height()) * 0.15)
        else:
            aoi.setOpacity(0.0)                 # the AOI outlines would hide the drawn region
            to_canvas = QgsCoordinateTransform(aoi.crs(), scene.crs(), QgsProject.instance())
            centre = scene.extent().center()
            boxes = [to_canvas.transformBoundingBox(f.geometry().boundingBox()) for f in aoi.getFeatures()]
            box = min(boxes, key=lambda b: b.center().distance(centre))     # the AOI object nearest the centre
            view = box.buffered(max(box.width(), box.height()) * (0.6 if REAL else 4))
        canvas.setExtent(view)
        canvas.refresh()
        state["box"] = box
        plugin.actions[1].trigger()             # "Describe a drawn rectangle"
        state["step"] = 1
        state["ticks"] = 0
    elif state["step"] == 1 and state["ticks"] > 6:
        box = state["box"] if GUIDED or REAL else state["box"].buffered(
            max(state["box"].width(), state["box"].height()) * 0.25)
        transform = canvas.getCoordinateTransform()
        corners = []
        for x, y in ((box.xMinimum(), box.yMaximum()), (box.xMaximum(), box.yMinimum())):
            pixel = transform.transform(x, y)
            point = canvas.mapToGlobal(QPoint(round(pixel.x()), round(pixel.y())))
            corners.append([point.x(), point.y()])
        write("drag.json", {"from": corners[0], "to": corners[1]})
        state["step"] = 2
    elif state["step"] == 2:
        if plugin.last_result is None and plugin.last_error is None:
            return
        canvas.refresh()
        if state.get("settle", 0) < 8:          # let the new layer render
            state["settle"] = state.get("settle", 0) + 1
            return
        error = None if plugin.last_error is None else plugin.last_error.message
        entries = (plugin.last_result or {}).get("regions") or []
        keys = ("id", "description", "attributes", "guide_objects", "guide_objects_left")
        write("described.json", {"error": error, "bands": [c.currentBand() for c in plugin.dock.band_combos]
                                  if plugin.dock.bands_row.isVisible() else None,
                                 "warnings": (plugin.last_result or {}).get("warnings"), "regions": [
            {**{k: e.get(k) for k in keys},
             "objects": [{k: o.get(k) for k in ("region_id", "object", "color", "shape", "size", "attribute_text")}
                         for o in e.get("objects") or []]} for e in entries]})
        state["step"] = 5 if GUIDED or REAL else 3
        state["settle"] = 0
    elif state["step"] == 3 and BANDS and os.path.exists(os.path.join(WORK, "shot1.done")):
        import processing

        scene, _ = layers()
        dialog = processing.createAlgorithmDialog("mgimm:describe_tiles", {
            "INPUT": scene.id(), "TILE_SIZE": 64, "OUTPUT": os.path.join(WORK, "tiles.gpkg")})
        dialog.setGeometry(700, 120, 680, 620)
        dialog.show()
        dialog.runButton().click()
        state["dialog"] = dialog
        state["step"] = 10
    elif state["step"] == 10:
        from qgis.PyQt.QtWidgets import QProgressBar

        bar = state["dialog"].findChild(QProgressBar)
        state.setdefault("percentages", []).append(bar.value() if bar is not None else None)
        if bar is not None and bar.maximum() == 100 and 0 < bar.value() < 100:
            state["dialog"].cancelButton().click()
            state["step"] = 11
    elif state["step"] == 11:
        loaded = QgsProject.instance().mapLayersByName("MGIMM tiles")
        if not loaded:
            return
        if state.get("settle", 0) < 16:
            if state.get("settle", 0) == 0:
                canvas.setExtent(layers()[0].extent())   # the whole stack: the tiles kept and the rest
            state["settle"] = state.get("settle", 0) + 1
            canvas.refresh()
            return
        order = [node.layer().name() for node in QgsProject.instance().layerTreeRoot().findLayers()]
        write("processing.json", {"tiles_kept": loaded[0].featureCount(), "layer_order": order,
                                  "percentages_seen": [p for p in state["percentages"] if p]})
        state["step"] = 12
    elif state["step"] == 12 and os.path.exists(os.path.join(WORK, "shot2.done")):
        state["dialog"].close()
        plugin.show_diagnostics()               # Plugins > MGIMM > MGIMM diagnostics…
        state["step"] = 13
        state["ticks"] = 0
    elif state["step"] == 13 and plugin.diagnostics_dialog is not None and state["ticks"] > 4:
        dialog = plugin.diagnostics_dialog
        dialog.setGeometry(300, 150, 760, 440)
        dialog.raise_()
        state["step"] = 14
        state["ticks"] = 0
    elif state["step"] == 14 and state["ticks"] > 4:
        frame = plugin.diagnostics_dialog.frameGeometry()
        write("diagnostics.json", {"crop": f"{frame.width()}x{frame.height()}+{frame.x()}+{frame.y()}",
                                   "text": plugin.diagnostics_dialog.text.toPlainText()})
        state["step"] = 5
    elif state["step"] == 3 and os.path.exists(os.path.join(WORK, "shot1.done")):
        import processing

        scene, aoi = layers()
        dialog = processing.createAlgorithmDialog("mgimm:describe_regions", {"INPUT": scene.id(), "AOI": aoi.id()})
        dialog.setGeometry(250, 80, 900, 720)
        dialog.show()
        state["dialog"] = dialog
        state["step"] = 4
        state["ticks"] = 0
    elif state["step"] == 4 and state["ticks"] > 6:
        frame = state["dialog"].frameGeometry()
        write("processing.json", {"crop": f"{frame.width()}x{frame.height()}+{frame.x()}+{frame.y()}"})
        state["step"] = 5
    elif state["step"] == 5 and os.path.exists(os.path.join(WORK, "shot1.done" if GUIDED or REAL else
                                                            "shot3.done" if BANDS else "shot2.done")):
        os._exit(0)                             # no "save the project?" question, no teardown


def guarded_tick():
    try:
        tick()
    except Exception as exc:  # a failure ends the run with the reason, not a hung script
        write("failed.json", {"error": f"{type(exc).__name__}: {exc}"})
        os._exit(1)


timer = QTimer()
timer.timeout.connect(guarded_tick)
timer.start(500)
builtins._mgimm_desktop_driver = (timer, guarded_tick)   # --code's namespace goes away; the timer must not
