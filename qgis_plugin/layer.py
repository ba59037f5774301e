"""The "MGIMM descriptions" layer: a GeoPackage layer with the CLI's `regions` fields, labelled.

Created on first use at the configured path (layer name `regions` inside the GeoPackage, as the CLI
writes it), in the CRS of the first raster described; later features are transformed into it. The
field list (fields.py) mirrors mgimm_core/output/schema.py (RegionSchema) without importing it: the
plugin must not import mgimm_core.
"""

from __future__ import annotations

import os

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsField,
                       QgsFields, QgsGeometry, QgsLabelObstacleSettings, QgsPalLayerSettings, QgsProject, QgsTextFormat,
                       QgsVectorFileWriter, QgsVectorLayer, QgsVectorLayerSimpleLabeling, QgsWkbTypes)
from qgis.PyQt.QtCore import Qt, QVariant
from qgis.PyQt.QtGui import QColor

from .fields import FIELD_NAMES, feature_values  # noqa: F401  (re-exported: callers and tests read them here)
from .fields import (FIELD_KINDS, LABEL_DISTANCE_MM,
                     OBJECT_FIELD_KINDS, OBJECT_LABEL, OBJECT_LABEL_COLOR, OBJECT_OUTLINE, OBJECT_STYLE_DESCRIPTION,
                     OBJECT_STYLE_NAME, OUTLINE_WIDTH_MM, REGION_FILL, REGION_LABEL, REGION_OUTLINE,
                     STYLE_DESCRIPTION, STYLE_NAME, WHEN_USED_FIELDS, input_columns)

LAYER_TITLE = "MGIMM descriptions"
GPKG_LAYER = "regions"
OBJECTS_TITLE = "MGIMM guide objects"
OBJECTS_LAYER = "objects"
RELATION_ID = "mgimm_geo_objects_regions"
_QVARIANT = {"text": QVariant.String, "real": QVariant.Double, "datetime": QVariant.DateTime}
# (name, QVariant type) in the CLI's column order (the list itself is in fields.py, Qt-free).
FIELD_TYPES = [(name, _QVARIANT[kind]) for name, kind in FIELD_KINDS]
LABEL_EXPRESSION = REGION_LABEL


def region_fields(kinds=FIELD_KINDS) -> QgsFields:
    fields = QgsFields()
    for name, kind in kinds:
        fields.append(QgsField(name, _QVARIANT[kind]))
    return fields


def _uri(path: str, layer_name: str = GPKG_LAYER) -> str:
    return f"{path}|layername={layer_name}"


def _create_gpkg_layer(path: str, crs: QgsCoordinateReferenceSystem, layer_name: str = GPKG_LAYER,
                       fields: QgsFields = None) -> None:
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer_name
    options.actionOnExistingFile = (QgsVectorFileWriter.CreateOrOverwriteLayer if os.path.exists(path)
                                    else QgsVectorFileWriter.CreateOrOverwriteFile)
    writer = QgsVectorFileWriter.create(path, fields if fields is not None else region_fields(),
                                        QgsWkbTypes.MultiPolygon, crs,
                                        QgsProject.instance().transformContext(), options)
    error = writer.hasError()
    message = writer.errorMessage()
    del writer  # closes the file
    if error:
        raise OSError(f"cannot create {path}: {message}; choose another GeoPackage path in MGIMM settings")


def style_layer(layer: QgsVectorLayer, objects: bool = False) -> None:
    """The CLI's look (fields.py, from mgimm_core/output/styles.py): a light fill with an outline,
    labelled "colour object" (or the description's start) around the centroid, 1 mm off it, so the
    label of a small object does not cover it; only polygon boundaries are obstacles, so an
    enclosing AOI does not push away the labels inside it. `objects`: the guide objects' look
    (fields.py): outlined only, in blue, labelled "guide id: colour object", drawn above the
    regions' labels where they collide."""
    symbol = layer.renderer().symbol() if layer.renderer() is not None else None
    if symbol is not None:
        symbol.setColor(QColor(*REGION_FILL))
        symbol.symbolLayer(0).setStrokeColor(QColor(*(OBJECT_OUTLINE if objects else REGION_OUTLINE)))
        symbol.symbolLayer(0).setStrokeWidth(OUTLINE_WIDTH_MM)
        if objects:
            symbol.symbolLayer(0).setBrushStyle(Qt.NoBrush)
    labels = QgsPalLayerSettings()
    labels.fieldName = OBJECT_LABEL if objects else LABEL_EXPRESSION
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
    if objects:
        text.setColor(QColor(*OBJECT_LABEL_COLOR))
        labels.priority = 8               # of 0..10 (5 by default): an object's label before its region's
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def save_default_style(layer: QgsVectorLayer, objects: bool = False) -> None:
    """Store the layer's style as the default in its GeoPackage's `layer_styles`, so the file opens
    labelled in any QGIS, without the plugin (as the CLI's files do)."""
    message = layer.saveStyleToDatabase(OBJECT_STYLE_NAME if objects else STYLE_NAME,
                                        OBJECT_STYLE_DESCRIPTION if objects else STYLE_DESCRIPTION, True, "")
    if message:
        raise OSError(f"cannot store the layer style in {layer.source()}: {message}")


def descriptions_layer(path: str, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
    """The project's "MGIMM descriptions" layer at `path`: found in the project, opened from the
    GeoPackage, or created there (in `crs`) and added to the project, labelled."""
    return _project_layer(path, crs, GPKG_LAYER, LAYER_TITLE, FIELD_KINDS, "mgimm_geo/descriptions")


def objects_layer(path: str, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
    """The project's "MGIMM guide objects" layer: the `objects` layer of the descriptions
    GeoPackage at `path` (the core's ObjectSchema fields), with a project relation from its
    parent_id to the descriptions layer's region_id, so each description's form lists its objects."""
    layer = _project_layer(path, crs, OBJECTS_LAYER, OBJECTS_TITLE, OBJECT_FIELD_KINDS, "mgimm_geo/objects")
    parent = descriptions_layer(path, crs)
    manager = QgsProject.instance().relationManager()
    if not manager.relation(RELATION_ID).isValid():
        from qgis.core import QgsRelation

        relation = QgsRelation()
        relation.setId(RELATION_ID)
        relation.setName("MGIMM guide objects of a description")
        relation.setReferencingLayer(layer.id())
        relation.setReferencedLayer(parent.id())
        relation.addFieldPair("parent_id", "region_id")
        if relation.isValid():
            manager.addRelation(relation)
    return layer


def _project_layer(path: str, crs, layer_name: str, title: str, kinds, key: str) -> QgsVectorLayer:
    path = os.path.abspath(path)
    for layer in QgsProject.instance().mapLayers().values():
        if isinstance(layer, QgsVectorLayer) and layer.customProperty(key) == path:
            return layer
    layer = QgsVectorLayer(_uri(path, layer_name), title, "ogr")
    created = not layer.isValid()
    if created:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _create_gpkg_layer(path, crs, layer_name, region_fields(kinds))
        layer = QgsVectorLayer(_uri(path, layer_name), title, "ogr")
        if not layer.isValid():
            raise OSError(f"cannot open the new layer {path}; choose another GeoPackage path in MGIMM settings")
    missing = [name for name, _ in kinds if layer.fields().indexFromName(name) < 0]
    if missing:
        raise OSError(f"{path} (layer {layer_name}) lacks the fields {', '.join(missing)}: it is not an "
                      f"MGIMM {layer_name} layer; choose another GeoPackage path in MGIMM settings")
    layer.setCustomProperty(key, path)
    objects = layer_name == OBJECTS_LAYER
    style_layer(layer, objects)
    if created:
        save_default_style(layer, objects)
    QgsProject.instance().addMapLayer(layer)
    return layer


#: custom properties of MGIMM's result layers, top first: guide objects, descriptions, Processing outputs
RESULT_PROPERTIES = ("mgimm_geo/objects", "mgimm_geo/descriptions", "mgimm_geo/result")


def _result_rank(layer) -> int | None:
    for rank, key in enumerate(RESULT_PROPERTIES):
        if layer is not None and layer.customProperty(key):
            return rank
    return None


def keep_results_on_top(project: QgsProject = None) -> bool:
    """Move MGIMM's result layers to the top of the layer tree when another layer lies above one of
    them (a raster added later would cover the descriptions); guide objects over descriptions over
    Processing outputs. Returns whether anything moved."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    nodes = root.findLayers()
    results = [(rank, index, node) for index, node in enumerate(nodes)
               for rank in [_result_rank(node.layer())] if rank is not None]
    if not results:
        return False
    on_top = [index for _, index, _ in results] == list(range(len(results)))     # results is in tree order
    if on_top and [rank for rank, _, _ in results] == sorted(rank for rank, _, _ in results):
        return False
    for _, _, node in sorted(results, key=lambda r: (r[0], r[1]), reverse=True):
        parent = node.parent()
        clone = node.clone()
        root.insertChildNode(0, clone)
        parent.removeChildNode(node)
    return True


def add_object_features(layer: QgsVectorLayer, entries, *, scene: str = None) -> list:
    """Append the guide objects of `describe` result entries (each entry's `objects`: rows of the
    core's objects layer with `wkt` in `crs`) to the objects layer; attributes of the guide layer
    that the objects layer lacks yet become new text/number fields. Returns the added ids."""
    rows = [row for entry in entries for row in (entry.get("objects") or []) if row.get("wkt")]
    _add_missing_fields(layer, rows, skip=("wkt", "crs"))
    added = []
    by_crs: dict = {}
    for row in rows:
        by_crs.setdefault(row.get("crs") or "", []).append(row)
    for crs_text, group in by_crs.items():
        crs = QgsCoordinateReferenceSystem(crs_text) if crs_text else layer.crs()
        items = [(QgsGeometry.fromWkt(row["wkt"]),
                  {k: v for k, v in dict(row, **({"scene": scene} if scene else {})).items()
                   if k not in ("wkt", "crs")}) for row in group]
        added += _append_features(layer, items, crs, layer.source())
    layer.updateExtents()
    layer.triggerRepaint()
    return [feature.id() for feature in added]


def _add_missing_fields(layer: QgsVectorLayer, rows, *, skip=(), only=None) -> None:
    """Give `layer` a field for each name in `rows` ({field: value}) it lacks (of `only`, when
    given), typed by its first non-empty value, as the core adds a GeoPackage column when first used."""
    new: dict = {}
    for row in rows:
        for name, value in row.items():
            if (name in skip or (only is not None and name not in only) or value is None
                    or layer.fields().indexFromName(name) >= 0 or name in new):
                continue
            new[name] = QgsField(name, QVariant.Double if isinstance(value, float) else
                                 QVariant.LongLong if isinstance(value, int) and not isinstance(value, bool)
                                 else QVariant.String)
    if new:
        layer.dataProvider().addAttributes(list(new.values()))
        layer.updateFields()


def add_region_features(layer: QgsVectorLayer, items, crs: QgsCoordinateReferenceSystem) -> list:
    """Append features: items are (geometry WKT in `crs`, {field: value}); returns their ids. The
    columns the core adds when used (fields.py WHEN_USED_FIELDS: guide counts, no_object_p, object_p) become
    fields of the layer when a row has them; other fields the layer lacks are left out."""
    items = list(items)
    _add_missing_fields(layer, [values for _, values in items], only=WHEN_USED_FIELDS)
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
