"""Layers written by the plugin or by the CLI open labelled, in the CLI's look, in plain QGIS 3.22
(without the plugin: the style is in the GeoPackage's `layer_styles`), and QGIS 3.22's GDAL reads
their GeoPackage version without a warning."""

import sqlite3

from osgeo import gdal, ogr
from qgis.core import QgsCoordinateReferenceSystem, QgsPalLayerSettings, QgsVectorLayer


def gdal_warnings(path) -> list:
    """What QGIS's GDAL says (warnings included) when it opens `path`."""
    said = []
    gdal.PushErrorHandler(lambda level, number, message: said.append(message))
    try:
        dataset = ogr.Open(str(path))
        assert dataset is not None
        dataset = None
    finally:
        gdal.PopErrorHandler()
    return said


def assert_cli_look(layer, plugin_module):
    from mgimm_geo.fields import LABEL_DISTANCE_MM, REGION_LABEL

    assert layer.labelsEnabled()
    settings = layer.labeling().settings()
    assert settings.fieldName == REGION_LABEL and settings.isExpression
    assert settings.placement == QgsPalLayerSettings.AroundPoint and settings.dist == LABEL_DISTANCE_MM
    assert settings.obstacleSettings().type() != 2        # not PolygonWhole: an enclosing AOI keeps its inner labels
    assert layer.renderer().symbol().color().alpha() == 20      # barely tinted: the object keeps its colour


def test_descriptions_geopackage_opens_labelled_without_the_plugin(plugin_module, qgis_new_project, tmp_path):
    from mgimm_geo.layer import descriptions_layer

    path = tmp_path / "d.gpkg"
    made = descriptions_layer(str(path), QgsCoordinateReferenceSystem("EPSG:32633"))
    assert made.isValid()
    # The file as another user gets it: a copy (SQLite's backup API, so nothing pending is missed),
    # opened by hand with no plugin code and no connection shared with the plugin's layer. (Opening
    # the same file again after QgsProject.clear() crashed QGIS 3.22 now and then: its OGR
    # connection pool still held the deleted layer's dataset.)
    copy = tmp_path / "copy.gpkg"
    with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
        rows = target.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall()
    assert rows == [("regions", 1)]
    fresh = QgsVectorLayer(f"{copy}|layername=regions", "opened by hand", "ogr")   # no plugin code involved
    assert fresh.isValid()
    assert_cli_look(fresh, plugin_module)
    assert gdal_warnings(copy) == []
