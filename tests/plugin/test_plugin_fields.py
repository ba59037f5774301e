"""The QGIS plugin's descriptions layer has the core's `regions` columns, in the same order.

The plugin cannot import mgimm_core (nor this suite QGIS), so its field list lives in a Qt-free
module, qgis_plugin/fields.py, loaded here by file path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mgimm_core.output.schema import WHEN_USED_COLUMNS, ObjectSchema, RegionSchema

FIELDS_FILE = Path(__file__).resolve().parents[2] / "qgis_plugin" / "fields.py"


def plugin_fields():
    spec = importlib.util.spec_from_file_location("plugin_fields", FIELDS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugin_field_list_is_the_core_region_schema():
    fields = plugin_fields()
    schema = RegionSchema()
    assert fields.FIELD_NAMES == tuple(schema.columns)
    kinds = {"TEXT": "text", "REAL": "real", "DATETIME": "datetime"}
    assert dict(fields.FIELD_KINDS) == {name: kinds[sql] for name, sql in schema.columns.items()}
    assert fields.ATTRIBUTE_FIELDS == schema.attribute_fields
    objects = ObjectSchema()              # the plugin's objects layer (guided requests)
    assert fields.OBJECT_FIELD_NAMES == tuple(objects.columns)
    assert dict(fields.OBJECT_FIELD_KINDS) == {name: kinds[sql] for name, sql in objects.columns.items()}
    assert fields.WHEN_USED_FIELDS == WHEN_USED_COLUMNS     # columns added to a layer when first used


def test_plugin_input_columns_follow_the_core_rule():
    """Processing in server mode writes the regions layer itself: input attributes clashing with
    ours or with each other get the core's `in_` columns."""
    fields = plugin_fields()
    for names in (["name", "description"], ["Name", "name", "in_name"], ["in_description", "description"],
                  ["DESCRIPTION", "fid", "geom", "Object", "area", "guide_objects"], ["id", "scene", "Scene"]):
        assert fields.input_columns(names) == RegionSchema().input_columns(names), names


def test_plugin_style_is_the_core_style():
    """The plugin's regions layers (the descriptions layer, Processing in server mode) look like the
    CLI's: the same label expression, fill, outline and label placement as the core's QML."""
    from mgimm_core.output import styles

    fields = plugin_fields()
    assert fields.REGION_LABEL == styles.REGION_LABEL
    fill, outline = styles._FILL["regions"]
    assert ",".join(map(str, fields.REGION_FILL)) == fill and ",".join(map(str, fields.REGION_OUTLINE)) == outline
    qml = styles.qml("regions", styles.REGION_LABEL)
    assert 'placement="0"' in qml and f'dist="{fields.LABEL_DISTANCE_MM:g}"' in qml   # around the centroid
    assert f'name="outline_width" value="{fields.OUTLINE_WIDTH_MM:g}"' in qml
    # the guide objects layer: the plugin's look is the core's (a CLI-written objects layer opens alike)
    assert fields.OBJECT_LABEL == styles.OBJECT_LABEL
    assert ",".join(map(str, fields.OBJECT_OUTLINE)) == styles._FILL["objects"][1]
    objects_qml = styles.qml("objects", styles.OBJECT_LABEL)
    assert 'name="style" value="no"' in objects_qml and 'priority="8"' in objects_qml
    assert f'textColor="{",".join(map(str, fields.OBJECT_LABEL_COLOR))}"' in objects_qml


def test_plugin_writes_the_row_the_service_answers():
    """A `describe` answer carries each region as the core's own row (RegionSchema, one builder,
    serialised by wire_row), and the plugin writes that row as it comes: its feature values are the
    row the CLI writes for the same record (the client's run_id and the write time aside)."""
    import json

    from mgimm_core.output.schema import RegionRecord
    from mgimm_core.service.handlers import region_entry

    record = RegionRecord(scene="/data/s.tif", region_id="7", geometry=None, crs=None, description="a red car",
                          attributes={"name": "car", "color": "red", "speed": "fast"},
                          properties={"description": "mine", "area": 3.5, "Name": "x"}, valid_fraction=0.5,
                          gsd_m=float("inf"), model="tiny", prompt="Describe.", guide_objects=2, guide_objects_left=1)
    entry = json.loads(json.dumps(region_entry(record, RegionSchema()), allow_nan=False))
    assert entry["id"] == "7" and entry["description"] == "a red car" and entry["gsd_m"] is None   # protocol 1 fields
    values = plugin_fields().feature_values(entry, scene="elsewhere", run_id="qgis")
    expected = RegionSchema().row(record, run_id="qgis")
    expected["gsd_m"] = None                                     # JSON holds no infinity
    assert set(plugin_fields().FIELD_NAMES) <= set(values)
    assert values.pop("created") and expected.pop("created")
    assert values == expected
