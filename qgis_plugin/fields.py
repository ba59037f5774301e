"""The fields of the plugin's descriptions layer, as plain data (no Qt), in the CLI's column order.

They mirror the core's `regions` row schema (mgimm_core/output/schema.py, RegionSchema), so a layer
written by the plugin and one written by `mgimm-geo describe` have the same columns;
tests/plugin/test_plugin_fields.py checks the two lists against each other without QGIS.
"""

ATTRIBUTE_FIELDS = ("object", "color", "shape", "size", "orientation", "position")
ATTRIBUTE_ALIASES = {"name": "object", "colour": "color"}

#: (name, kind); kind is "text", "real" or "datetime" (layer.py maps it to a QVariant type).
FIELD_KINDS = ((("region_id", "text"), ("scene", "text"), ("description", "text"))
               + tuple((name, "text") for name in ATTRIBUTE_FIELDS)
               + (("extra_attributes", "text"), ("valid_fraction", "real"), ("gsd_m", "real"),
                  ("model", "text"), ("prompt", "text"), ("created", "datetime"), ("error", "text"),
                  ("error_code", "text"), ("run_id", "text")))
FIELD_NAMES = tuple(name for name, _ in FIELD_KINDS)
#: The `objects` layer of guided requests (the core's ObjectSchema): the regions fields, then the
#: link to the region a guide object was described in, the model's attribute answer and its judgement
#: of the guide (guide_status: confirmed / not_found; guide_no_object_p: how sure it is nothing is there).
OBJECT_FIELD_KINDS = FIELD_KINDS + (("parent_layer", "text"), ("parent_id", "text"), ("attribute_text", "text"),
                                    ("guide_status", "text"), ("guide_no_object_p", "real"))
OBJECT_FIELD_NAMES = tuple(name for name, _ in OBJECT_FIELD_KINDS)

INPUT_PREFIX = "in_"
#: columns the core adds to a row when used (guided runs; models that measure no_object_p and
#: object_p): the descriptions layer gains them as the core's GeoPackage does (layer.py add_region_features)
WHEN_USED_FIELDS = ("guide_objects", "guide_objects_left", "no_object_p", "object_p")
_RESERVED = {name.lower() for name in FIELD_NAMES} | {"fid", "geom"} | set(WHEN_USED_FIELDS)


def input_columns(names) -> dict:
    """The column of each input attribute, by the core's rule (mgimm_core/output/schema.py
    RegionSchema.input_columns): its own name unless that clashes, case-insensitively, with one of
    ours or an earlier one, then prefixed `in_` until free; names that need no prefix go first.
    tests/plugin/test_plugin_fields.py checks it against the core."""
    mapping: dict = {}
    taken = set(_RESERVED)
    names = [str(n) for n in names]
    for name in [n for n in names if n.lower() not in taken] + [n for n in names if n.lower() in taken]:
        if name in mapping:
            continue
        column = name
        while column.lower() in taken:
            column = INPUT_PREFIX + column
        mapping[name] = column
        taken.add(column.lower())
    return {n: mapping[n] for n in names}

def feature_values(entry: dict, *, scene: str, model: str = None, prompt: str = None, run_id: str = None) -> dict:
    """A result entry of a `describe` request -> {field: value} of the regions layer: the entry's
    `row`, the core's own row of the region (mgimm_core/service/handlers.py `wire_row`: the
    RegionSchema columns but run_id, its guide counts and input columns), as it comes, with this
    client's `run_id`; `scene`, `model` and `prompt` fill in only what the row leaves empty. An
    entry without a row is one the plugin made itself (a region off the raster, server_chips.py):
    its id, scene and error."""
    row = entry.get("row")
    if row is None:
        row = {"region_id": str(entry.get("id", "")), "scene": entry.get("scene"), "error": entry.get("error"),
               "error_code": entry.get("error_code")}
    values = dict(row)
    values.update(scene=values.get("scene") or scene, model=values.get("model") or model,
                  prompt=values.get("prompt") or prompt, run_id=run_id)
    if not values.get("created"):
        from datetime import datetime, timezone

        values["created"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return values


# The look of a regions layer, as the core's default style (mgimm_core/output/styles.py: REGION_LABEL,
# _FILL["regions"], the placement around the centroid 1 mm off it); tests/plugin/test_plugin_fields.py
# checks they agree, so a layer the plugin writes looks like one the CLI writes.
REGION_LABEL = ("CASE WHEN \"object\" = 'none' THEN NULL ELSE coalesce(nullif(trim(concat(\"color\", ' ', "
                "\"object\")), ''), left(\"description\", 40), \"error\") END")   # no "none" labels
REGION_FILL = (255, 170, 0, 20)     # barely tinted: the object under it keeps its colour
REGION_OUTLINE = (255, 120, 0, 255)
OUTLINE_WIDTH_MM = 0.6
LABEL_DISTANCE_MM = 1.0
STYLE_NAME = "regions"
STYLE_DESCRIPTION = "mgimm-geo default: labelled by object and colour"

# The look of the plugin's guide objects layer: outlined only (the object's own pixels stay visible
# under it, so its colour answer can be checked), in a colour apart from the regions' orange, and
# labelled "guide id: colour object", so an object on the map can be found in the panel's list.
OBJECT_LABEL = ("concat(\"region_id\", ': ', coalesce(nullif(trim(concat(\"color\", ' ', \"object\")), ''), "
                "\"error\"))")
OBJECT_OUTLINE = (0, 190, 255, 255)
OBJECT_LABEL_COLOR = (0, 60, 140, 255)
OBJECT_STYLE_NAME = "objects"
OBJECT_STYLE_DESCRIPTION = "mgimm-geo plugin: guide objects outlined, labelled by guide id, colour and object"


def plain_value(value):
    """A feature attribute as JSON-ready data (QVariant NULL -> None, dates -> text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "isNull") and value.isNull():
        return None
    if hasattr(value, "toString"):
        return value.toString()
    return str(value)
