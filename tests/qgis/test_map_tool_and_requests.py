"""Map tool geometry capture through simulated canvas events, canvas CRS -> raster CRS, request
checks (no CRS, region outside), chips for non-file rasters, and the descriptions layer."""

import base64

import pytest
from osgeo import gdal
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsGeometry, QgsPointXY,
                       QgsProject, QgsRasterLayer, QgsRectangle)
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt

from plugin_fixtures import write_geotiff

CANVAS_CRS = QgsCoordinateReferenceSystem("EPSG:3857")


def show_layer_on_canvas(canvas, layer):
    """Canvas in Web Mercator (so the tool's points need a transform), zoomed to the layer."""
    canvas.setDestinationCrs(CANVAS_CRS)
    to_canvas = QgsCoordinateTransform(layer.crs(), CANVAS_CRS, QgsProject.instance())
    extent = to_canvas.transformBoundingBox(layer.extent())
    extent.scale(1.5)
    canvas.setLayers([layer])
    canvas.setExtent(extent)
    canvas.refresh()
    return to_canvas


def pixel_of(canvas, point: QgsPointXY) -> QPoint:
    device = canvas.getCoordinateTransform().transform(point)
    return QPoint(round(device.x()), round(device.y()))


def click(tool, canvas, point, kind, button=Qt.LeftButton):
    event = QgsMapMouseEvent(canvas, kind, pixel_of(canvas, point), button, button, Qt.NoModifier)
    {QEvent.MouseButtonPress: tool.canvasPressEvent, QEvent.MouseMove: tool.canvasMoveEvent,
     QEvent.MouseButtonRelease: tool.canvasReleaseEvent}[kind](event)


def utm_points(layer, fractions):
    e = layer.extent()
    return [QgsPointXY(e.xMinimum() + fx * e.width(), e.yMinimum() + fy * e.height()) for fx, fy in fractions]


def draw_polygon(tool, canvas, points_canvas):
    for point in points_canvas:
        click(tool, canvas, point, QEvent.MouseButtonPress)
        click(tool, canvas, point, QEvent.MouseButtonRelease)
        click(tool, canvas, point, QEvent.MouseMove)
    click(tool, canvas, points_canvas[-1], QEvent.MouseButtonRelease, Qt.RightButton)


def test_polygon_tool_emits_the_drawn_polygon_in_canvas_crs(plugin_module, qgis_canvas, scene_layer):
    from mgimm_geo.map_tool import RegionMapTool

    to_canvas = show_layer_on_canvas(qgis_canvas, scene_layer)
    tool = RegionMapTool(qgis_canvas, "polygon")
    drawn = []
    tool.regionDrawn.connect(drawn.append)
    corners = [to_canvas.transform(p) for p in utm_points(scene_layer, [(0.2, 0.2), (0.6, 0.25), (0.4, 0.7)])]
    draw_polygon(tool, qgis_canvas, corners)

    assert len(drawn) == 1
    ring = drawn[0].asPolygon()[0]
    tolerance = 2 * qgis_canvas.mapUnitsPerPixel()  # clicks land on whole pixels
    assert len(ring) == 4 and ring[0] == ring[-1]
    for got, want in zip(ring, corners):
        assert got.distance(want) < tolerance
    assert tool.points == []  # ready for the next polygon


def test_rectangle_tool_press_drag_release(plugin_module, qgis_canvas, scene_layer):
    from mgimm_geo.map_tool import RegionMapTool

    to_canvas = show_layer_on_canvas(qgis_canvas, scene_layer)
    tool = RegionMapTool(qgis_canvas, "rectangle")
    drawn = []
    tool.regionDrawn.connect(drawn.append)
    a, b = [to_canvas.transform(p) for p in utm_points(scene_layer, [(0.1, 0.1), (0.5, 0.6)])]
    click(tool, qgis_canvas, a, QEvent.MouseButtonPress)
    click(tool, qgis_canvas, b, QEvent.MouseMove)
    click(tool, qgis_canvas, b, QEvent.MouseButtonRelease)
    assert len(drawn) == 1
    box = drawn[0].boundingBox()
    tolerance = 2 * qgis_canvas.mapUnitsPerPixel()
    assert abs(box.xMinimum() - a.x()) < tolerance and abs(box.yMaximum() - b.y()) < tolerance


def test_request_is_in_the_raster_crs_with_its_path(plugin_module, scene_layer):
    from mgimm_geo.request_data import describe_params

    to_canvas = QgsCoordinateTransform(scene_layer.crs(), CANVAS_CRS, QgsProject.instance())
    utm = utm_points(scene_layer, [(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)])
    drawn = QgsGeometry.fromPolygonXY([[to_canvas.transform(p) for p in utm] + [to_canvas.transform(utm[0])]])
    params = describe_params(scene_layer, [drawn], CANVAS_CRS, max_new_tokens=7)

    assert params["raster"] == scene_layer.source()
    assert params["crs"] == "EPSG:32633" and params["max_new_tokens"] == 7 and params["thumbnail"] is True
    back = QgsGeometry.fromWkt(params["regions"][0]["wkt"])
    expected = QgsGeometry.fromPolygonXY([utm + [utm[0]]])
    assert back.symDifference(expected).area() < 1.0  # m², after a round trip through Web Mercator


def test_region_outside_and_raster_without_crs_are_refused(plugin_module, scene_layer, tmp_path):
    from mgimm_geo.request_data import RequestError, describe_params

    far = QgsGeometry.fromRect(QgsRectangle(0, 0, 100, 100))  # Web Mercator, off the coast of Africa
    with pytest.raises(RequestError) as outside:
        describe_params(scene_layer, [far], CANVAS_CRS)
    assert outside.value.code == "region_outside" and "draw it over the raster" in str(outside.value)

    no_crs = QgsRasterLayer(write_geotiff(tmp_path / "no_crs.tif", epsg=None), "no_crs", "gdal")
    no_crs.setCrs(QgsCoordinateReferenceSystem())
    with pytest.raises(RequestError) as missing:
        describe_params(no_crs, [far], CANVAS_CRS)
    assert missing.value.code == "no_crs" and "Assigned coordinate reference system" in str(missing.value)


def test_non_file_raster_goes_as_a_georeferenced_chip(plugin_module, scene_layer, tmp_path):
    """A web layer is rendered through its provider; here the provider's path is forced on a file
    layer (no WMS/XYZ server is reachable in tests) and the chip's georeference is checked."""
    from mgimm_geo.request_data import raster_source, render_chip

    extent = QgsRectangle(500100, 4099700, 500300, 4099900)  # 20 x 20 pixels of 10 m
    chip = render_chip(scene_layer, extent, 10.0, str(tmp_path / "chip.tif"))
    dataset = gdal.Open(chip)
    assert (dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount) == (20, 20, 3)
    assert dataset.GetGeoTransform() == pytest.approx((500100, 10, 0, 4099900, 0, -10))
    assert "32633" in dataset.GetProjection()
    assert dataset.GetRasterBand(2).ReadAsArray().mean() == pytest.approx(80)  # band values kept

    class WebLayer:  # what raster_source sees of an XYZ layer: not provider "gdal"
        def __init__(self, layer):
            self.layer = layer

        def __getattr__(self, name):
            return getattr(self.layer, name)

        def providerType(self):
            return "wms"

    region = QgsGeometry.fromRect(extent)
    embedded = raster_source(WebLayer(scene_layer), [region], embed=True)
    data = base64.b64decode(embedded["raster_b64"])
    assert data[:4] in (b"II*\x00", b"MM\x00*") and embedded["raster_name"] == "scene"


def test_descriptions_layer_has_the_cli_fields_and_takes_features(plugin_module, qgis_new_project, tmp_path):
    from mgimm_geo.layer import FIELD_NAMES, add_region_features, descriptions_layer, feature_values

    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    path = str(tmp_path / "out" / "d.gpkg")
    layer = descriptions_layer(path, crs)
    assert layer.isValid() and layer.name() == "MGIMM descriptions" and layer.crs() == crs
    assert tuple(layer.fields().names())[1:] == FIELD_NAMES  # after the GeoPackage's fid
    assert layer.labelsEnabled() and "object" in layer.labeling().settings().fieldName
    # an entry carries its row as the core's RegionSchema makes it (tests/plugin/test_plugin_fields.py checks that)
    entry = {"id": "1", "description": "a red car", "attributes": {"name": "car", "color": "red", "speed": "fast"},
             "row": {"region_id": "1", "scene": "/data/s.tif", "description": "a red car", "object": "car",
                     "color": "red", "extra_attributes": '{"speed": "fast"}', "valid_fraction": 1.0, "gsd_m": 10.0,
                     "model": "tiny", "created": "2026-01-02T03:04:05.678Z"}}
    values = feature_values(entry, scene="/data/s.tif", prompt=None, run_id="qgis")
    wkt = "POLYGON((500100 4099700, 500300 4099700, 500300 4099900, 500100 4099700))"
    ids = add_region_features(layer, [(wkt, values)], crs)
    assert len(ids) == 1
    feature = next(layer.getFeatures())
    assert feature["object"] == "car" and feature["color"] == "red" and feature["extra_attributes"] == '{"speed": "fast"}'
    assert feature.geometry().area() == pytest.approx(200 * 200 / 2)
    assert descriptions_layer(path, crs) is layer  # found again in the project, not duplicated
