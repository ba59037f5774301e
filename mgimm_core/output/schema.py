"""What one region or tile becomes as a row: the records the pipeline hands over and their fields.

The field list is fixed and documented here so every output format carries the same columns:

regions: region_id, scene, description, <attribute fields>, extra_attributes (JSON of attributes
    outside the vocabulary), valid_fraction (0..1 share of the polygon with valid pixels), gsd_m
    (metres per model pixel), model, prompt, created (UTC), error (NULL unless the region failed),
    error_code (its stable code, mgimm_core.errors), run_id; no_object_p (the model's probability that
    its attribute answer begins "no distinct objects") and object_p (its probability of the words
    naming the object class its answer gives, mgimm_core/steps.py score_objects), for models that
    answer on region tokens, each column added when first used; then every input attribute of the AOI
    under its own name, or prefixed `in_` (repeatedly, until it is free) where that name clashes,
    case-insensitively as SQLite and GDAL compare names, with one of ours or with another input
    attribute: `description` becomes `in_description`, or `in_in_description` when the AOI also has
    an `in_description`; of `Name` and `name` the first keeps its name, the second is `in_name`.
    Names that need no prefix are placed first, so a real `in_description` keeps its own column.
tiles: scene, tile_index, row, col, description, valid_fraction, gsd_m, model, prompt, created,
    error, error_code, run_id.
objects (guided runs, `describe --guide`): one row per guide object of a region or tile: the
    regions layer's columns (region_id is the guide object's id, `description` empty) plus
    parent_layer ("regions" or "tiles"), parent_id (the region_id or tile_index of the row it was
    described in), attribute_text (the model's attribute answer as written) and guide_status
    ("confirmed" where the model sees an object at the guide, "not_found" where it does not; only
    confirmed guides are region prompts of the row's description, mgimm_core/describer.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Iterable, Mapping, Sequence, SupportsInt

import numpy as np
import shapely

from .gpkg import FID_COLUMN, GEOMETRY_COLUMN, iso_utc, now_iso

# Attribute fields in the order of the vocabulary (mgimm_core.vocabulary.ATTRIBUTE_KEYS), with the
# vocabulary's "name" stored as `object` (a clearer column name in a GIS table).
DEFAULT_ATTRIBUTE_FIELDS: tuple[str, ...] = ("object", "color", "shape", "size", "orientation", "position")
ATTRIBUTE_ALIASES = {"name": "object", "colour": "color"}
INPUT_PREFIX = "in_"


#: a row's resume key: (scene, region id) or (scene, tile index)
ResumeKey = tuple[str, str] | tuple[str, int]


@dataclass
class RegionRecord:
    """The outcome for one AOI region on one scene (geometry in `crs`, any pyproj-readable CRS)."""

    scene: str
    region_id: str
    geometry: shapely.Geometry | None
    crs: Any
    description: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)   # vocabulary attribute -> value
    properties: Mapping[str, Any] = field(default_factory=dict)   # the AOI's input attributes
    valid_fraction: float | None = None
    gsd_m: float | None = None
    model: str | None = None
    prompt: str | None = None
    error: str | None = None
    error_code: str | None = None             # mgimm_core.errors code of `error`
    created: datetime | str | None = None     # default: the time the row is written (UTC)
    guide_objects: int | None = None          # guided runs: guide objects in its sequence
    guide_objects_left: int | None = None     # guided runs: guide objects inside beyond the maximum
    no_object_p: float | None = None          # the model's probability that the region holds no distinct object
    object_p: float | None = None             # the model's probability of the object class it named


@dataclass
class TileRecord:
    """The outcome for one tile of a scene's grid (tile polygon in `crs`)."""

    scene: str
    tile_index: int
    row: int
    col: int
    geometry: shapely.Geometry | None
    crs: Any
    description: str | None = None
    valid_fraction: float | None = None
    gsd_m: float | None = None
    model: str | None = None
    prompt: str | None = None
    error: str | None = None
    error_code: str | None = None
    created: datetime | str | None = None
    guide_objects: int | None = None
    guide_objects_left: int | None = None


@dataclass
class ObjectRecord(RegionRecord):
    """A guide object inside a region or tile (guided runs): its attributes, linked to its parent."""

    parent_layer: str = "regions"
    parent_id: str = ""
    attribute_text: str | None = None
    guide_status: str | None = None     # "confirmed" / "not_found" (mgimm_core/steps.py judge_guides)
    guide_no_object_p: float | None = None   # the model's probability that nothing is at the guide


def region_key(scene: str, region_id: object) -> tuple[str, str]:
    """The resume key of a region: (scene, region_id as text)."""
    return (str(scene), str(region_id))


def tile_key(scene: str, tile_index: SupportsInt | str) -> tuple[str, int]:
    """The resume key of a tile: (scene, tile index)."""
    return (str(scene), int(tile_index))


# ----------------------------------------------------------------------------------- values
def plain_value(value: object) -> bool | int | str | bytes | float | None:
    """A value SQLite and GDAL can store: numpy scalars unwrapped, times as ISO text, containers as JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, datetime):
        return iso_utc(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def sql_type_of(value: object) -> str | None:
    """The GeoPackage column type for a Python value (None when the value says nothing)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, datetime):
        return "DATETIME" if value.tzinfo is not None else "TEXT"
    if isinstance(value, date):
        return "DATE"
    if isinstance(value, (bytes, bytearray)):
        return "BLOB"
    return "TEXT"


def _created(value: object) -> str:
    if value is None:
        return now_iso()
    if isinstance(value, datetime):
        return iso_utc(value)
    return str(value)


# ----------------------------------------------------------------------------------- layers
class LayerSchema:
    """The columns of one layer and how a record becomes a row of it.

    `columns` maps column name -> GeoPackage type, in table order (without fid and geom); input
    columns are appended as new AOI attributes appear.
    """

    kind: str = ""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns: dict[str, str] = dict(columns)

    def key_of(self, record: Any) -> ResumeKey:     # each schema takes its own record type
        raise NotImplementedError

    def row(self, record: Any, run_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def missing_columns(self, existing: Mapping[str, str]) -> list[str]:
        """Our columns an existing table lacks (case-insensitive), for append/resume checks."""
        have = {name.lower() for name in existing}
        return [name for name in self.columns if name.lower() not in have]

    def new_columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Columns that `rows` use and the table lacks yet, typed from their first non-null value."""
        known = {name.lower() for name in self.columns}
        new: dict[str, str] = {}
        for row in rows:
            for name, value in row.items():
                if name.lower() in known:
                    continue
                sql_type = sql_type_of(value)
                if name not in new or (new[name] == "TEXT?" and sql_type):
                    new[name] = sql_type or "TEXT?"
        return {name: ("TEXT" if t == "TEXT?" else t) for name, t in new.items()}

    def add(self, columns: Mapping[str, str]) -> None:
        self.columns.update(columns)


#: Columns of a regions row added when first used: guided runs' guide counts, and the probabilities
#: of "no distinct objects" and of the object class named, from models that measure them.
#: qgis_plugin/fields.py mirrors the list.
WHEN_USED_COLUMNS = ("guide_objects", "guide_objects_left", "no_object_p", "object_p")


class RegionSchema(LayerSchema):
    kind = "regions"

    def __init__(self, attribute_fields: Sequence[str] = DEFAULT_ATTRIBUTE_FIELDS) -> None:
        self.attribute_fields = tuple(attribute_fields)
        columns = {"region_id": "TEXT", "scene": "TEXT", "description": "TEXT"}
        columns.update({name: "TEXT" for name in self.attribute_fields})
        columns.update({"extra_attributes": "TEXT", "valid_fraction": "REAL", "gsd_m": "REAL", "model": "TEXT",
                        "prompt": "TEXT", "created": "DATETIME", "error": "TEXT", "error_code": "TEXT",
                        "run_id": "TEXT"})
        super().__init__(columns)
        self._reserved = ({name.lower() for name in columns} | {FID_COLUMN, GEOMETRY_COLUMN}
                          | set(WHEN_USED_COLUMNS))
        self._input_columns: dict[str, str] = {}     # input attribute -> its column, fixed on first sight

    def input_column(self, name: str) -> str:
        """The column that holds the AOI attribute `name` (see the module docstring)."""
        return self.input_columns([name])[str(name)]

    def input_columns(self, names: Iterable[object]) -> dict[str, str]:
        """Columns for a record's input attributes, each distinct from ours and from each other
        (case-insensitively); an attribute keeps the column it got first for the writer's lifetime."""
        mapping = self._input_columns
        taken = {column.lower() for column in mapping.values()} | self._reserved
        fresh = [str(n) for n in names if str(n) not in mapping]
        for name in [n for n in fresh if n.lower() not in taken] + [n for n in fresh if n.lower() in taken]:
            column = name
            while column.lower() in taken:
                column = INPUT_PREFIX + column
            mapping[name] = column
            taken.add(column.lower())
        return {str(n): mapping[str(n)] for n in names}

    def key_of(self, record: RegionRecord) -> tuple[str, str]:
        return region_key(record.scene, record.region_id)

    def row(self, record: RegionRecord, run_id: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, value in (record.attributes or {}).items():
            name = ATTRIBUTE_ALIASES.get(name, name)
            (attributes if name in self.attribute_fields else extra)[name] = plain_value(value)
        row: dict[str, Any] = {"region_id": str(record.region_id), "scene": str(record.scene),
                               "description": record.description}
        row.update({name: attributes.get(name) for name in self.attribute_fields})
        row.update({"extra_attributes": json.dumps(extra) if extra else None,
                    "valid_fraction": plain_value(record.valid_fraction), "gsd_m": plain_value(record.gsd_m),
                    "model": record.model, "prompt": record.prompt, "created": _created(record.created),
                    "error": record.error, "error_code": record.error_code, "run_id": run_id})
        row.update(_guide_columns(record))
        for name in ("no_object_p", "object_p"):  # models that measure them (region tokens): added when first used
            value = getattr(record, name)
            if value is not None:
                row[name] = plain_value(value)
        properties = record.properties or {}
        columns = self.input_columns(list(properties))
        for name, value in properties.items():
            row[columns[str(name)]] = plain_value(value)
        return row


class TileSchema(LayerSchema):
    kind = "tiles"

    def __init__(self) -> None:
        super().__init__({"scene": "TEXT", "tile_index": "INTEGER", "row": "INTEGER", "col": "INTEGER",
                          "description": "TEXT", "valid_fraction": "REAL", "gsd_m": "REAL", "model": "TEXT",
                          "prompt": "TEXT", "created": "DATETIME", "error": "TEXT", "error_code": "TEXT",
                          "run_id": "TEXT"})

    def key_of(self, record: TileRecord) -> tuple[str, int]:
        return tile_key(record.scene, record.tile_index)

    def row(self, record: TileRecord, run_id: str) -> dict[str, Any]:
        return {"scene": str(record.scene), "tile_index": int(record.tile_index), "row": int(record.row),
                "col": int(record.col), "description": record.description,
                "valid_fraction": plain_value(record.valid_fraction), "gsd_m": plain_value(record.gsd_m),
                "model": record.model, "prompt": record.prompt, "created": _created(record.created),
                "error": record.error, "error_code": record.error_code, "run_id": run_id,
                **_guide_columns(record)}


def _guide_columns(record: RegionRecord | TileRecord) -> dict[str, Any]:
    """guide_objects / guide_objects_left of a guided run's row (columns added when first used)."""
    guide_objects: int | None = getattr(record, "guide_objects", None)
    if guide_objects is None:
        return {}
    return {"guide_objects": int(guide_objects), "guide_objects_left": int(record.guide_objects_left or 0)}


class ObjectSchema(RegionSchema):
    kind = "objects"

    def __init__(self, attribute_fields: Sequence[str] = DEFAULT_ATTRIBUTE_FIELDS) -> None:
        super().__init__(attribute_fields)
        self.add({"parent_layer": "TEXT", "parent_id": "TEXT", "attribute_text": "TEXT", "guide_status": "TEXT",
                  "guide_no_object_p": "REAL"})
        self._reserved |= {"parent_layer", "parent_id", "attribute_text", "guide_status", "guide_no_object_p"}

    def key_of(self, record: ObjectRecord) -> tuple[str, str]:   # type: ignore[override]
        """Objects are rewritten with their parent: keyed by (scene, parent id)."""
        return (str(record.scene), str(record.parent_id))

    def row(self, record: ObjectRecord, run_id: str) -> dict[str, Any]:   # type: ignore[override]
        row = super().row(record, run_id)
        row.update(parent_layer=record.parent_layer, parent_id=str(record.parent_id),
                   attribute_text=record.attribute_text, guide_status=record.guide_status,
                   guide_no_object_p=record.guide_no_object_p)
        return row


RUNS_COLUMNS = {
    "run_id": "TEXT", "status": "TEXT", "started": "DATETIME", "finished": "DATETIME",
    "model_id": "TEXT", "model_sha256": "TEXT",
    "mgimm_geo_version": "TEXT", "torch_version": "TEXT", "transformers_version": "TEXT",
    "rasterio_version": "TEXT", "gdal_version": "TEXT", "python_version": "TEXT",
    "parameters": "TEXT", "command_line": "TEXT",
    "regions_written": "INTEGER", "regions_failed": "INTEGER", "tiles_written": "INTEGER", "tiles_failed": "INTEGER",
}


#: what a writer's layers take
Record = RegionRecord | TileRecord
