"""The fields of the plugin's descriptions layer, as plain data (no Qt), in the CLI's column order.

They mirror the core's `regions` row schema (mgimm_core/output/schema.py, RegionSchema), so a layer
written by the plugin and one written by `mgimm-geo describe` have the same columns;
tests/test_plugin_fields.py checks the two lists against each other without QGIS.
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
