"""Request handlers shared by the JSON-lines worker and the HTTP server (docs/protocol.md).

The QGIS plugin never imports torch: it sends plain requests (`hello`, `describe`, `describe_file`)
to a process running this module. `Service.handle(type, params, progress, cancelled)` looks the type
up in `HANDLERS` and returns a JSON-ready dict, or raises `ServiceError` (or another MGIMMError),
whose `code` and message travel to the client as they are.

Both describe handlers run the one describe path: `describe` the loop itself over the drawn regions
(keeping thumbnails and attribute text for the client), `describe_file` the CLI's files job.
No click, no Qt, no HTTP here: the transport (batch/worker.py, batch/serve.py) only moves these dicts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, cast

import shapely

from mgimm_core import __version__
from mgimm_core.engines import LoadOptions, open_engine
from mgimm_core.engines.local import LocalEngine
from mgimm_core.errors import AOICoordinatesError, AOIError, CRSError, MGIMMError, OptionsError
from mgimm_core.guides import DEFAULT_MAX_GUIDES
from mgimm_core.jobs import AOISource, FilesJob, run_files_job
from mgimm_core.output import RegionRecord
from mgimm_core.output.schema import ObjectSchema, RegionSchema
from mgimm_core.output.writer import FORMATS
from mgimm_core.pipeline import DescribeOptions, Outcome, TileOptions, region_work
from mgimm_core.regions import AOIFeature, check_unique_ids, read_aoi
from mgimm_core.scene import Scene, normalise_scene_path

from .protocol import PROTOCOL_VERSION, ServiceError, bands_param, int_param, param
from .thumbnails import thumbnail_png_b64

if TYPE_CHECKING:
    from rasterio.io import MemoryFile

    from mgimm_core.endpoint.describer import EndpointEngine
    from mgimm_core.model_dir import ModelDirectory

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]

MAX_NEW_TOKENS_LIMIT = 1024
MAX_REGIONS_PER_REQUEST = 10_000
MAX_GUIDES_PER_REQUEST = 100_000
MAX_GUIDES_PER_REGION = 256
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: Server mode (roots given): the only GDAL driver request rasters open with, and GDAL's settings
#: while a request runs: no directory listing (so no sidecar .ovr/.msk/.aux.xml, each of which GDAL
#: would open with any driver, a VRT included), no raw-file VRT bands, no /vsicurl/ fetches.
SERVER_RASTER_DRIVER = "GTiff"
SERVER_GDAL_CONFIG = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
                      "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".mgimm-server-reads-no-network-files",
                      "GDAL_HTTP_MAX_RETRY": "0", "GDAL_PAM_ENABLED": "NO"}
#: Server mode: AOI file suffix -> the bytes it must start with (leading whitespace ignored).
SERVER_AOI_SIGNATURES = {".geojson": (b"{",), ".json": (b"{",), ".gpkg": (b"SQLite format 3\x00",),
                         ".fgb": (b"fgb\x03",), ".shp": (b"\x00\x00\x27\x0a",)}
_OUTPUT_SUFFIXES = frozenset(FORMATS) | {".json"}


# ================================================================================ service
class Service:
    """The model (loaded on first use) and the path policy of one worker or server.

    roots: None lets requests name any local path (the local worker: the user's own files).
    A list is server mode: the file boundary of docs/protocol.md ("File boundary"). Every path a
    request names (rasters, AOIs, outputs) must lie in those folders after resolving links and
    `..` (an empty list refuses all paths: only `raster_b64` works); remote GDAL paths (/vsicurl/,
    URLs) are refused; rasters open with the GeoTIFF driver only, under SERVER_GDAL_CONFIG (no
    sidecar files, no raw VRT bands, no network), and every file a raster reads (`Scene.files`)
    must lie in the roots; a path with an output's suffix (.gpkg, .csv, ...) is never opened as a raster;
    AOI files must carry the signature of GeoJSON, GeoPackage, FlatGeobuf or Shapefile.
    """

    def __init__(self, model_dir: str | ModelDirectory | None = None, *, load: LoadOptions = LoadOptions(),
                 roots: list[str] | None = None) -> None:
        self.model_dir = model_dir
        self.load = load
        self.max_new_tokens = load.max_new_tokens
        self.roots = None if roots is None else [os.path.realpath(r) for r in roots]
        self._engine: LocalEngine | EndpointEngine | None = None
        self._engine_lock = threading.Lock()

    # ------------------------------------------------------------------ model
    @property
    def engine(self) -> "LocalEngine | EndpointEngine":
        """The engine of the service's model, resolved on first use: a bad --model folder (or an
        endpoint that cannot be reached) is an error of each request (shown by the client), not a
        worker that will not start. A --model URL is an endpoint's served model (mgimm_core/endpoint)."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = cast("LocalEngine | EndpointEngine", open_engine("local", self.model_dir, self.load))
        return self._engine

    @property
    def loaded(self) -> bool:
        return self._engine is not None and self._engine.loaded

    def describer(self, max_new_tokens: int | None = None) -> Any:      # a family's describer
        """The loaded Describer (loading it on first use), its answer length set for this request."""
        describer = self.engine.describer
        describer.max_new_tokens = max_new_tokens or self.max_new_tokens
        return describer

    def model_info(self) -> dict[str, Any]:
        """Model id, device and chip settings, loading the model if needed."""
        self.describer()
        info = self.loaded_model_info()
        assert info is not None      # loaded just above
        return info

    def loaded_model_info(self) -> dict[str, Any] | None:
        """Model id, device and chip settings, or None while the model is not loaded (never loads it)."""
        if not self.loaded:
            return None
        model = self.engine.model
        chip = model.chip
        return {"model": self.engine.model_id, "device": self.engine.device, "chip_size": chip.input_size,
                "chip_context": chip.context, "chip_min_window": chip.min_window,
                "max_new_tokens": self.max_new_tokens, "format": model.format, "family": model.family.name,
                "region_method": model.family.region_method(model.kind),
                "trained_on": model.card or None}

    # ------------------------------------------------------------------ paths
    def check_path(self, path: str, what: str) -> str:
        """The path if this service may use it; ServiceError forbidden otherwise (names the roots)."""
        if "\x00" in path:
            raise ServiceError("bad_request", f"{what} {path!r}: a path cannot hold a NUL character; send the "
                                              f"file's path as plain text.")
        if self.roots is None:
            return path
        if path.startswith("/vsi") or "://" in path:
            raise ServiceError("forbidden", f"{what} {path!r}: remote and virtual GDAL paths are not accepted "
                                            f"by this server; send the pixels as raster_b64 instead.")
        if not self.roots:
            raise ServiceError("forbidden", f"{what} {path!r}: this server accepts no file paths (started "
                                            f"without --root); send the raster as raster_b64, or restart "
                                            f"the server with --root FOLDER.")
        resolved = os.path.realpath(path)
        for root in self.roots:
            if os.path.commonpath([resolved, root]) == root:
                return resolved
        raise ServiceError("forbidden", f"{what} {path!r} lies outside the server's allowed folders "
                                        f"({', '.join(self.roots)}); move it there or start the server "
                                        f"with --root pointing at its folder.")

    def open_scene(self, path: str, *, bands: tuple[int, ...] | None = None, nodata: float | None = None,
                   **stretch: Any) -> Scene:
        """A request's raster, opened under this service's file boundary (see the class docstring);
        `stretch`: Scene.open's percentiles / value_range."""
        path = normalise_scene_path(self._existing(path, "raster"))    # rows record and resume by it
        if self.roots is None:
            return Scene.open(path, bands=bands, nodata=nodata, **stretch)
        if os.path.splitext(path)[1].lower() in _OUTPUT_SUFFIXES:     # every output has one (output_format)
            raise ServiceError("forbidden", f"raster {path!r} has the suffix of an output "
                                            f"({', '.join(sorted(_OUTPUT_SUFFIXES))}); this server never reads "
                                            f"a request's output as a raster. Name a GeoTIFF.")
        scene = Scene.open(path, bands=bands, nodata=nodata, driver=SERVER_RASTER_DRIVER, **stretch)
        try:
            for name in scene.files:
                self.check_path(name, f"raster {path!r} reads the file")
        except BaseException:
            scene.close()
            raise
        return scene

    def existing_aoi(self, path: str) -> str:
        """An AOI file a request names; in server mode it must start like one of SERVER_AOI_SIGNATURES
        (so GDAL cannot read it as a VRT or another format that opens further files)."""
        path = self._existing(path, "AOI")
        if self.roots is None:
            return path
        suffix = os.path.splitext(path)[1].lower()
        signatures = SERVER_AOI_SIGNATURES.get(suffix)
        try:
            with open(path, "rb") as f:
                head = f.read(64).lstrip()
        except OSError as exc:
            raise ServiceError("not_found", f"AOI {path}: cannot be read ({exc.strerror}).") from None
        if signatures is None or not head.startswith(signatures):
            raise ServiceError("forbidden", f"AOI {path!r}: this server reads AOI files in GeoJSON (.geojson, "
                                            f".json), GeoPackage (.gpkg), FlatGeobuf (.fgb) or Shapefile (.shp) "
                                            f"only, with their format's signature; convert it with ogr2ogr.")
        if suffix == ".shp":
            for side in (".shx", ".dbf", ".prj", ".cpg"):
                sidecar = os.path.splitext(path)[0] + side
                if os.path.lexists(sidecar):
                    self.check_path(sidecar, f"AOI {path!r} reads the file")
        return path

    def _existing(self, path: str, what: str) -> str:
        path = self.check_path(path, what)
        if not (path.startswith("/vsi") or "://" in path) and not os.path.exists(path):
            raise ServiceError("not_found", f"{what} {path}: no such file on the machine running the "
                                            f"worker/server. Check the path; a file on another machine "
                                            f"must be sent as raster_b64.")
        return path

    # ------------------------------------------------------------------ dispatch
    def handle(self, request_type: str, params: dict[str, Any] | None = None, progress: Progress | None = None,
               cancelled: Cancelled | None = None) -> dict[str, Any]:
        """Run one request; raises ServiceError (or another MGIMMError) on failure."""
        handler = HANDLERS.get(request_type)
        if handler is None:
            raise ServiceError("bad_request", f"unknown request type {request_type!r}; use one of "
                                              f"{', '.join(sorted(HANDLERS))}.")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ServiceError("bad_request", f"'params' of a {request_type} request must be a JSON object.")
        progress, cancelled = progress or (lambda value, message: None), cancelled or (lambda: False)
        if self.roots is None:
            return handler(self, params, progress, cancelled)
        import rasterio

        with rasterio.Env(**SERVER_GDAL_CONFIG):
            return handler(self, params, progress, cancelled)


def _cancelled_error(done: int, total: int, output: str | None) -> ServiceError:
    kept = (f"; the {done} region(s) finished so far are kept in {output} (rerun with mode 'resume' to "
            f"finish)" if output else "")
    return ServiceError("cancelled", f"cancelled by the client after {done} of {total} region(s){kept}.")


# ================================================================================ hello
def handle_hello(service: Service, params: dict[str, Any], progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
    """Protocol and package versions, and the model in use (loading it if needed)."""
    progress(0.0, "loading the model")
    return {"protocol": PROTOCOL_VERSION, "version": __version__, **service.model_info(),
            "types": sorted(HANDLERS)}


# ================================================================================ chip_settings
def handle_chip_settings(service: Service, params: dict[str, Any], progress: Progress,
                         cancelled: Cancelled) -> dict[str, Any]:
    """How this service's model places chips, read from its folder without loading the weights, so a
    client can cut each region's chip itself (the QGIS plugin in server mode, qgis_plugin/chips.py)."""
    engine = service.engine          # resolves the model folder (two small JSON files), loads nothing
    chip = engine.model.chip
    return {"protocol": PROTOCOL_VERSION, "model": engine.model_id, "chip_size": chip.input_size,
            "chip_context": chip.context, "chip_min_window": chip.min_window, "loaded": service.loaded}


# ================================================================================ describe
def _open_request_scene(service: Service, params: dict[str, Any], bands: tuple[int, ...] | None,
                        nodata: float | None) -> tuple[Scene, str, MemoryFile | None]:
    """(scene, display name, memfile) from `raster` (a path) or `raster_b64` (GeoTIFF bytes, in memory)."""
    raster = param(params, "raster", str, None)
    raster_b64 = param(params, "raster_b64", str, None)
    if (raster is None) == (raster_b64 is None):
        raise ServiceError("bad_request", "give exactly one of 'raster' (a path the worker/server can read) "
                                          "and 'raster_b64' (base64 GeoTIFF bytes), or a 'raster_b64' in every "
                                          "region (per-region chips).")
    if raster is not None:
        return service.open_scene(raster, bands=bands, nodata=nodata), raster, None
    name = param(params, "raster_name", str, None) or "raster_b64"
    scene, memfile = _open_b64_scene(raster_b64, "'raster_b64'", name, bands, nodata)
    return scene, name, memfile


def _open_b64_scene(raster_b64: str, what: str, name: str, bands: tuple[int, ...] | None,
                    nodata: float | None) -> tuple[Scene, MemoryFile]:
    """(scene, memfile) of base64 GeoTIFF bytes, opened in memory with the GeoTIFF driver only;
    the scene is named `name` (what the client sent, not /vsimem) in records and messages."""
    try:
        data = base64.b64decode(raster_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError("bad_request", f"{what} is not valid base64 ({exc}); send "
                                          f"base64.b64encode(geotiff_bytes).") from None
    if not data.startswith(_TIFF_MAGIC):
        raise ServiceError("bad_input", f"{what} is not a GeoTIFF (wrong file signature); render the "
                                        f"layer to a GeoTIFF with its georeference and send those bytes.")
    from rasterio.io import MemoryFile

    memfile = MemoryFile(data, ext=".tif")
    try:
        scene = Scene.open(memfile.name, bands=bands, nodata=nodata, driver=SERVER_RASTER_DRIVER)
    except BaseException:
        memfile.close()
        raise
    scene.path = name
    return scene, memfile


def _chip_scale(value: object, what: str) -> float:
    """A raster_b64 chip's raster pixels per chip pixel (for the GSD warning), checked."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
        raise ServiceError("bad_request", f"{what} = {value!r}: give the raster's pixels per chip pixel (1 for "
                                          f"a chip at the raster's resolution).")
    return float(value)


def _region_chips(params: dict[str, Any], features: list[AOIFeature], stack: contextlib.ExitStack,
                  bands: tuple[int, ...] | None, nodata: float | None
                  ) -> dict[str, tuple[Scene, float]] | None:
    """Per-region chips: when the regions carry their own `raster_b64` (a client that cuts each
    region's chip, e.g. the QGIS plugin in server mode), {region id: (its chip scene, chip_scale)},
    each closed with `stack`; None when the request has one raster for all regions. Every region
    must then carry one, and the request no `raster`/`raster_b64` of its own."""
    regions = [r for r in params["regions"] if isinstance(r, dict)]
    carrying = [r for r in regions if "raster_b64" in r]
    if not carrying:
        return None
    if len(carrying) != len(regions) or params.get("raster") is not None or params.get("raster_b64") is not None:
        raise ServiceError("bad_request", "per-region chips: give a 'raster_b64' in every region and no "
                                          "'raster' or 'raster_b64' of the request, or one raster for all.")
    by_id = {str(r.get("id", i)): r for i, r in enumerate(params["regions"]) if isinstance(r, dict)}
    name = param(params, "raster_name", str, None) or "raster_b64"
    chips = {}
    for feature in features:
        region = by_id[str(feature.id)]
        if not isinstance(region["raster_b64"], str):
            raise ServiceError("bad_request", f"region {feature.id!r}: 'raster_b64' must be a base64 string.")
        scene, memfile = _open_b64_scene(region["raster_b64"], f"region {feature.id!r}: 'raster_b64'", name,
                                         bands, nodata)
        stack.callback(memfile.close)
        stack.callback(scene.close)
        chips[str(feature.id)] = (scene, _chip_scale(region.get("chip_scale"), f"region {feature.id!r}: 'chip_scale'"))
    return chips


def _features(params: dict[str, Any]) -> tuple[list[AOIFeature], list[tuple[str, dict[str, Any], str]]]:
    """AOI features from `regions` (WKT in `crs`), and (id, properties, why) of the regions that cannot be read."""
    regions = param(params, "regions", list, allow_none=False)
    if not regions:
        raise ServiceError("bad_request", "'regions' is empty; give at least one "
                                          "{\"id\": ..., \"wkt\": \"POLYGON ((...))\"}.")
    if len(regions) > MAX_REGIONS_PER_REQUEST:
        raise ServiceError("bad_request", f"{len(regions)} regions in one request; split them into requests "
                                          f"of at most {MAX_REGIONS_PER_REQUEST} (or use describe_file).")
    features, unread = [], []
    for rid, props, feature, problem in _wkt_features(params, "regions", regions):
        if feature is None:
            unread.append((rid, props, problem or f"region {rid!r} cannot be read."))
        else:
            features.append(feature)
    try:
        check_unique_ids(features, "the request's regions")
    except AOIError as exc:
        raise ServiceError("bad_request", str(exc)) from None
    return features, unread


def _wkt_features(params: dict[str, Any], key: str, items: list[Any]
                  ) -> Iterator[tuple[str, dict[str, Any], AOIFeature | None, str | None]]:
    """(id, properties, AOIFeature or None, why not) for each {"id", "wkt", "properties"} of
    params[key], its WKT in the request's `crs` (the one reading of drawn regions and inline guides)."""
    crs = param(params, "crs", str, "EPSG:4326", allow_none=False)
    what = "guide object" if key == "guides" else "region"
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("wkt"), str):
            raise ServiceError("bad_request", f"{key}[{index}] must be an object with a 'wkt' string "
                                              f"(and optional 'id', 'properties').")
        rid = str(item.get("id", index))
        props = item.get("properties") or {}
        if not isinstance(props, dict):
            raise ServiceError("bad_request", f"{key}[{index}].properties must be a JSON object.")
        try:
            shapely.from_wkt(item["wkt"])            # a WKT string, never a file name (read_aoi takes both)
            feature = read_aoi(item["wkt"], crs=crs)[0]
        except AOICoordinatesError as exc:
            minx, miny, maxx, maxy = exc.bounds
            yield rid, props, None, (f"{what} {rid!r}: its WKT spans ({minx:.10g}, {miny:.10g}) to ({maxx:.10g}, "
                                     f"{maxy:.10g}), which is not in the request's crs {crs} (degrees); send "
                                     f"the CRS the coordinates are in as 'crs'.")
            continue
        except (shapely.errors.GEOSException, AOIError) as exc:
            yield rid, props, None, (f"{what} {rid!r}: not valid WKT ({exc}); send e.g. "
                                     f"'POLYGON ((x1 y1, x2 y2, x3 y3, x1 y1))' in {crs}.")
            continue
        except CRSError as exc:
            raise ServiceError("bad_request", f"parameter 'crs' = {crs!r}: {exc}") from None
        feature.id, feature.properties = rid, props
        yield rid, props, feature, None


def _inline_guides(params: dict[str, Any]) -> list[AOIFeature] | None:
    """The request's inline `guides` (WKT in `crs`, like regions); None when it sends none."""
    inline = param(params, "guides", list, None)
    if inline is None:
        return None
    features: list[AOIFeature] = []
    for rid, _, feature, problem in _wkt_features(params, "guides", inline):
        if feature is None:
            raise ServiceError("bad_request", problem or f"guide object {rid!r} cannot be read.")
        features.append(feature)
    if len(features) > MAX_GUIDES_PER_REQUEST:
        raise ServiceError("bad_request", f"{len(features)} guide objects in one request; send only those near "
                                          f"the regions (at most {MAX_GUIDES_PER_REQUEST}).")
    try:
        check_unique_ids(features, "the request's guide objects")
    except AOIError as exc:
        raise ServiceError("bad_request", str(exc)) from None
    return features


#: The entry fields of protocol 1 that repeat the row's (kept for clients reading them; `row` is the row).
_ROW_FIELDS = ("description", "valid_fraction", "gsd_m", "scene", "model", "error", "error_code")


def region_entry(record: RegionRecord, schema: RegionSchema, *, attribute_text: str | None = None,
                 thumbnail_png_b64: str | None = None, **extra: Any) -> dict[str, Any]:
    """A region's result entry: `row`, the region's row of the `regions` layer as the core writes it
    (`wire_row`), plus what an interactive client also shows (`attributes` as the model answered
    them, `attribute_text`, the chip as `thumbnail_png_b64`, the request's `properties`) and the
    protocol 1 fields, each the row's value."""
    row = wire_row(record, schema)
    return {"id": row["region_id"], **{name: row.get(name) for name in _ROW_FIELDS},
            "attributes": dict(record.attributes), "attribute_text": attribute_text,
            "thumbnail_png_b64": thumbnail_png_b64, "properties": dict(record.properties), "row": row, **extra}


def outcome_entry(outcome: Outcome, thumbnail: bool, objects: ObjectSchema | None = None,
                  schema: RegionSchema | None = None) -> dict[str, Any]:
    """A region's outcome as the protocol's result entry (with the chip as a thumbnail if asked).
    objects: a guided request's objects schema; the entry then holds its guide objects as rows of
    the `objects` layer (`wire_row` with their geometry) and the guide_objects / guide_objects_left counts.
    schema: the request's regions schema (its input columns fixed across the request's rows)."""
    rec = outcome.record
    assert isinstance(rec, RegionRecord)      # a describe request has regions, never tiles
    chip = outcome.chip
    png = (thumbnail_png_b64(chip.image, chip.mask) if thumbnail and chip is not None else None)
    guided = {} if objects is None else {
        "guide_objects": rec.guide_objects, "guide_objects_left": rec.guide_objects_left,
        "objects": [wire_row(o, objects, geometry=True) for o in outcome.objects]}
    return region_entry(rec, schema or RegionSchema(), attribute_text=outcome.attribute_text,
                        thumbnail_png_b64=png, **guided)


def wire_row(record: RegionRecord, schema: RegionSchema, *, geometry: bool = False) -> dict[str, Any]:
    """The one serialisation of a core row for the protocol: the row `schema` writes for `record`
    (ObjectSchema: a guide object's row of the `objects` layer, RegionSchema: a region's of the
    `regions` layer), without `run_id` (the client's own run), numbers that JSON cannot hold as
    null; with geometry, the record's geometry as `wkt` in `crs` (its own CRS)."""
    row = schema.row(record, run_id="")
    row.pop("run_id")
    for name, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[name] = None
    if geometry:
        row["wkt"] = (shapely.to_wkt(record.geometry, rounding_precision=-1) if record.geometry is not None
                      else None)
        row["crs"] = _crs_text(record.crs)
    return row


def _crs_text(crs: Any) -> str | None:       # anything pyproj reads
    """"EPSG:32633" when the CRS has an authority code, else its WKT."""
    if crs is None:
        return None
    import pyproj

    crs = pyproj.CRS.from_user_input(crs)
    authority = crs.to_authority(min_confidence=100)
    return f"{authority[0]}:{authority[1]}" if authority else crs.to_wkt()


def request_job(service: Service, params: dict[str, Any], *, scenes: tuple[str, ...], output_required: bool,
                mode: str, **fields: Any) -> FilesJob:
    """A request's params -> the files job (the worker/server's counterpart of the CLI's options ->
    FilesJob in batch/describe.py): output, mode, bands, nodata, the guide layer file and the
    describe options, parsed and checked once for `describe` and `describe_file`; `fields` are the
    job's other fields as the request type gives them (its AOI or inline regions, tiles...)."""
    guide = param(params, "guide", str, None)
    output = param(params, "output", str, allow_none=False) if output_required else param(params, "output", str, None)
    try:
        batch_size = param(params, "batch_size", int, None)
        if batch_size is not None:
            batch_size = int_param(params, "batch_size", None, 1, 256)
        options = DescribeOptions(batch_size=batch_size, prompt=param(params, "prompt", str, None),
                                  attributes=param(params, "attributes", bool, True, allow_none=False),
                                  max_guides=int_param(params, "max_guides", DEFAULT_MAX_GUIDES, 1,
                                                       MAX_GUIDES_PER_REGION),
                                  tiles=fields.pop("tiles", None))
        job = FilesJob(scenes=scenes, output=None if output is None else service.check_path(output, "output"),
                       mode=param(params, "mode", str, mode, allow_none=False),
                       bands=bands_param(params), nodata=param(params, "nodata", float, None),
                       guide=None if guide is None else AOISource(service.existing_aoi(guide),
                                                                  layer=param(params, "guide_layer", str, None)),
                       options=options, **fields)
    except OptionsError as exc:
        raise ServiceError("bad_request", str(exc)) from None
    return job


def handle_describe(service: Service, params: dict[str, Any], progress: Progress, cancelled: Cancelled) -> dict[str,
                    Any]:
    """Describe the drawn regions of one raster; per-region failures are entries with `error` set.
    The files job describes them (and writes them to `output` when asked); each outcome becomes
    its entry with the region's row (`outcome_entry`)."""
    started = time.perf_counter()
    max_new_tokens = int_param(params, "max_new_tokens", service.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
    thumbnail = param(params, "thumbnail", bool, True, allow_none=False)
    source_scale = _chip_scale(params.get("chip_scale"), "parameter 'chip_scale'")
    features, unread = _features(params)
    inline_guides = _inline_guides(params)
    bands, nodata = bands_param(params), param(params, "nodata", float, None)
    engine = service.engine
    with contextlib.ExitStack() as stack:
        chips = _region_chips(params, features, stack, bands, nodata)
        if chips is None:      # one raster for every region
            scene, scene_name, memfile = _open_request_scene(service, params, bands, nodata)
            stack.callback(scene.close)
            if memfile is not None:
                stack.callback(memfile.close)
            scenes, scales, work = [scene], [source_scale], None
            bounds = scene.bounds
        else:                  # each region on its own chip (the plugin's server mode), in one batch
            scene_name = param(params, "raster_name", str, None) or "raster_b64"
            scenes, scales = [c for c, _ in chips.values()], [scale for _, scale in chips.values()]
            work = itertools.chain.from_iterable(region_work([chips[str(f.id)][0]], [f], engine.model.chip)
                                                 for f in features)
        job = request_job(service, params, scenes=(scene_name,), output_required=False, mode="append",
                          regions=tuple(features), regions_layer=param(params, "layer", str, "regions",
                                                                       allow_none=False),
                          guides=None if inline_guides is None else tuple(inline_guides))
        guided = job.guide is not None or job.guides is not None
        objects_schema = ObjectSchema() if guided else None
        schema = RegionSchema()
        no_guides: dict[str, Any] = {"guide_objects": None, "guide_objects_left": None, "objects": []} if guided else {}
        entries = [{**region_entry(RegionRecord(scene=scene_name, region_id=rid, geometry=None, crs=None,
                                                properties=props, error=problem, error_code=AOIError.code), schema),
                    **no_guides} for rid, props, problem in unread]
        total = len(features) + len(entries)
        progress(0.0, "loading the model")
        describer = service.describer(max_new_tokens)

        def on_outcomes(outcomes: list[Outcome]) -> None:
            entries.extend(outcome_entry(o, thumbnail, objects_schema, schema) for o in outcomes)
            progress(len(entries) / total, f"{len(entries)}/{total} regions")

        summary = run_files_job(job, engine, on_outcomes=on_outcomes, should_cancel=cancelled, request="describe",
                                scenes=scenes, source_pixels_per_pixel=scales, work=work)
    if summary["cancelled"]:
        raise _cancelled_error(len(entries), total, job.output)
    if entries and all(e["error_code"] == "region_outside" for e in entries):
        where = (f"raster {scene_name} (raster bounds {tuple(round(v, 6) for v in bounds)} in its CRS)"
                 if chips is None else f"chip of each region of {scene_name}")
        raise ServiceError("region_outside", f"every region lies outside the {where}; draw the regions over "
                                             f"the raster, in the CRS given as 'crs'.")
    order = {str(r.get("id", i)): i for i, r in enumerate(params["regions"]) if isinstance(r, dict)}
    entries.sort(key=lambda e: order.get(e["id"], 0))
    return {"regions": entries, "model": engine.model_id, "device": str(describer.device),
            "output": job.output, "warnings": summary.get("warnings", []),
            "seconds": round(time.perf_counter() - started, 3)}


# ================================================================================ describe_file
def handle_describe_file(service: Service, params: dict[str, Any], progress: Progress,
                         cancelled: Cancelled) -> dict[str, Any]:
    """The CLI's `describe` on files (the same files job): scenes + AOI file (or tiles) -> an output layer."""
    scenes = param(params, "scenes", list, allow_none=False)
    if not scenes or not all(isinstance(s, str) for s in scenes):
        raise ServiceError("bad_request", "'scenes' must be a non-empty list of raster paths.")
    engine_name = param(params, "engine", str, "local", allow_none=False)
    if engine_name != "local":
        raise ServiceError("bad_request", f"engine {engine_name!r}: this worker/server describes with its own "
                                          f"loaded model (engine 'local'); run `mgimm-geo describe --engine "
                                          f"{engine_name}` on the cluster's head node instead.")
    tiles = None
    if param(params, "tiles", bool, False, allow_none=False):
        try:
            tiles = TileOptions(size=int_param(params, "tile_size", 512, 16, 1 << 16),
                                overlap=int_param(params, "tile_overlap", 0, 0, 1 << 15),
                                min_valid=param(params, "min_valid", float, 0.5, allow_none=False))
        except OptionsError as exc:
            raise ServiceError("bad_request", str(exc)) from None
    aoi = param(params, "aoi", str, None)
    job = request_job(service, params, scenes=tuple(service._existing(s, "raster") for s in scenes),
                      output_required=True, mode="create", tiles=tiles,
                      aoi=None if aoi is None else AOISource(
                          service.existing_aoi(aoi), layer=param(params, "layer", str, None),
                          crs=param(params, "aoi_crs", str, None), buffer=param(params, "buffer", float, None)))
    progress(0.0, "loading the model")
    service.describer(int_param(params, "max_new_tokens", service.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT))
    unit = job.options.unit

    def on_batch(done: int, total: int | None) -> None:
        progress(min(done / total, 1.0) if total else 0.0, f"{done}/{total} {unit}" if total else f"{done} {unit} done")

    summary = run_files_job(job, service.engine, check_path=service._existing, open_scene=service.open_scene,
                            on_batch=on_batch,
                            should_cancel=cancelled, request="describe_file")
    if summary.get("cancelled"):
        raise ServiceError("cancelled", f"cancelled by the client after {summary['described'] + summary['failed']} "
                                        f"{summary['unit']}; what was written to {job.output} is kept (rerun "
                                        f"with mode 'resume' to finish).")
    return summary


# ================================================================================ models, diagnostics
def handle_models(service: Service, params: dict[str, Any], progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
    """The model folders in `folder` (itself and its sub-folders) with their family, size and licence
    (model-info's facts; no weights load), so a client picks one from a list (offline model management)."""
    from .catalogue import list_models

    folder = service.check_path(param(params, "folder", str, allow_none=False), "models folder")
    if not os.path.isdir(folder):
        raise ServiceError("not_found", f"models folder {folder}: no such folder on the machine running the "
                                        f"worker/server; choose the folder that holds the model folders.")
    return {"folder": folder, "models": list_models(folder)}


def handle_diagnostics(service: Service, params: dict[str, Any], progress: Progress,
                       cancelled: Cancelled) -> dict[str, Any]:
    """Versions, devices and memory of this worker/server, the device asked for and in use, and the
    model's facts (model-info: family, card); never loads the model."""
    from mgimm_core.model_info import model_info

    from .catalogue import machine_report

    try:
        model = model_info(service.model_dir)
    except MGIMMError as exc:
        model = {"error": str(exc), "error_code": exc.code}
    loaded = service.loaded_model_info()
    return {"protocol": PROTOCOL_VERSION, **machine_report(), "device_asked": service.load.device,
            "device_in_use": loaded["device"] if loaded else None, "model_loaded": loaded is not None,
            "model": model}


HANDLERS: dict[str, Callable[[Service, dict[str, Any], Progress, Cancelled], dict[str, Any]]] = {
    "hello": handle_hello,
    "chip_settings": handle_chip_settings,
    "models": handle_models,
    "diagnostics": handle_diagnostics,
    "describe": handle_describe,
    "describe_file": handle_describe_file,
}


__all__ = ["Service", "HANDLERS", "handle_hello", "handle_chip_settings", "handle_describe", "handle_describe_file",
           "handle_models", "handle_diagnostics",
           "outcome_entry", "region_entry", "request_job", "wire_row"]
