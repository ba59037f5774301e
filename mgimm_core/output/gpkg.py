"""A minimal GeoPackage 1.4 writer on the standard library's sqlite3.

Why not GDAL: we need to own the transactions. Every batch of results is one SQLite transaction
(rollback journal, synchronous=FULL), so a process killed at any moment leaves a file that holds
whole batches only; the next opener rolls an unfinished batch back from the hot journal.

Only what the GeoPackage standard (OGC 12-128r18) requires for vector features and attribute tables
is written: the `application_id`/`user_version` header, `gpkg_spatial_ref_sys` with its three
required rows, `gpkg_contents` (with extents), `gpkg_geometry_columns`, and GeoPackageBinary
geometries with an xy envelope. No spatial index (rtree) is created; GDAL can add one later:
``ogrinfo out.gpkg -sql "SELECT CreateSpatialIndex('regions', 'geom')"``.

Coordinates are stored in the traditional GIS order (x = easting / longitude), as GDAL does.
"""

from __future__ import annotations

import math
import sqlite3
import struct
from datetime import datetime, timezone
from types import TracebackType
from typing import Iterable, Literal, Mapping, Sequence

import pyproj
import shapely

GPKG_APPLICATION_ID = 0x47504B47          # "GPKG"
GPKG_USER_VERSION = 10300                 # GeoPackage 1.3.0: GDAL < 3.7 (QGIS 3.22) warns on 1.4
GEOMETRY_COLUMN = "geom"
FID_COLUMN = "fid"
CUSTOM_SRS_ID_START = 100000              # GDAL's convention for CRSs without an EPSG code

_WGS84_WKT = pyproj.CRS.from_epsg(4326).to_wkt("WKT1_GDAL")


def now_iso() -> str:
    """The current UTC time in the GeoPackage DATETIME form (ISO 8601, milliseconds, 'Z')."""
    return iso_utc(datetime.now(timezone.utc))


def iso_utc(value: datetime) -> str:
    """A datetime as 'YYYY-MM-DDTHH:MM:SS.sssZ' in UTC (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def quote(name: str) -> str:
    """An SQL identifier in double quotes (any column name an AOI may carry is safe)."""
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------------------ geometry
def encode_geometry(geom: shapely.Geometry | None, srs_id: int) -> bytes | None:
    """GeoPackageBinary: 'GP', version 0, flags, srs_id, xy envelope, then ISO WKB (2-D, LE)."""
    if geom is None:
        return None
    if geom.is_empty:
        flags = 0b0001_0001                       # empty, no envelope, little endian
        header = struct.pack("<2sBBi", b"GP", 0, flags, srs_id)
    else:
        minx, miny, maxx, maxy = geom.bounds
        flags = 0b0000_0011                       # envelope [minx, maxx, miny, maxy], little endian
        header = struct.pack("<2sBBi4d", b"GP", 0, flags, srs_id, minx, maxx, miny, maxy)
    wkb: bytes = shapely.to_wkb(geom, output_dimension=2, byte_order=1, flavor="iso")
    return header + wkb


def decode_geometry(blob: bytes | None) -> shapely.Geometry | None:
    """The shapely geometry of a GeoPackageBinary blob (used by tests and resume checks)."""
    if blob is None:
        return None
    if blob[:2] != b"GP":
        raise ValueError("not a GeoPackageBinary geometry (no 'GP' magic)")
    flags = blob[3]
    envelope_doubles = {0: 0, 1: 4, 2: 6, 3: 6, 4: 8}[(flags >> 1) & 0b111]
    return shapely.from_wkb(blob[8 + 8 * envelope_doubles:])


# ----------------------------------------------------------------------------- the container
_CORE_TABLES = """
CREATE TABLE gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL PRIMARY KEY,
  organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL,
  definition TEXT NOT NULL,
  description TEXT
);
CREATE TABLE gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY,
  data_type TEXT NOT NULL,
  identifier TEXT UNIQUE,
  description TEXT DEFAULT '',
  last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER,
  CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id)
);
CREATE TABLE gpkg_geometry_columns (
  table_name TEXT NOT NULL,
  column_name TEXT NOT NULL,
  geometry_type_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL,
  z TINYINT NOT NULL,
  m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
  CONSTRAINT uk_gc_table_name UNIQUE (table_name),
  CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id)
);
"""


def connect(path: str, *, wal: bool | None = False) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are opened explicitly with `transaction`.

    wal=True while a run writes: with a write-ahead log an unfinished transaction never touches
    the database file, so after kill -9 a read-only reader (GDAL, QGIS) still opens it (with a
    rollback journal it would first need write access to roll back the "hot" journal).
    `finish` switches back to a self-contained single file. wal=None leaves the mode as it is
    (for short reads that must not wait for a running writer).
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    if wal is not None:
        conn.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
    conn.execute("PRAGMA synchronous=FULL")       # a committed batch survives power loss
    return conn


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy committed pages from the write-ahead log into the database file (no-op without WAL)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def finish(conn: sqlite3.Connection) -> None:
    """Fold the write-ahead log back into the file and leave it in rollback-journal mode, then close."""
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


class transaction:
    """`with transaction(conn):` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:      # SQLite may have rolled back itself (disk full): keep the cause
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        return False


def initialise(conn: sqlite3.Connection) -> None:
    """Write the GeoPackage header and core tables into an empty database (inside a transaction)."""
    conn.execute(f"PRAGMA application_id = {GPKG_APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {GPKG_USER_VERSION}")
    for statement in _CORE_TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany(
        "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
        [("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
         ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
         ("WGS 84 geodetic", 4326, "EPSG", 4326, _WGS84_WKT,
          "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid")])


def is_geopackage(conn: sqlite3.Connection) -> bool:
    """True when the file carries the GeoPackage application id and core tables."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    if app_id != GPKG_APPLICATION_ID:
        return False
    names = table_names(conn)
    return {"gpkg_spatial_ref_sys", "gpkg_contents", "gpkg_geometry_columns"} <= names


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def table_columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """Column name -> declared type, in table order."""
    return {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({quote(table)})")}


# ---------------------------------------------------------------------------------------- CRS
def _crs_definition(crs: pyproj.CRS) -> str:
    try:
        return crs.to_wkt("WKT1_GDAL")
    except pyproj.exceptions.CRSError:
        return crs.to_wkt()


def ensure_srs(conn: sqlite3.Connection, crs: pyproj.CRS) -> int:
    """The srs_id of `crs` in gpkg_spatial_ref_sys, registering it first if needed.

    A CRS with an EPSG code keeps that code as srs_id (what GDAL and QGIS expect); any other CRS
    gets the next free id from 100000 with organization 'NONE'.
    """
    auth = crs.to_authority(min_confidence=100)
    if auth is not None and auth[0].upper() == "EPSG":
        code = int(auth[1])
        row = conn.execute("SELECT srs_id FROM gpkg_spatial_ref_sys WHERE srs_id = ?", (code,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'EPSG', ?, ?, NULL)",
                         (crs.name, code, code, _crs_definition(crs)))
        return code
    definition = _crs_definition(crs)
    for srs_id, existing in conn.execute(
            "SELECT srs_id, definition FROM gpkg_spatial_ref_sys WHERE srs_id >= ?", (CUSTOM_SRS_ID_START,)):
        if existing == definition or _same_crs(existing, crs):
            found: int = srs_id         # an INTEGER column
            return found
    (top,) = conn.execute("SELECT MAX(srs_id) FROM gpkg_spatial_ref_sys").fetchone()
    srs_id = max(CUSTOM_SRS_ID_START, (top or 0) + 1)
    conn.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'NONE', ?, ?, NULL)",
                 (crs.name or "unnamed", srs_id, srs_id, definition))
    return srs_id


def _same_crs(definition: str, crs: pyproj.CRS) -> bool:
    try:
        return pyproj.CRS.from_wkt(definition).equals(crs)
    except pyproj.exceptions.CRSError:
        return False


def srs_crs(conn: sqlite3.Connection, srs_id: int) -> pyproj.CRS | None:
    """The pyproj CRS behind an srs_id (None for the 'undefined' rows)."""
    row = conn.execute("SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys "
                       "WHERE srs_id = ?", (srs_id,)).fetchone()
    if row is None or row[2] == "undefined":
        return None
    if row[0].upper() == "EPSG":
        return pyproj.CRS.from_epsg(row[1])
    return pyproj.CRS.from_wkt(row[2])


# ------------------------------------------------------------------------------------- tables
def create_feature_table(conn: sqlite3.Connection, table: str, geometry_type: str, srs_id: int,
                         columns: Mapping[str, str], description: str = "") -> None:
    """A features table `fid`, `geom` + `columns` (name -> GeoPackage type), registered in contents."""
    body = [f"{FID_COLUMN} INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
            f"{GEOMETRY_COLUMN} {geometry_type}"]
    body += [f"{quote(name)} {sql_type}" for name, sql_type in columns.items()]
    conn.execute(f"CREATE TABLE {quote(table)} ({', '.join(body)})")
    conn.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change, srs_id) "
                 "VALUES (?, 'features', ?, ?, ?, ?)", (table, table, description, now_iso(), srs_id))
    conn.execute("INSERT INTO gpkg_geometry_columns VALUES (?, ?, ?, ?, 0, 0)",
                 (table, GEOMETRY_COLUMN, geometry_type, srs_id))


def create_attributes_table(conn: sqlite3.Connection, table: str, columns: Mapping[str, str],
                            description: str = "", key: str = "id") -> None:
    """A non-spatial table with an integer key, registered in contents as 'attributes'."""
    body = [f"{quote(key)} INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"]
    body += [f"{quote(name)} {sql_type}" for name, sql_type in columns.items()]
    conn.execute(f"CREATE TABLE {quote(table)} ({', '.join(body)})")
    conn.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                 "VALUES (?, 'attributes', ?, ?, ?)", (table, table, description, now_iso()))


def add_columns(conn: sqlite3.Connection, table: str, columns: Mapping[str, str]) -> None:
    for name, sql_type in columns.items():
        conn.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {sql_type}")


def layer_srs_id(conn: sqlite3.Connection, table: str) -> tuple[int, str]:
    """(srs_id, geometry_type_name) of a features table."""
    row = conn.execute("SELECT srs_id, geometry_type_name FROM gpkg_geometry_columns WHERE table_name = ?",
                       (table,)).fetchone()
    if row is None:
        raise KeyError(table)
    return int(row[0]), row[1]


def insert_features(conn: sqlite3.Connection, table: str, srs_id: int,
                    rows: Sequence[tuple[shapely.Geometry, Mapping[str, object]]],
                    fids: Sequence[int | None] | None = None) -> None:
    """Insert (geometry, values) rows and grow the layer's extent in gpkg_contents; fids: each row's
    feature id (None: the next free one, as without fids)."""
    if not rows:
        return
    names = list(rows[0][1].keys())
    fids = fids if fids is not None else [None] * len(rows)
    sql = (f"INSERT INTO {quote(table)} ({FID_COLUMN}, {GEOMETRY_COLUMN}, {', '.join(quote(n) for n in names)}) "
           f"VALUES (?, ?{', ?' * len(names)})")
    conn.executemany(sql, [(fid, encode_geometry(g, srs_id), *(values[n] for n in names))
                           for fid, (g, values) in zip(fids, rows)])
    _grow_extent(conn, table, [g for g, _ in rows])


def last_fid(conn: sqlite3.Connection, table: str) -> int:
    """The largest feature id `table` has held (its AUTOINCREMENT sequence: ids of deleted rows
    count, so none is given twice), 0 for none."""
    held = conn.execute(f"SELECT MAX({FID_COLUMN}) FROM {quote(table)}").fetchone()[0] or 0
    try:
        sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    except sqlite3.OperationalError:          # no AUTOINCREMENT table in the file (not one we made)
        sequence = None
    return max(int(held), int(sequence[0]) if sequence else 0)


def taken_fids(conn: sqlite3.Connection, table: str, fids: Iterable[int]) -> set[int]:
    """Which of `fids` rows of `table` hold already."""
    wanted = sorted(set(fids))
    taken: set[int] = set()
    for start in range(0, len(wanted), 500):            # SQLite's host parameter limit
        chunk = wanted[start:start + 500]
        taken.update(fid for (fid,) in conn.execute(
            f"SELECT {FID_COLUMN} FROM {quote(table)} WHERE {FID_COLUMN} IN ({', '.join('?' * len(chunk))})", chunk))
    return taken


def _grow_extent(conn: sqlite3.Connection, table: str, geoms: Iterable[shapely.Geometry]) -> None:
    bounds = [g.bounds for g in geoms if g is not None and not g.is_empty]
    old = conn.execute("SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name = ?",
                       (table,)).fetchone()
    if old is not None and old[0] is not None:
        bounds.append(tuple(old))
    bounds = [b for b in bounds if all(math.isfinite(v) for v in b)]
    if not bounds:
        conn.execute("UPDATE gpkg_contents SET last_change = ? WHERE table_name = ?", (now_iso(), table))
        return
    extent = (min(b[0] for b in bounds), min(b[1] for b in bounds),
              max(b[2] for b in bounds), max(b[3] for b in bounds))
    conn.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ?, last_change = ? "
                 "WHERE table_name = ?", (*extent, now_iso(), table))
