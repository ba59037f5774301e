"""Default layer styles stored in the GeoPackage, so layers open in QGIS labelled.

QGIS looks for a `layer_styles` table (its own convention, also used by its PostGIS and SpatiaLite
providers) and applies the row with `useAsDefault` for the layer when it is loaded. We write one
QML (QGIS's own format: symbology + labels) and an equivalent SLD (for other clients) per layer:
a barely tinted fill with a solid outline, labelled with a short label ("white storage tank")
placed around the centroid, 1 mm off it (so a small object's label does not cover the object), with
only polygon boundaries as obstacles (so an enclosing AOI does not push the labels inside it away).
The QGIS plugin styles the layers it writes the same way (qgis_plugin/fields.py, checked by
tests/plugin/test_plugin_fields.py).
"""

from __future__ import annotations

import sqlite3
from xml.sax.saxutils import escape, quoteattr

from . import gpkg

STYLE_TABLE = "layer_styles"
STYLE_COLUMNS = {
    "f_table_catalog": "TEXT(256)", "f_table_schema": "TEXT(256)", "f_table_name": "TEXT(256)",
    "f_geometry_column": "TEXT(256)", "styleName": "TEXT(30)", "styleQML": "TEXT", "styleSLD": "TEXT",
    "useAsDefault": "BOOLEAN", "description": "TEXT", "owner": "TEXT(30)", "ui": "TEXT(30)",
    "update_time": "DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
}

# QGIS expressions for the label; NULL parts vanish (concat treats NULL as ''). A region or tile
# with no distinct object (object "none", a description starting "No distinct objects") has no
# label: a map of mostly empty tiles is not covered with "none"; its row still says so.
REGION_LABEL = ("CASE WHEN \"object\" = 'none' THEN NULL ELSE coalesce(nullif(trim(concat(\"color\", ' ', "
                "\"object\")), ''), left(\"description\", 40), \"error\") END")
TILE_LABEL = ("CASE WHEN \"description\" ILIKE 'no distinct object%' THEN NULL ELSE "
              "coalesce(left(\"description\", 40), \"error\") END")
# Guide objects: "guide id: colour object", so an object on the map can be found in its row.
OBJECT_LABEL = ("concat(\"region_id\", ': ', coalesce(nullif(trim(concat(\"color\", ' ', \"object\")), ''), "
                "\"error\"))")

# (fill, outline) per kind: fills barely tinted (alpha 20 of 255), so the object whose colour the
# answer judges keeps its own colour under the region; guide objects are outlined only, in blue
# apart from the regions' orange.
_FILL = {"regions": ("255,170,0,20", "255,120,0,255"), "tiles": ("60,140,255,20", "30,90,200,255"),
         "objects": ("0,190,255,0", "0,190,255,255")}
_LABELS = {"regions": (REGION_LABEL, "object"), "tiles": (TILE_LABEL, "description"),
           "objects": (OBJECT_LABEL, "object")}
# (text colour, placement priority of 0..10): an object's label wins over its region's where they collide.
_TEXT = {"regions": ("20,20,20,255", 5), "tiles": ("20,20,20,255", 5), "objects": ("0,60,140,255", 8)}


def _option_map(values: dict[str, str]) -> str:
    """The symbol-layer properties written both as <Option> (QGIS >= 3.26) and <prop> (older 3.x)."""
    options = "".join(f'<Option type="QString" name={quoteattr(k)} value={quoteattr(v)}/>' for k, v in values.items())
    props = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in values.items())
    return f'<Option type="Map">{options}</Option>{props}'


def qml(kind: str, label_expression: str) -> str:
    """A QGIS 3 style: single semi-transparent fill symbol and one label per feature."""
    fill, outline = _FILL[kind]
    text_colour, priority = _TEXT[kind]
    symbol_props = _option_map({
        "color": fill, "style": "no" if kind == "objects" else "solid", "outline_color": outline,
        "outline_style": "solid",
        "outline_width": "0.6", "outline_width_unit": "MM", "joinstyle": "bevel",
        "offset": "0,0", "offset_unit": "MM",
    })
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology|Labeling" labelsEnabled="1">
  <renderer-v2 type="singleSymbol" forceraster="0" symbollevels="0" enableorderby="0" referencescale="-1">
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">{symbol_props}</layer>
      </symbol>
    </symbols>
    <rotation/>
    <sizescale/>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName={quoteattr(label_expression)} isExpression="1" fontSize="9" fontSizeUnit="Point"
                  fontFamily="Sans Serif" namedStyle="Regular" fontWeight="50" fontItalic="0"
                  textColor="{text_colour}" textOpacity="1" multilineHeight="1" allowHtml="0">
        <text-buffer bufferDraw="1" bufferSize="0.8" bufferSizeUnits="MM" bufferColor="255,255,255,255"
                     bufferOpacity="0.8" bufferJoinStyle="128" bufferNoFill="1" bufferBlendMode="0"/>
      </text-style>
      <text-format wrapChar="" autoWrapLength="30" useMaxLineLengthForAutoWrap="1" multilineAlign="3"
                   plussign="0" decimals="3" reverseDirectionSymbol="0" formatNumbers="0" placeDirectionSymbol="0"
                   rightDirectionSymbol=">" leftDirectionSymbol="&lt;" addDirectionSymbol="0"/>
      <placement placement="0" placementFlags="10" centroidInside="1" centroidWhole="0" fitInPolygonOnly="0"
                 dist="1" distUnits="MM" offsetType="0" priority="{priority}" overrunDistance="0"
                 overrunDistanceUnit="MM" xOffset="0" yOffset="0" offsetUnits="MM" quadOffset="4"
                 rotationAngle="0" maxCurvedCharAngleIn="25" maxCurvedCharAngleOut="-25"/>
      <rendering obstacle="1" obstacleType="1" obstacleFactor="1" displayAll="0" upsidedownLabels="0"
                 scaleVisibility="0" scaleMin="0" scaleMax="0" fontMinPixelSize="3" fontMaxPixelSize="10000"
                 fontLimitPixelSize="0" limitNumLabels="0" maxNumLabels="2000" mergeLines="0"
                 minFeatureSize="0" labelPerPart="0" drawLabels="1" zIndex="0"/>
    </settings>
  </labeling>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerOpacity>1</layerOpacity>
  <previewExpression>{escape(label_expression)}</previewExpression>
  <layerGeometryType>2</layerGeometryType>
</qgis>
"""


def sld(layer: str, kind: str, label_property: str) -> str:
    """The same look as an OGC SLD 1.1 (fill-opacity, outline, label from one attribute)."""
    fill, outline = _FILL[kind]
    r, g, b, a = (int(v) for v in fill.split(","))
    ro, go, bo, _ = (int(v) for v in outline.split(","))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<StyledLayerDescriptor version="1.1.0" xmlns="http://www.opengis.net/sld" xmlns:se="http://www.opengis.net/se"
    xmlns:ogc="http://www.opengis.net/ogc" xmlns:xlink="http://www.w3.org/1999/xlink"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <NamedLayer>
    <se:Name>{escape(layer)}</se:Name>
    <UserStyle>
      <se:Name>{escape(layer)}</se:Name>
      <se:FeatureTypeStyle>
        <se:Rule>
          <se:Name>{escape(layer)}</se:Name>
          <se:PolygonSymbolizer>
            <se:Fill>
              <se:SvgParameter name="fill">#{r:02x}{g:02x}{b:02x}</se:SvgParameter>
              <se:SvgParameter name="fill-opacity">{a / 255:.2f}</se:SvgParameter>
            </se:Fill>
            <se:Stroke>
              <se:SvgParameter name="stroke">#{ro:02x}{go:02x}{bo:02x}</se:SvgParameter>
              <se:SvgParameter name="stroke-width">2</se:SvgParameter>
            </se:Stroke>
          </se:PolygonSymbolizer>
          <se:TextSymbolizer>
            <se:Label><ogc:PropertyName>{escape(label_property)}</ogc:PropertyName></se:Label>
            <se:Font><se:SvgParameter name="font-size">12</se:SvgParameter></se:Font>
            <se:Fill><se:SvgParameter name="fill">#141414</se:SvgParameter></se:Fill>
          </se:TextSymbolizer>
        </se:Rule>
      </se:FeatureTypeStyle>
    </UserStyle>
  </NamedLayer>
</StyledLayerDescriptor>
"""


def write_default_style(conn: sqlite3.Connection, layer: str, kind: str) -> None:
    """Store the default style of `layer` ('regions', 'tiles' or 'objects' look), creating the table
    if needed."""
    if STYLE_TABLE not in gpkg.table_names(conn):
        gpkg.create_attributes_table(conn, STYLE_TABLE, STYLE_COLUMNS, description="QGIS layer styles")
    label_expression, label_property = _LABELS[kind]
    conn.execute(f"DELETE FROM {STYLE_TABLE} WHERE f_table_name = ? AND styleName = ?", (layer, layer))
    conn.execute(
        f"INSERT INTO {STYLE_TABLE} (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, "
        "styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
        "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL, ?)",
        (layer, gpkg.GEOMETRY_COLUMN, layer, qml(kind, label_expression), sld(layer, kind, label_property),
         "mgimm-geo default: labelled by object and colour", gpkg.now_iso()))
