"""Records -> GIS layers: one writer per output, chosen by the output's extension.

GeoPackage (.gpkg, the default) is written incrementally: every `write_regions` / `write_tiles` call
(a batch's rows with their guide objects) is one SQLite transaction, so a run killed at any moment
(Ctrl-C, kill -9, power loss) leaves a valid GeoPackage holding whole batches only, and
`mode="resume"` finishes the rest. While a run writes, the file is in SQLite's write-ahead-log mode
(`out.gpkg-wal`, `-shm` beside it: keep them with the file after a crash; GDAL and QGIS read them),
so an unfinished batch never touches the file and read-only readers need no recovery; closing folds
the log back into one self-contained file. WAL needs a local filesystem (not a network share).

GeoJSON (.geojson, EPSG:4326 lon/lat by RFC 7946), FlatGeobuf (.fgb, the regions layer's CRS) and
CSV (.csv, a `WKT` geometry column in EPSG:4326) hold one layer per file and are written when the
writer closes (also after an error or Ctrl-C, not after kill -9): they are neither incremental nor
resumable. Their tiles layer and run record go beside them: `<stem>_tiles<ext>`, `<stem>_runs.json`.

Modes (the CLI's flags):
- "create" (default): the output must not exist; OutputError otherwise.
- "overwrite": a new file replaces the old one. The new (empty) GeoPackage is built under a
  temporary name in the same folder and renamed over the old file once its schema is committed,
  so the path always holds a valid file; the old results are gone from that moment on (we
  write in place afterwards, which is what makes each batch durable).
- "append": a new run is added to an existing GeoPackage (creating it if missing); its layers
  must carry our columns, else OutputError. Rows of earlier runs stay, duplicates included.
- "resume": like append, but a record whose key (scene, region_id) or (scene, tile_index) is
  already in the layer replaces the old row: failed regions are retried without duplicates.
  Callers skip what `completed_region_keys()` / `completed_tile_keys()` return (rows without error
  and, in guided runs, with all their guide objects; a row's objects are replaced with it).

CRS: a layer takes the CRS of the first record written to it (the AOI's CRS for regions); later
records in another CRS are reprojected to it, vertex by vertex, with pyproj (always_xy).
Regions are stored as MULTIPOLYGON (a Polygon is promoted, as ogr2ogr -nlt PROMOTE_TO_MULTI does,
so one layer holds both); tiles as POLYGON.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Generic, Iterable, Literal, Sequence, TypeVar

import numpy as np
import pyproj
import shapely

from ..errors import OutputBusyError, OutputError
from . import gpkg, styles
from .provenance import RunInfo
from .schema import (DEFAULT_ATTRIBUTE_FIELDS, RUNS_COLUMNS, LayerSchema, ObjectRecord, ObjectSchema, Record,
                     RegionRecord, RegionSchema, ResumeKey,
                     TileRecord, TileSchema, region_key, tile_key)

log = logging.getLogger(__name__)

FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".fgb": "FlatGeobuf", ".csv": "CSV"}
MODES = ("create", "overwrite", "append", "resume")
RUNS_TABLE = "runs"
#: Each layer's geometry type (GeoPackage's name; `_OGR_TYPES` gives OGR's, for the other formats).
_GEOMETRY_TYPES = {"regions": "MULTIPOLYGON", "tiles": "POLYGON", "objects": "MULTIPOLYGON"}
_OGR_TYPES = {"MULTIPOLYGON": "MultiPolygon", "POLYGON": "Polygon"}
#: Layers whose counts the runs table keeps (guide objects are counted in the summary only).
_COUNTED = ("regions", "tiles")
#: The column that, with `scene`, keys a layer's rows (guide objects: their parent's id).
_KEY_COLUMNS = {"regions": "region_id", "tiles": "tile_index", "objects": "parent_id"}
_WGS84 = pyproj.CRS.from_epsg(4326)


def output_format(path: str | os.PathLike[str]) -> str:
    """The driver for an output path, from its extension; OutputError lists the supported ones."""
    suffix = Path(path).suffix.lower()
    _check_not_a_folder(Path(path), Path(path))       # before its name's extension is judged
    if suffix not in FORMATS:
        supported = ", ".join(f"{ext} ({name})" for ext, name in FORMATS.items())
        raise OutputError(f"Output {os.fspath(path)!r}: unknown extension {suffix or '(none)'!r}; "
                          f"supported: {supported}. Rename the output, e.g. {Path(path).stem}.gpkg.")
    return FORMATS[suffix]


def open_output(path: str | os.PathLike[str], *, mode: str = "create", run: RunInfo | None = None,
                regions_layer: str = "regions", tiles_layer: str = "tiles",
                attribute_fields: Sequence[str] = DEFAULT_ATTRIBUTE_FIELDS) -> "OutputWriter":
    """A writer for `path` (format from the extension); use it as a context manager.

    Raises OutputError when the output exists and mode is "create", when the mode does not suit
    the format (append/resume need a GeoPackage) or the existing file's layers are incompatible.
    """
    if mode not in MODES:
        raise OutputError(f"Output {os.fspath(path)!r}: unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    driver = output_format(path)
    run = run or RunInfo()
    if driver == "GPKG":
        return GeoPackageWriter(path, mode, run, regions_layer, tiles_layer, attribute_fields)
    return ExportWriter(path, driver, mode, run, regions_layer, tiles_layer, attribute_fields)


def objects_layer_name(regions_layer: str) -> str:
    """The guide objects' layer beside a regions layer (`objects`, unless that is the regions layer's name)."""
    return "objects" if regions_layer != "objects" else "guide_objects"


def completed_region_keys(path: str | os.PathLike[str], layer: str = "regions") -> set[tuple[str, str]]:
    """(scene, region_id) of the regions already described without error (and, in guided runs, with
    all their guide objects) in a GeoPackage."""
    return _completed(path, layer, "regions", objects_layer_name(layer))


def completed_tile_keys(path: str | os.PathLike[str], layer: str = "tiles",
                        objects_layer: str = "objects") -> set[tuple[str, int]]:
    """(scene, tile_index) of the tiles already described without error (and with all their guide
    objects) in a GeoPackage."""
    return _completed(path, layer, "tiles", objects_layer)


def earlier_tile_grids(path: str | os.PathLike[str]) -> set[tuple[int, int]]:
    """(tile_size, tile_overlap) of the tile runs a GeoPackage's `runs` table records: tiles are
    keyed by their index in the grid, so a resume must cut the same grid."""
    if not os.path.exists(path) or output_format(path) != "GPKG":
        return set()
    conn = _open_existing_gpkg(path, wal=None)
    try:
        if RUNS_TABLE not in gpkg.table_names(conn):
            return set()
        grids = set()
        for (text,) in conn.execute(f"SELECT parameters FROM {RUNS_TABLE}"):
            try:
                parameters = json.loads(text or "{}")
            except ValueError:
                continue
            if parameters.get("tiles") and "tile_size" in parameters:
                grids.add((int(parameters["tile_size"]), int(parameters.get("tile_overlap") or 0)))
        return grids
    finally:
        conn.close()


def _completed(path: str | os.PathLike[str], layer: str, kind: str, objects_layer: str) -> set[tuple[str, Any]]:
    if not os.path.exists(path):
        return set()
    output_format(path)
    conn = _open_existing_gpkg(path, wal=None)
    try:
        return _completed_keys(conn, layer, kind, objects_layer)
    finally:
        conn.close()


def _completed_keys(conn: sqlite3.Connection, layer: str, kind: str, objects_layer: str) -> set[tuple[str, Any]]:
    """Keys of the rows of `layer` (a regions or tiles layer) that resume may skip: described without
    error and, for rows of a guided run, holding as many rows in `objects_layer` as their
    `guide_objects` says. Rows whose objects are missing (an output written by a version that committed
    them apart, then killed between the two) are logged and left out, so they are described again."""
    tables = gpkg.table_names(conn)
    if layer not in tables:
        return set()
    id_column = _KEY_COLUMNS[kind]
    table = gpkg.quote(layer)
    complete = "1"
    if "guide_objects" in gpkg.table_columns(conn, layer):
        held = "0"
        if objects_layer in tables:
            held = (f"(SELECT COUNT(*) FROM {gpkg.quote(objects_layer)} AS o WHERE o.scene = p.scene AND "
                    f"o.parent_id = CAST(p.{id_column} AS TEXT) AND o.parent_layer = '{kind}')")
        complete = f"(p.guide_objects IS NULL OR p.guide_objects <= {held})"
    cast = int if kind == "tiles" else str
    done: set[tuple[str, str | int]] = set()
    incomplete: list[tuple[str, str | int]] = []
    for scene, ident, whole in conn.execute(f"SELECT p.scene, p.{id_column}, {complete} FROM {table} AS p "
                                            f"WHERE p.error IS NULL"):
        (done.add if whole else incomplete.append)((str(scene), cast(ident)))
    if incomplete:
        names = ", ".join(str(ident) for _, ident in incomplete[:5])
        more = f" and {len(incomplete) - 5} more" if len(incomplete) > 5 else ""
        log.warning("layer %s: %d %s marked done lack guide objects (their guide_objects counts more than layer %s "
                    "holds: %s%s); describing them again.", layer, len(incomplete), kind, objects_layer, names, more)
    return done


def _check_not_a_folder(path: Path, output: Path) -> None:
    """OutputError now when `path` (the output or a file written beside it) is a folder: it could
    never be written, and finding out at the end (after every region was described) loses the run."""
    if not path.is_dir():
        return
    if path == output:
        suffix = path.suffix if path.suffix.lower() in FORMATS else ".gpkg"
        raise OutputError(f"Output {path} is a folder; -o names the output file. Give a file inside it, "
                          f"e.g. -o {path / ('descriptions' + suffix)}, or another name.")
    raise OutputError(f"Output {output}: {path}, which is written beside it, is a folder; rename or remove that "
                      f"folder, or give -o another name.")


def _clobber_error(path: str | os.PathLike[str]) -> OutputError:
    return OutputError(f"Output {os.fspath(path)!r} already exists; pass --overwrite to replace it, --append to add "
                       "a new run to it, or --resume to finish an interrupted run (GeoPackage only).")


def _open_existing_gpkg(path: str | os.PathLike[str], wal: bool | None) -> sqlite3.Connection:
    try:
        conn = gpkg.connect(os.fspath(path), wal=wal)
        ok = gpkg.is_geopackage(conn)
    except sqlite3.Error as exc:
        raise OutputError(f"Output {os.fspath(path)!r} is not a readable GeoPackage ({exc}); choose another "
                          "output or pass --overwrite to replace it.") from exc
    if not ok:
        conn.close()
        raise OutputError(f"Output {os.fspath(path)!r} is an SQLite file but not a GeoPackage; choose another "
                          "output or pass --overwrite to replace it.")
    return conn


class _Reprojector:
    """Geometry from a record's CRS into a layer's CRS, with transformers cached per CRS pair."""

    def __init__(self) -> None:
        self._crs: dict[Any, pyproj.CRS] = {}
        self._transformers: dict[tuple[str, str], pyproj.Transformer | None] = {}

    def crs(self, value: Any) -> pyproj.CRS:
        key = value.srs if isinstance(value, pyproj.CRS) else str(value)
        if key not in self._crs:
            try:
                self._crs[key] = pyproj.CRS.from_user_input(value)
            except pyproj.exceptions.CRSError as exc:
                raise OutputError(f"Record CRS {str(value)[:80]!r} is not a CRS pyproj understands ({exc}); "
                                  "give an EPSG code or WKT.") from exc
        return self._crs[key]

    def __call__(self, geom: shapely.Geometry | None, src: Any, dst: pyproj.CRS) -> shapely.Geometry | None:
        if geom is None or geom.is_empty:
            return geom
        src_crs = self.crs(src)
        key = (src_crs.srs, dst.srs)
        if key not in self._transformers:
            self._transformers[key] = (None if src_crs.equals(dst)
                                       else pyproj.Transformer.from_crs(src_crs, dst, always_xy=True))
        transformer = self._transformers[key]
        if transformer is None:
            return geom
        return shapely.transform(geom, lambda x, y: transformer.transform(x, y),
                                 interleaved=False)


def _shaped(geom: shapely.Geometry | None, kind: str, what: str) -> shapely.Geometry | None:
    """2-D geometry of the layer's type: polygons promoted to multipolygons for the regions and objects layers."""
    if geom is None:
        return None
    geom = shapely.force_2d(geom)
    wanted = _OGR_TYPES[_GEOMETRY_TYPES[kind]]
    if geom.geom_type == wanted or geom.is_empty:
        return geom
    if wanted == "MultiPolygon" and geom.geom_type == "Polygon":
        return shapely.MultiPolygon([geom])
    raise OutputError(f"{what}: geometry is a {geom.geom_type}, the {kind} layer holds {wanted}s; "
                      "pass polygonal AOIs (or buffer points and lines first, e.g. --buffer).")


_Schema = TypeVar("_Schema", bound=LayerSchema, covariant=True)
#: a layer's row: its geometry in the layer's CRS and its column values
_Row = tuple[shapely.Geometry | None, dict[str, Any]]


class _Layer(Generic[_Schema]):
    """A layer's schema plus where it lives and in which CRS."""

    def __init__(self, name: str, schema: _Schema) -> None:
        self.name = name
        self.schema = schema
        self.crs: pyproj.CRS | None = None
        self.srs_id: int | None = None
        self.exists = False


_Writer = TypeVar("_Writer", bound="OutputWriter")


class OutputWriter:
    """Common part: record -> (geometry in layer CRS, row) and the run's counters."""

    driver = ""

    def __init__(self, path: str | os.PathLike[str], mode: str, run: RunInfo, regions_layer: str, tiles_layer: str,
                 attribute_fields: Sequence[str]) -> None:
        self.path = Path(path)
        self.mode = mode
        self.run = run
        self.regions = _Layer(regions_layer, RegionSchema(attribute_fields))
        self.tiles = _Layer(tiles_layer, TileSchema())
        self.objects = _Layer(objects_layer_name(regions_layer), ObjectSchema(attribute_fields))
        self.counts = {"regions_written": 0, "regions_failed": 0, "tiles_written": 0, "tiles_failed": 0,
                       "objects_written": 0, "objects_failed": 0}
        self._reproject = _Reprojector()
        self.closed = False
        self.row_order: Callable[[ResumeKey], int | None] | None = None

    def follow_order(self, row_order: Callable[[ResumeKey], int | None]) -> None:
        """Write the regions and tiles rows in the run's own order: `row_order(key)` is a row's place
        in its AOI or tile grid (None: none), whatever order its batch came in (batches are cut by
        locality and answer length, errors come first). A GeoPackage gives each row the feature id
        of its place after the rows the layer held before the run (a resumed run's rows keep the places
        they were first given); single-layer formats sort the rows before writing them."""
        self.row_order = row_order

    # -- public API
    def write_regions(self, records: Iterable[RegionRecord], objects: Iterable[ObjectRecord] = ()) -> None:
        """Write one batch of region records and their guide objects (guided runs). For GeoPackage one
        transaction holds both, so no row is ever committed without its objects (a kill between two
        commits would leave rows that resume counts as done)."""
        self._write_batch([(self.regions, list(records)), (self.objects, list(objects))])

    def write_tiles(self, records: Iterable[TileRecord], objects: Iterable[ObjectRecord] = ()) -> None:
        """Write one batch of tile records and their guide objects (for GeoPackage: one transaction)."""
        self._write_batch([(self.tiles, list(records)), (self.objects, list(objects))])

    def completed_region_keys(self) -> set[tuple[str, str]]:
        return set()

    def completed_tile_keys(self) -> set[tuple[str, int]]:
        return set()

    def close(self, status: str = "finished") -> None:
        """Record the run's status in `runs` and close: finished, interrupted (Ctrl-C, SIGTERM), failed, or
        cancelled (a client's cancel: its caller closes with it, as leaving the `with` block says finished)."""
        raise NotImplementedError

    def __enter__(self: _Writer) -> _Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is None:
            status = "finished"
        else:
            # Ctrl-C, or a signal the CLI turns into SystemExit (SIGTERM: batch/cli.py)
            status = "interrupted" if issubclass(exc_type, (KeyboardInterrupt, SystemExit)) else "failed"
        self.close(status)
        return False

    # -- shared helpers
    def _layer_rows(self, layer: _Layer[LayerSchema], records: Sequence[Record]) -> list[_Row]:
        if layer.crs is None:
            first = next((r for r in records if r.crs is not None), None)
            if first is None:
                raise OutputError(f"Layer {layer.name!r} of {self.path}: no record carries a CRS; "
                                  "set RegionRecord.crs / TileRecord.crs.")
            layer.crs = self._layer_crs(self._reproject.crs(first.crs))
        rows = []
        for record in records:
            what = f"{layer.schema.kind[:-1]} {layer.schema.key_of(record)} of {self.path}"
            geom = _shaped(record.geometry, layer.schema.kind, what)
            if geom is not None and record.crs is None:
                raise OutputError(f"{what}: the record has a geometry but no CRS; set its crs.")
            rows.append((self._reproject(geom, record.crs, layer.crs), layer.schema.row(record, self.run.run_id)))
            key = "written" if record.error is None else "failed"
            self.counts[f"{layer.schema.kind}_{key}"] += 1
        return rows

    def _layer_crs(self, first_record_crs: pyproj.CRS) -> pyproj.CRS:
        return first_record_crs

    def _write_batch(self, batch: list[tuple[_Layer[LayerSchema], Sequence[Record]]]) -> None:
        if self.closed:
            raise OutputError(f"Output {self.path}: the writer is closed.")
        batch = [(layer, records) for layer, records in batch if records]
        if batch:
            self._write(batch)

    def _write(self, batch: list[tuple[_Layer[LayerSchema], Sequence[Record]]]) -> None:
        """Write non-empty (layer, records) pairs as one batch: parents first, then their guide objects."""
        raise NotImplementedError


# ============================================================================== GeoPackage
class GeoPackageWriter(OutputWriter):
    """Incremental, transactional GeoPackage output (see the module docstring)."""

    driver = "GPKG"

    def __init__(self, path: str | os.PathLike[str], mode: str, run: RunInfo, regions_layer: str, tiles_layer: str,
                 attribute_fields: Sequence[str]) -> None:
        super().__init__(path, mode, run, regions_layer, tiles_layer, attribute_fields)
        if self.regions.name == self.tiles.name or RUNS_TABLE in (self.regions.name, self.tiles.name):
            raise OutputError(f"Output {self.path}: layer names must differ from each other and from "
                              f"{RUNS_TABLE!r}; choose another --layer.")
        exists = self.path.exists()         # (open_output's output_format has refused a folder)
        if exists and mode == "create":
            raise _clobber_error(self.path)
        self._lock: int | None = None
        self._fid_bases: dict[str, int] = {}       # layer -> the feature id before this run's first place
        if exists:
            self._lock = _lock_output(self.path)      # before anything changes: another run may be writing it
        try:
            if mode == "overwrite" or not exists:
                self.conn = self._create_file()
            else:
                self.conn = _open_existing_gpkg(self.path, wal=True)
                try:
                    self._load_layers()
                except BaseException:
                    gpkg.finish(self.conn)
                    raise
        except BaseException:
            _unlock(self._lock)
            raise
        try:
            with gpkg.transaction(self.conn):
                if RUNS_TABLE not in gpkg.table_names(self.conn):
                    gpkg.create_attributes_table(self.conn, RUNS_TABLE, RUNS_COLUMNS,
                                                 description="mgimm-geo runs: provenance")
                if self._lock is not None and mode != "overwrite":
                    # this run holds the output's lock, so a run still marked running died unrecorded (killed);
                    # where no lock can be taken (_lock_output: no flock), another run may still be writing
                    self.conn.execute(f"UPDATE {RUNS_TABLE} SET status = 'interrupted' WHERE status = 'running'")
                row = run.row()
                self.conn.execute(f"INSERT INTO {RUNS_TABLE} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                  tuple(row.values()))
        except sqlite3.Error as exc:
            self.conn.close()
            _unlock(self._lock)
            raise OutputError(f"Output {self.path}: cannot record the run ({exc}); is the file locked by "
                              "another program?") from exc

    def _create_file(self) -> sqlite3.Connection:
        """Build an empty GeoPackage under a temporary name, then rename it onto the output path."""
        _check_writable_folder(self.path)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        _remove_with_journals(tmp)
        try:
            conn = gpkg.connect(os.fspath(tmp))
            with gpkg.transaction(conn):
                gpkg.initialise(conn)
                gpkg.create_attributes_table(conn, RUNS_TABLE, RUNS_COLUMNS,
                                             description="mgimm-geo runs: provenance")
            conn.close()
            old_lock, self._lock = self._lock, _lock_output(tmp)    # the lock travels with the new file
            _unlock(old_lock)
            # A journal left by the old file would be replayed into the new one: remove it first.
            for suffix in ("-journal", "-wal", "-shm"):
                _remove(Path(os.fspath(self.path) + suffix))
            if self.mode == "overwrite":
                os.replace(tmp, self.path)
            else:                        # create: never over a file another run made meanwhile
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    raise OutputBusyError(f"Output {self.path} was just created by another run; two runs "
                                          f"cannot write one output. Wait for it, or write to another "
                                          f"output.") from None
                finally:
                    _remove(tmp)
        except (OSError, sqlite3.Error) as exc:
            _remove_with_journals(tmp)
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"Output {self.path}: cannot create the GeoPackage ({exc}); check the folder "
                              "exists and is writable.") from exc
        return gpkg.connect(os.fspath(self.path), wal=True)

    def _load_layers(self) -> None:
        """Read back the state of existing layers; check they carry our columns."""
        names = gpkg.table_names(self.conn)
        for layer in (self.regions, self.tiles, self.objects):
            layer.exists = layer.name in names
            if not layer.exists:
                continue
            existing = gpkg.table_columns(self.conn, layer.name)
            missing = layer.schema.missing_columns(existing)
            try:
                layer.srs_id, geometry_type = gpkg.layer_srs_id(self.conn, layer.name)
            except KeyError:
                missing.append(gpkg.GEOMETRY_COLUMN)
                geometry_type = None
            if missing or geometry_type != _GEOMETRY_TYPES[layer.schema.kind]:
                raise OutputError(
                    f"Output {self.path}: layer {layer.name!r} is not an mgimm-geo {layer.schema.kind} layer "
                    f"(missing columns: {', '.join(missing) or 'none'}; geometry type {geometry_type}). "
                    "Write to another --layer, another output, or pass --overwrite.")
            assert layer.srs_id is not None     # read just above (without a geometry column, `missing` raised)
            layer.crs = gpkg.srs_crs(self.conn, layer.srs_id)
            lower = {name.lower() for name in layer.schema.columns}
            layer.schema.add({name: t for name, t in existing.items()
                              if name.lower() not in lower and name not in (gpkg.FID_COLUMN, gpkg.GEOMETRY_COLUMN)})

    def _write(self, batch: list[tuple[_Layer[LayerSchema], Sequence[Record]]]) -> None:
        counts_before = dict(self.counts)
        try:
            prepared = [(layer, records, self._layer_rows(layer, records)) for layer, records in batch]
            with gpkg.transaction(self.conn):
                for layer, records, rows in prepared:
                    self._insert(layer, records, rows)
        except BaseException as exc:
            self.counts = counts_before
            self._load_layers_after_rollback()
            if isinstance(exc, sqlite3.Error):
                names = " and ".join(repr(layer.name) for layer, _ in batch)
                raise OutputError(f"Output {self.path}: writing layer {names} failed ({exc}); the batch "
                                  "was rolled back, earlier batches are kept.") from exc
            raise
        try:
            gpkg.checkpoint(self.conn)   # keep the .gpkg itself current; the log stays valid if this fails
        except sqlite3.Error:
            pass

    def _insert(self, layer: _Layer[LayerSchema], records: Sequence[Record], rows: list[_Row]) -> None:
        """One layer's part of a batch, inside its transaction."""
        if not layer.exists:
            self._fid_bases.setdefault(layer.name, 0)
            self._create_layer(layer)
        values = [row for _, row in rows]
        new = layer.schema.new_columns(values)
        if new:
            gpkg.add_columns(self.conn, layer.name, new)
            layer.schema.add(new)
        names = list(layer.schema.columns)
        rows = [(geom, {n: row.get(n) for n in names}) for geom, row in rows]
        base = self._fid_base(layer)
        if self.mode == "resume":
            self._delete_keys(layer, records)
        assert layer.srs_id is not None         # the layer exists: read by _load_layers or created just above
        gpkg.insert_features(self.conn, layer.name, layer.srs_id, rows, self._fids(layer, records, base))
        kind = layer.schema.kind
        if kind in _COUNTED:
            self.conn.execute(
                f"UPDATE {RUNS_TABLE} SET {kind}_written = ?, {kind}_failed = ? WHERE run_id = ?",
                (self.counts[f"{kind}_written"], self.counts[f"{kind}_failed"], self.run.run_id))

    def _fid_base(self, layer: _Layer[LayerSchema]) -> int | None:
        """The feature id before this run's first place (`follow_order`), fixed at its first batch:
        0 in a new layer, the layer's last id when appending; when resuming, the base the rows it
        finds were written with (the commonest fid - place), so the rows it adds fill their places.
        None: the run follows no order, or for the objects layer (linked to its parents by id)."""
        kind = layer.schema.kind
        if self.row_order is None or kind == "objects":
            return None
        if layer.name not in self._fid_bases:
            base = gpkg.last_fid(self.conn, layer.name)
            if self.mode == "resume":
                key = tile_key if kind == "tiles" else region_key
                bases: Counter[int] = Counter()
                for fid, scene, ident in self.conn.execute(f"SELECT {gpkg.FID_COLUMN}, scene, {_KEY_COLUMNS[kind]} "
                                                           f"FROM {gpkg.quote(layer.name)}"):
                    place = self.row_order(key(scene, ident))
                    if place is not None and fid > place:
                        bases[fid - place - 1] += 1
                if bases:            # only a clear majority: rows of other runs or another AOI vote apart
                    top, votes = bases.most_common(1)[0]
                    base = top if 2 * votes > sum(bases.values()) else base
            self._fid_bases[layer.name] = base
        return self._fid_bases[layer.name]

    def _fids(self, layer: _Layer[LayerSchema], records: Sequence[Record], base: int | None) -> list[int | None]:
        """Each record's feature id: base + its place + 1; a record without a place, or whose id a
        row holds already (another run's, in an appended layer) or an earlier record of the batch
        wants (a scene given twice), gets an id after all of them. None for all: SQLite's next ids."""
        if base is None or self.row_order is None:
            return [None] * len(records)
        wanted = [None if (place := self.row_order(layer.schema.key_of(r))) is None else base + place + 1
                  for r in records]
        taken = gpkg.taken_fids(self.conn, layer.name, [f for f in wanted if f is not None])
        fids: list[int | None] = []
        for fid in wanted:
            if fid is None or fid in taken:
                fids.append(None)
            else:
                fids.append(fid)
                taken.add(fid)
        # given here, not left to SQLite: its next id could be one a later record of this batch wants
        next_free = max([gpkg.last_fid(self.conn, layer.name), *(f for f in fids if f is not None)]) + 1
        for i, fid in enumerate(fids):
            if fid is None:
                fids[i], next_free = next_free, next_free + 1
        return fids

    def _create_layer(self, layer: _Layer[LayerSchema]) -> None:
        assert layer.crs is not None            # _layer_rows set it from the batch's first record
        layer.srs_id = gpkg.ensure_srs(self.conn, layer.crs)
        kind = layer.schema.kind
        gpkg.create_feature_table(self.conn, layer.name, _GEOMETRY_TYPES[kind], layer.srs_id, layer.schema.columns,
                                  description=f"mgimm-geo {kind} descriptions")
        key_column = _KEY_COLUMNS[kind]
        self.conn.execute(f"CREATE INDEX {gpkg.quote(f'{layer.name}_key_idx')} ON {gpkg.quote(layer.name)} "
                          f"(scene, {key_column})")
        styles.write_default_style(self.conn, layer.name, kind)
        layer.exists = True

    def _load_layers_after_rollback(self) -> None:
        """After a rolled-back batch, forget schema changes that did not reach the file."""
        regions_crs, tiles_crs, objects_crs = self.regions.crs, self.tiles.crs, self.objects.crs
        self.regions.schema = RegionSchema(self.regions.schema.attribute_fields)
        self.tiles.schema = TileSchema()
        self.objects.schema = ObjectSchema(self.objects.schema.attribute_fields)
        for layer in (self.regions, self.tiles, self.objects):
            layer.exists, layer.srs_id, layer.crs = False, None, None
        try:
            self._load_layers()
        except (OutputError, sqlite3.Error):
            pass
        if not self.regions.exists:
            self.regions.crs = regions_crs
        if not self.tiles.exists:
            self.tiles.crs = tiles_crs
        if not self.objects.exists:
            self.objects.crs = objects_crs

    def _delete_keys(self, layer: _Layer[LayerSchema], records: Sequence[Record]) -> None:
        """Resume: the rows these records replace, and the guide objects of those rows (objects are
        written only with their parents, so they are deleted with them)."""
        kind = layer.schema.kind
        if kind == "objects":
            return
        keys = [layer.schema.key_of(r) for r in records]
        self.conn.executemany(f"DELETE FROM {gpkg.quote(layer.name)} WHERE scene = ? AND {_KEY_COLUMNS[kind]} = ?",
                              keys)
        if self.objects.exists:
            self.conn.executemany(f"DELETE FROM {gpkg.quote(self.objects.name)} WHERE scene = ? AND parent_id = ? "
                                  f"AND parent_layer = ?", [(scene, str(ident), kind) for scene, ident in keys])

    def completed_region_keys(self) -> set[tuple[str, str]]:
        return _completed_keys(self.conn, self.regions.name, "regions", self.objects.name)

    def completed_tile_keys(self) -> set[tuple[str, int]]:
        return _completed_keys(self.conn, self.tiles.name, "tiles", self.objects.name)

    def close(self, status: str = "finished") -> None:
        """Mark the run finished (or interrupted/failed/cancelled) and close the file."""
        if self.closed:
            return
        self.closed = True
        error: sqlite3.Error | None = None
        try:
            with gpkg.transaction(self.conn):
                self.conn.execute(f"UPDATE {RUNS_TABLE} SET status = ?, finished = ? WHERE run_id = ?",
                                  (status, gpkg.now_iso(), self.run.run_id))
        except sqlite3.Error as exc:     # disk full, say: the batches committed so far stay valid
            error = exc
        try:
            gpkg.finish(self.conn)
        except sqlite3.Error as exc:     # a reader (QGIS, say) has it open: it stays in WAL mode, still valid
            log.warning("Output %s: left in write-ahead-log mode (%s; another program has it open); keep "
                        "the %s-wal and -shm files beside it until it is next opened.", self.path, exc, self.path.name)
        finally:
            _unlock(self._lock)
            self._lock = None
        if error is not None and status == "finished":
            # After a failure the cause is already on its way up; this would only hide it.
            raise OutputError(f"Output {self.path}: the rows are written but the run could not be marked "
                              f"finished ({error}); once the file is writable again (free disk space, close "
                              f"programs that hold it), --resume completes it.") from error


def _lock_output(path: Path) -> int | None:
    """An exclusive advisory lock (flock) on a GeoPackage while this writer uses it; OutputBusyError
    when another run holds it. Released by `_unlock`, or by the system when the process dies (kill -9).
    None where flock does not exist (Windows): there two writers are not detected."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError as exc:
        raise OutputError(f"Output {path}: cannot be opened ({exc.strerror}); check it is a readable file.") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputBusyError(f"Output {path} is being written by another mgimm-geo run now; two runs cannot "
                              f"write one output. Wait for it to finish (then --resume adds what is missing), "
                              f"or write to another output.") from None
    except OSError:           # a filesystem without flock: write unguarded, as before
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _remove_with_journals(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        _remove(Path(os.fspath(path) + suffix))


# ================================================================= GeoJSON, FlatGeobuf, CSV
class ExportWriter(OutputWriter):
    """Single-layer formats: rows are kept in memory and written when the writer closes."""

    def __init__(self, path: str | os.PathLike[str], driver: str, mode: str, run: RunInfo, regions_layer: str,
                 tiles_layer: str, attribute_fields: Sequence[str]) -> None:
        super().__init__(path, mode, run, regions_layer, tiles_layer, attribute_fields)
        self.driver = driver
        if mode in ("append", "resume"):
            raise OutputError(f"Output {self.path}: --{mode} needs a GeoPackage output (.gpkg); {driver} files "
                              "are written once at the end of a run. Use -o NAME.gpkg, or --overwrite.")
        self.tiles_path = self.path.with_name(f"{self.path.stem}_tiles{self.path.suffix}")
        self.objects_path = self.path.with_name(f"{self.path.stem}_objects{self.path.suffix}")
        self.runs_path = self.path.with_name(f"{self.path.stem}_runs.json")
        for target in (self.path, self.tiles_path, self.objects_path, self.runs_path):
            _check_not_a_folder(target, self.path)
            if mode == "create" and target.exists():
                raise _clobber_error(target)
        _check_writable_folder(self.path)     # now, not after every region was described
        self._rows: dict[str, list[_Row]] = {"regions": [], "tiles": [], "objects": []}
        self._places: dict[str, list[int | None]] = {kind: [] for kind in self._rows}   # follow_order
        self.written: list[Path] = []

    def _layer_crs(self, first_record_crs: pyproj.CRS) -> pyproj.CRS:
        # RFC 7946 GeoJSON is lon/lat WGS 84; CSV has no place for a CRS, so it is WGS 84 too.
        return first_record_crs if self.driver == "FlatGeobuf" else _WGS84

    def _write(self, batch: list[tuple[_Layer[LayerSchema], Sequence[Record]]]) -> None:
        for layer, records in batch:
            rows = self._layer_rows(layer, records)
            new = layer.schema.new_columns([row for _, row in rows])
            layer.schema.add(new)
            kind = layer.schema.kind
            self._rows[kind].extend(rows)
            order = self.row_order if self.row_order is not None and kind != "objects" else None
            self._places[kind].extend(order(layer.schema.key_of(r)) if order is not None else None for r in records)

    def close(self, status: str = "finished") -> None:
        """Write the layers (the regions layer, or the tiles layer if only tiles were written)."""
        if self.closed:
            return
        self.closed = True
        for kind, rows in self._rows.items():          # in the run's order (follow_order); no place: last
            places = self._places[kind]
            rows[:] = [rows[i] for i in sorted(range(len(rows)), key=lambda i: (places[i] is None, places[i] or 0))]
        region_rows, tile_rows = self._rows["regions"], self._rows["tiles"]
        targets: list[tuple[Path, _Layer[LayerSchema], list[_Row]]] = []
        if region_rows or not tile_rows:
            targets.append((self.path, self.regions, region_rows))
            if tile_rows:
                targets.append((self.tiles_path, self.tiles, tile_rows))
        else:
            targets.append((self.path, self.tiles, tile_rows))
        if self._rows["objects"]:
            targets.append((self.objects_path, self.objects, self._rows["objects"]))
        for target, layer, rows in targets:
            self._write_layer(target, layer, rows)
            self.written.append(target)
        run_row = self.run.row()
        run_row.update(self.counts, status=status, finished=gpkg.now_iso())
        run_row["parameters"] = json.loads(run_row["parameters"])
        _atomic_write_text(self.runs_path, json.dumps(run_row, indent=2) + "\n")
        self.written.append(self.runs_path)

    def _write_layer(self, target: Path, layer: _Layer[LayerSchema], rows: list[_Row]) -> None:
        import pyogrio.raw

        names = list(layer.schema.columns)
        field_data, field_mask = [], []
        for name in names:
            data, mask = _field_array([row.get(name) for _, row in rows], layer.schema.columns[name])
            field_data.append(data)
            field_mask.append(mask)
        geometry = np.array([None if g is None else shapely.to_wkb(g, output_dimension=2) for g, _ in rows],
                            dtype=object)
        crs = layer.crs or (_WGS84 if self.driver != "FlatGeobuf" else None)
        options = {"GeoJSON": {"RFC7946": "YES"}, "CSV": {"GEOMETRY": "AS_WKT"}}.get(self.driver, {})
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
        _remove(tmp)
        try:
            pyogrio.raw.write(os.fspath(tmp), geometry, field_data, names, field_mask=field_mask, layer=layer.name,
                              driver=self.driver, geometry_type=_OGR_TYPES[_GEOMETRY_TYPES[layer.schema.kind]],
                              crs=crs.to_wkt() if crs is not None else None,
                              layer_options=options)
            os.replace(tmp, target)
        except Exception as exc:
            _remove(tmp)
            raise OutputError(f"Output {target}: writing {self.driver} failed ({exc}); check the folder is "
                              "writable, or write a GeoPackage (.gpkg).") from exc


def _check_writable_folder(path: Path) -> None:
    """OutputError unless a file can be created (and removed) in `path`'s folder, made if missing."""
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"Output {path}: cannot write in its folder {path.parent} ({exc.strerror}); choose a "
                          f"writable folder for -o, or make this one writable.") from exc


def _field_array(values: list[Any], sql_type: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A pyogrio field column and its null mask for one GeoPackage column type."""
    mask = np.array([v is None for v in values], dtype=bool)
    kind = sql_type.split("(")[0].upper()
    if kind in ("INTEGER", "BOOLEAN", "REAL"):
        dtype = {"INTEGER": np.int64, "BOOLEAN": np.bool_, "REAL": np.float64}[kind]
        filler = 0 if kind != "REAL" else np.nan
        data: np.ndarray = np.array([filler if v is None else v for v in values], dtype=dtype)
        return data, mask if mask.any() else None
    data = np.array([None if v is None else (v.hex() if isinstance(v, (bytes, bytearray)) else str(v))
                     for v in values], dtype=object)
    return data, None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
