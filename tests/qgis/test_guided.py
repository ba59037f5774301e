""""Describe with guide layer": a polygon layer of the project (here in lon/lat, the raster in UTM)
guides the descriptions of drawn or selected regions; its objects come back as features of the
"MGIMM guide objects" layer (the GeoPackage's `objects` layer), linked to their description by
parent_id, through a real worker and a real server (chips), with the same answers on both; and the
Processing algorithm's GUIDE parameter (worker mode) writes the CLI's `objects` layer."""

import json

import pytest
from osgeo import ogr
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsExpression, QgsExpressionContext,
                       QgsExpressionContextUtils, QgsFeature, QgsGeometry, QgsProcessingContext,
                       QgsProcessingFeedback, QgsProject, QgsRectangle, QgsVectorLayer)
from qgis.PyQt.QtCore import Qt

from plugin_fixtures import WORKER_TIMEOUT, wait_until

UTM = QgsCoordinateReferenceSystem("EPSG:32633")
REGION = QgsRectangle(500100, 4099600, 500400, 4099900)
#: (id, kind, UTM box): two buildings inside REGION, one outside it
BUILDINGS = [(7, "house", (500150, 4099650, 500200, 4099700)), (8, "barn", (500250, 4099750, 500350, 4099820)),
             (9, "shed", (500500, 4099600, 500540, 4099640))]


@pytest.fixture
def guide_layer():
    """The buildings as a memory layer in EPSG:4326 (the plugin reprojects them to the raster's CRS)."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=id:integer&field=kind:string", "buildings", "memory")
    to_lonlat = QgsCoordinateTransform(UTM, QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    features = []
    for fid, kind, box in BUILDINGS:
        geometry = QgsGeometry.fromRect(QgsRectangle(*box)).densifyByCount(3)
        geometry.transform(to_lonlat)
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry)
        feature.setAttributes([fid, kind])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    return layer


def assert_object_look(layer):
    """Guide objects: outlined only, in blue (not the regions' orange fill), labelled "id: colour object"."""
    from mgimm_geo.fields import OBJECT_LABEL, OBJECT_OUTLINE

    symbol = layer.renderer().symbol().symbolLayer(0)
    assert symbol.brushStyle() == Qt.NoBrush and symbol.strokeColor().getRgb() == OBJECT_OUTLINE
    settings = layer.labeling().settings()
    assert layer.labelsEnabled() and settings.isExpression and settings.fieldName == OBJECT_LABEL


def _feature_context(layer, feature):
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(feature)
    return context


def describe_guided(plugin, scene_layer, guide_layer):
    plugin.last_result = plugin.last_error = None
    plugin.dock.raster_combo.setLayer(scene_layer)
    plugin.guide_action.setChecked(True)
    plugin.dock.guide_combo.setLayer(guide_layer)
    assert plugin.dock.guide_row.isVisibleTo(plugin.dock)
    task = plugin.describe([QgsGeometry.fromRect(REGION)], UTM)
    assert task is not None and "buildings" in task.description()
    wait_until(lambda: not plugin.tasks, WORKER_TIMEOUT, "the guided describe task")
    assert plugin.last_error is None, plugin.last_error
    (entry,) = plugin.last_result["regions"]
    return entry


def objects_in(path):
    dataset = ogr.Open(path)
    layer = dataset.GetLayerByName("objects")
    rows = [layer.GetNextFeature() for _ in range(layer.GetFeatureCount())]
    out = [{"region_id": r.GetField("region_id"), "parent_id": r.GetField("parent_id"), "kind": r.GetField("kind"),
            "attribute_text": r.GetField("attribute_text"), "geometry": r.GetGeometryRef().ExportToWkt()} for r in rows]
    dataset = None
    return sorted(out, key=lambda r: r["region_id"])


def test_guide_layer_objects_become_linked_features_in_worker_and_server_mode(
        qgis_new_project, module_plugin, plugin_module, worker_settings, server, scene_layer, guide_layer, tmp_path):
    from mgimm_geo.settings import PluginSettings

    plugin = module_plugin
    entry = describe_guided(plugin, scene_layer, guide_layer)
    assert entry["error"] is None and (entry["guide_objects"], entry["guide_objects_left"]) == (2, 0)
    objects = QgsProject.instance().mapLayersByName("MGIMM guide objects")
    descriptions = QgsProject.instance().mapLayersByName("MGIMM descriptions")[0]
    assert len(objects) == 1 and objects[0].featureCount() == 2
    (region_feature,) = list(descriptions.getFeatures())
    rows = objects_in(worker_settings.effective_layer_path())
    assert [r["region_id"] for r in rows] == ["7", "8"]                     # the shed lies outside the region
    assert {r["parent_id"] for r in rows} == {region_feature["region_id"]} == {entry["id"]}
    assert [r["kind"] for r in rows] == ["house", "barn"]                   # the guide layer's own attributes
    house = ogr.CreateGeometryFromWkt(rows[0]["geometry"])
    assert house.GetEnvelope() == pytest.approx((500150, 500200, 4099650, 4099700), abs=1e-3)   # back in UTM
    relation = QgsProject.instance().relationManager().relation("mgimm_geo_objects_regions")
    assert relation.isValid() and relation.referencedLayer() is descriptions
    assert sorted(f["region_id"] for f in relation.getRelatedFeatures(region_feature)) == ["7", "8"]
    worker_texts = [o["attribute_text"] for o in sorted(entry["objects"], key=lambda o: o["region_id"])]
    assert [r["attribute_text"] for r in rows] == worker_texts
    # the panel says what happened; the objects look apart from their region, and open so without the plugin
    assert plugin.dock.status.text().endswith('; 2 guide objects described, in the "MGIMM guide objects" layer')
    assert all(f"\n{o['region_id']}: {o['attribute_text']}" in plugin.dock.description.toPlainText()
               for o in entry["objects"])
    for layer in (objects[0], QgsVectorLayer(f"{worker_settings.effective_layer_path()}|layername=objects", "o", "ogr")):
        assert_object_look(layer)
    first = next(objects[0].getFeatures())
    label = QgsExpression(objects[0].labeling().settings().fieldName).evaluate(_feature_context(objects[0], first))
    assert label.startswith(f"{first['region_id']}: ")            # the guide id, as the panel lists it

    # server mode: the region goes as its chip, the buildings in the raster's CRS with it; same answers
    url, token = server
    PluginSettings(mode="server", server_url=url, token=token, layer_path=str(tmp_path / "served.gpkg"),
                   max_new_tokens=6).save()
    served = describe_guided(plugin, scene_layer, guide_layer)
    assert served["chip"]["exact"] and served["guide_objects"] == 2
    assert served["description"] == entry["description"]
    assert [o["attribute_text"] for o in sorted(served["objects"], key=lambda o: o["region_id"])] == worker_texts
    assert [r["region_id"] for r in objects_in(str(tmp_path / "served.gpkg"))] == ["7", "8"]
    plugin.guide_action.setChecked(False)
    assert not plugin.dock.guide_row.isVisibleTo(plugin.dock)


def test_processing_describe_regions_with_a_guide_layer(qgis_new_project, module_plugin, worker_settings,
                                                         qgis_processing, scene_layer, guide_layer, tmp_path):
    import processing

    aoi = QgsVectorLayer("Polygon?crs=EPSG:32633&field=id:string", "aoi", "memory")
    feature = QgsFeature(aoi.fields())
    feature.setGeometry(QgsGeometry.fromRect(REGION))
    feature.setAttributes(["block"])
    aoi.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(aoi)
    out = str(tmp_path / "guided.gpkg")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    result = processing.run("mgimm:describe_regions", {"INPUT": scene_layer, "AOI": aoi, "GUIDE": guide_layer,
                                                       "MODE": 0, "OUTPUT": out}, context=context, feedback=feedback)
    summary = json.loads(result["SUMMARY"])
    assert summary["described"] == 1 and summary["objects"] == 2
    rows = objects_in(out)
    assert [(r["region_id"], r["parent_id"], r["kind"]) for r in rows] == [("7", "block", "house"),
                                                                         ("8", "block", "barn")]
    # written by the core (the worker's files job, as the CLI writes it): its objects layer opens in
    # the plugin's objects look from the GeoPackage's default style, with no plugin code involved
    import sqlite3

    copy = tmp_path / "copy.gpkg"
    with sqlite3.connect(out) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    opened = QgsVectorLayer(f"{copy}|layername=objects", "opened by hand", "ogr")
    assert opened.isValid() and opened.featureCount() == 2
    assert_object_look(opened)


def test_guide_items_read_near_features_with_the_cli_ids(plugin_module, qgis_new_project, scene_layer, guide_layer):
    # The plugin names guide objects as the core reads a layer file: the `id` attribute, else the
    # feature's position. Only features near the regions are sent; a feature without an id needs
    # its position, which the filtered read (the layer's spatial index) cannot give: read whole then.
    from mgimm_geo.request_data import guide_items

    region = QgsGeometry.fromRect(REGION)
    assert [i["id"] for i in guide_items(guide_layer, scene_layer, [region])] == ["7", "8"]   # 9 is far
    to_lonlat = QgsCoordinateTransform(UTM, QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    unnamed = QgsFeature(guide_layer.fields())
    geometry = QgsGeometry.fromRect(QgsRectangle(500300, 4099620, 500330, 4099650))
    geometry.transform(to_lonlat)
    unnamed.setGeometry(geometry)
    unnamed.setAttributes([None, "kiosk"])
    guide_layer.dataProvider().addFeatures([unnamed])
    items = guide_items(guide_layer, scene_layer, [region])
    assert [(i["id"], i["properties"]["kind"]) for i in items] == [("7", "house"), ("8", "barn"), ("3", "kiosk")]
    assert "POLYGON" in items[0]["wkt"].upper() and float(items[0]["wkt"].split("((")[1].split()[0]) > 500000  # UTM
