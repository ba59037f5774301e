"""The "MGIMM descriptions" layer: a GeoPackage layer with the CLI's `regions` fields, labelled.

Created on first use at the configured path (layer name `regions` inside the GeoPackage, as the CLI
writes it), in the CRS of the first raster described; later features are transformed into it. The
field list (fields.py) mirrors mgimm_core/output/schema.py (RegionSchema) without importing it: the
plugin must not import mgimm_core.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsField,
                       QgsFields, QgsGeometry, QgsLabelObstacleSettings, QgsPalLayerSettings, QgsProject, QgsTextFormat,
                       QgsVectorFileWriter, QgsVectorLayer, QgsVectorLayerSimpleLabeling, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

from .fields import (ATTRIBUTE_ALIASES, ATTRIBUTE_FIELDS, FIELD_KINDS, FIELD_NAMES, LABEL_DISTANCE_MM, OUTLINE_WIDTH_MM,
                     REGION_FILL, REGION_LABEL, REGION_OUTLINE, STYLE_DESCRIPTION, STYLE_NAME, input_columns)

LAYER_TITLE = "MGIMM descriptions"
GPKG_LAYER = "regions"
_QVARIANT = {"text": QVariant.String, "real": QVariant.Double, "datetime": QVariant.DateTime}
# (name, QVariant type) in the CLI's column order (the list itself is in fields.py, Qt-free).
FIELD_TYPES = [(name, _QVARIANT[kind]) for name, kind in FIELD_KINDS]
LABEL_EXPRESSION = REGION_LABEL


def region_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in FIELD_TYPES:
        fields.append(QgsField(name, kind))
    return fields


def _uri(path: str) -> str:
    return f"{path}|layername={GPKG_LAYER}"


def _create_gpkg_layer(path: str, crs: QgsCoordinateReferenceSystem) -> None:
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = GPKG_LAYER
    options.actionOnExistingFile = (QgsVectorFileWriter.CreateOrOverwriteLayer if os.path.exists(path)
                                    else QgsVectorFileWriter.CreateOrOverwriteFile)
    writer = QgsVectorFileWriter.create(path, region_fields(), QgsWkbTypes.MultiPolygon, crs,
                                        QgsProject.instance().transformContext(), options)
    error = writer.hasError()
    message = writer.errorMessage()
    del writer  # closes the file
    if error:
        raise OSError(f"cannot create {path}: {message}; choose another GeoPackage path in MGIMM settings")


def style_layer(layer: QgsVectorLayer) -> None:
    """The CLI's look (fields.py, from mgimm_core/output/styles.py): a light fill with an outline,
    labelled "colour object" (or the description's start) around the centroid, 1 mm off it, so the
    label of a small object does not cover it; only polygon boundaries are obstacles, so an
    enclosing AOI does not push away the labels inside it."""
    symbol = layer.renderer().symbol() if layer.renderer() is not None else None
    if symbol is not None:
        symbol.setColor(QColor(*REGION_FILL))
        symbol.symbolLayer(0).setStrokeColor(QColor(*REGION_OUTLINE))
        symbol.symbolLayer(0).setStrokeWidth(OUTLINE_WIDTH_MM)
    labels = QgsPalLayerSettings()
    labels.fieldName = LABEL_EXPRESSION
    labels.isExpression = True
    labels.placement = QgsPalLayerSettings.AroundPoint
    labels.dist = LABEL_DISTANCE_MM
    labels.centroidInside = True
    obstacles = labels.obstacleSettings()
    obstacles.setIsObstacle(True)
    obstacles.setType(QgsLabelObstacleSettings.PolygonBoundary)
    labels.setObstacleSettings(obstacles)
    text = QgsTextFormat()
    text.setSize(9)
    text.buffer().setEnabled(True)
    text.buffer().setSize(0.8)
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def save_default_style(layer: QgsVectorLayer) -> None:
    """Store the layer's style as the default in its GeoPackage's `layer_styles`, so the file opens
    labelled in any QGIS, without the plugin (as the CLI's files do)."""
    message = layer.saveStyleToDatabase(STYLE_NAME, STYLE_DESCRIPTION, True, "")
    if message:
        raise OSError(f"cannot store the layer style in {layer.source()}: {message}")


def descriptions_layer(path: str, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
    """The project's "MGIMM descriptions" layer at `path`: found in the project, opened from the
    GeoPackage, or created there (in `crs`) and added to the project, labelled."""
    path = os.path.abspath(path)
    for layer in QgsProject.instance().mapLayers().values():
        if isinstance(layer, QgsVectorLayer) and layer.customProperty("mgimm_geo/descriptions") == path:
            return layer
    layer = QgsVectorLayer(_uri(path), LAYER_TITLE, "ogr")
    created = not layer.isValid()
    if created:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _create_gpkg_layer(path, crs)
        layer = QgsVectorLayer(_uri(path), LAYER_TITLE, "ogr")
        if not layer.isValid():
            raise OSError(f"cannot open the new layer {path}; choose another GeoPackage path in MGIMM settings")
    missing = [name for name in FIELD_NAMES if layer.fields().indexFromName(name) < 0]
    if missing:
        raise OSError(f"{path} (layer {GPKG_LAYER}) lacks the fields {', '.join(missing)}: it is not an "
                      f"MGIMM regions layer; choose another GeoPackage path in MGIMM settings")
    layer.setCustomProperty("mgimm_geo/descriptions", path)
    style_layer(layer)
    if created:
        save_default_style(layer)
    QgsProject.instance().addMapLayer(layer)
    return layer


def feature_values(entry: dict, *, scene: str, model: str = None, prompt: str = None,
                   run_id: str = None) -> dict:
    """A result entry of a `describe` request -> {field: value} of the regions layer."""
    attributes, extra = {}, {}
    for name, value in (entry.get("attributes") or {}).items():
        name = ATTRIBUTE_ALIASES.get(name, name)
        (attributes if name in ATTRIBUTE_FIELDS else extra)[name] = value
    values = {"region_id": str(entry.get("id", "")), "scene": entry.get("scene") or scene,
              "description": entry.get("description")}
    values.update({name: attributes.get(name) for name in ATTRIBUTE_FIELDS})
    values.update({"extra_attributes": json.dumps(extra) if extra else None,
                   "valid_fraction": entry.get("valid_fraction"), "gsd_m": entry.get("gsd_m"),
                   "model": entry.get("model") or model, "prompt": prompt,
                   "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                   "error": entry.get("error"), "error_code": entry.get("error_code"), "run_id": run_id})
    return values


def add_region_features(layer: QgsVectorLayer, items, crs: QgsCoordinateReferenceSystem) -> list:
    """Append features: items are (geometry WKT in `crs`, {field: value}); returns their ids."""
    added = _append_features(layer, ((QgsGeometry.fromWkt(wkt), values) for wkt, values in items), crs,
                             layer.source())
    layer.updateExtents()
    layer.triggerRepaint()
    return [feature.id() for feature in added]


def _append_features(layer: QgsVectorLayer, items, crs: QgsCoordinateReferenceSystem, where: str) -> list:
    """Write (QgsGeometry in `crs`, {field: value}) pairs to `layer` as multipolygons in its CRS;
    fields the layer lacks are left out. Returns the added features; OSError naming `where`."""
    transform = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance())
    features = []
    for geometry, values in items:
        geometry = QgsGeometry(geometry)
        if crs != layer.crs():
            geometry.transform(transform)
        geometry.convertToMultiType()
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry)
        for name, value in values.items():
            index = layer.fields().indexFromName(name)
            if index >= 0:
                feature.setAttribute(index, value)
        features.append(feature)
    ok, added = layer.dataProvider().addFeatures(features)
    if not ok:
        raise OSError(f"cannot write to {where}: {'; '.join(layer.dataProvider().errors()[-3:])}")
    return added


def write_regions_file(path: str, mode: str, crs: QgsCoordinateReferenceSystem, input_fields: QgsFields,
                       items) -> int:
    """Processing in server mode: the CLI's `regions` layer of a GeoPackage, written here (the
    server cannot reach this disk): our fields, then the input attributes under the core's column
    names (fields.py input_columns). items: (QgsGeometry in `crs`, {field: value}, {input name: value}).
    mode as the CLI's: create (the file must not exist), overwrite, append, resume (rows whose
    scene and region_id are there already are skipped). Returns the number of rows written."""
    path = os.path.abspath(path)
    exists = os.path.exists(path)
    if mode == "create" and exists:
        raise OSError(f"{path} exists; choose \"overwrite\", \"append\" or \"resume\" under \"If the "
                      f"output exists\", or another file")
    if mode == "overwrite" and exists:
        os.remove(path)
        exists = False
    columns = input_columns(input_fields.names())
    fields = region_fields()
    for field in input_fields:
        copy = QgsField(field)
        copy.setName(columns[field.name()])
        fields.append(copy)
    layer = QgsVectorLayer(_uri(path), GPKG_LAYER, "ogr") if exists else None
    if layer is None or not layer.isValid():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = GPKG_LAYER
        options.actionOnExistingFile = (QgsVectorFileWriter.CreateOrOverwriteLayer if exists
                                        else QgsVectorFileWriter.CreateOrOverwriteFile)
        writer = QgsVectorFileWriter.create(path, fields, QgsWkbTypes.MultiPolygon, crs,
                                            QgsProject.instance().transformContext(), options)
        error, message = writer.hasError(), writer.errorMessage()
        del writer
        if error:
            raise OSError(f"cannot create {path}: {message}")
        layer = QgsVectorLayer(_uri(path), GPKG_LAYER, "ogr")
    done = set()
    if mode == "resume":
        done = {(f["scene"], f["region_id"]) for f in layer.getFeatures()}
    rows = [(geometry, {**values, **{columns[k]: v for k, v in properties.items() if k in columns}})
            for geometry, values, properties in items
            if (values.get("scene"), values.get("region_id")) not in done]
    added = _append_features(layer, rows, crs, path)
    style_layer(layer)
    save_default_style(layer)
    return len(added)
