"""Request handlers shared by the JSON-lines worker and the HTTP server (docs/protocol.md).

The QGIS plugin never imports torch: it sends plain requests (`hello`, `describe`, `describe_file`)
to a process running this module. `Service.handle(type, params, progress, cancelled)` looks the type
up in `HANDLERS` and returns a JSON-ready dict, or raises `ServiceError`, whose `code` and `message`
travel to the client as they are (the message names the file, region or parameter and the fix).
`error_payload(exc)` turns any exception into that structured form, so no traceback ever reaches the
user.

No click, no Qt, no HTTP here: the transport (worker.py, serve.py) only moves these dicts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import struct
import threading
import time
import zlib
from typing import Callable

import numpy as np
import shapely

from mgimm_core import __version__
from mgimm_core.errors import (AOIError, BandError, CRSError, GeotransformError, MGIMMError, ModelError,
                               OutputError, RegionError, SceneError)
from mgimm_core.output import RegionRecord, RunInfo, open_output, sha256_path
from mgimm_core.pipeline import DescribeSettings, describe_to_output, place_regions
from mgimm_core.prompts import DESCRIPTION_PROMPT
from mgimm_core.regions import AOIFeature, read_aoi, read_region
from mgimm_core.scene import Scene, expand_scene_paths

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1

#: Every error code a client may see, with the HTTP status the server answers it with.
ERROR_CODES = {
    "bad_request": 400,     # malformed request: unknown type, missing/wrong parameter
    "unauthorized": 401,    # server only: missing or wrong token
    "forbidden": 403,       # a path outside the server's --root folders, or a remote (/vsi, URL) path
    "not_found": 404,       # a raster / AOI file that does not exist
    "too_large": 413,       # server only: request body over --max-request-mb
    "bad_input": 422,       # an input that exists but cannot be used (bands, geotransform, AOI, output)
    "no_crs": 422,          # the raster has no CRS and the regions are geographic
    "region_outside": 422,  # every region of the request lies outside the raster
    "cancelled": 409,       # the client cancelled the request
    "model": 500,           # the model cannot be loaded or run (missing folder, CUDA not available)
    "internal": 500,        # a bug: the message says where to report it
}

Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]

MAX_NEW_TOKENS_LIMIT = 1024
MAX_REGIONS_PER_REQUEST = 10_000
THUMBNAIL_MAX_SIDE = 256
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class ServiceError(MGIMMError):
    """A request failed as a whole; `code` is one of ERROR_CODES, `message` says what to do."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message


def error_payload(exc: BaseException) -> dict:
    """{"code", "message"} for any exception: ours keep their message, others become `internal`."""
    if isinstance(exc, ServiceError):
        return {"code": exc.code, "message": exc.message}
    if isinstance(exc, ModelError):
        code = "model"
    elif isinstance(exc, RegionError):
        code = "region_outside" if "outside" in str(exc) else "bad_input"
    elif isinstance(exc, (SceneError, BandError, CRSError, GeotransformError, AOIError, OutputError)):
        code = "bad_input"
    elif isinstance(exc, MGIMMError):
        code = "bad_input"
    else:
        log.error("internal error", exc_info=exc)
        return {"code": "internal", "message": f"internal error ({type(exc).__name__}: {exc}). This is a "
                f"bug in mgimm-geo {__version__}: please report it with the worker's or server's log."}
    return {"code": code, "message": str(exc)}


# ================================================================================ parameters
_MISSING = object()


def _param(params: dict, name: str, kind, default=_MISSING, *, allow_none: bool = True):
    """params[name] checked against `kind` (a type or tuple); bad_request names the parameter."""
    value = params.get(name, default)
    if value is _MISSING:
        raise ServiceError("bad_request", f"parameter {name!r} is required; see docs/protocol.md.")
    if value is None and allow_none:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ServiceError("bad_request", f"parameter {name!r} must be {names}, got {type(value).__name__} "
                                          f"({str(value)[:60]!r}).")
    return value


def _int_param(params, name, default, low, high) -> int:
    value = _param(params, name, int, default, allow_none=False)
    if not low <= value <= high:
        raise ServiceError("bad_request", f"parameter {name!r} = {value} is out of range; give {low}..{high}.")
    return value


def _bands_param(params) -> tuple[int, ...] | None:
    bands = _param(params, "bands", list, None)
    if bands is None:
        return None
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bands):
        raise ServiceError("bad_request", f"parameter 'bands' = {bands!r}: give 1-based band numbers, "
                                          f"e.g. [3, 2, 1] or [1].")
    return tuple(bands)


# ================================================================================ service
class Service:
    """The model (loaded on first use) and the path policy of one worker or server.

    roots: None lets requests name any local path (the local worker: the user's own files).
    A list restricts every path a request names (rasters, AOIs, outputs) to those folders after
    resolving links and `..`; an empty list refuses all paths (only `raster_b64` works). Remote
    GDAL paths (/vsicurl/, URLs) are refused whenever roots is not None.
    """

    def __init__(self, model_dir: str | None = None, *, device: str = "auto", max_new_tokens: int = 200,
                 roots: list[str] | None = None):
        self.model_dir = model_dir
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.roots = None if roots is None else [os.path.realpath(r) for r in roots]
        self._describer = None
        self._load_lock = threading.Lock()

    # ------------------------------------------------------------------ model
    @property
    def loaded(self) -> bool:
        return self._describer is not None

    def describer(self, max_new_tokens: int | None = None):
        """The loaded Describer (loading it on first use), its answer length set for this request."""
        with self._load_lock:
            if self._describer is None:
                from mgimm_core.describer import Describer

                started = time.perf_counter()
                self._describer = Describer.load(self.model_dir, device=self.device,
                                                 max_new_tokens=self.max_new_tokens)
                log.info("model %s loaded on %s in %.1f s", self._describer.model_id, self._describer.device,
                         time.perf_counter() - started)
        self._describer.max_new_tokens = max_new_tokens or self.max_new_tokens
        return self._describer

    def model_info(self) -> dict:
        """Model id, device and chip size, loading the model if needed."""
        self.describer()
        return self.loaded_model_info()

    def loaded_model_info(self) -> dict | None:
        """Model id, device and chip size, or None while the model is not loaded (never loads it)."""
        d = self._describer
        if d is None:
            return None
        return {"model": d.model_id, "device": str(d.device), "chip_size": d.chip_size,
                "max_new_tokens": self.max_new_tokens}

    # ------------------------------------------------------------------ paths
    def check_path(self, path: str, what: str) -> str:
        """The path if this service may use it; ServiceError forbidden otherwise (names the roots)."""
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

    def _existing(self, path: str, what: str) -> str:
        path = self.check_path(path, what)
        if not (path.startswith("/vsi") or "://" in path) and not os.path.exists(path):
            raise ServiceError("not_found", f"{what} {path}: no such file on the machine running the "
                                            f"worker/server. Check the path; a file on another machine "
                                            f"must be sent as raster_b64.")
        return path

    # ------------------------------------------------------------------ dispatch
    def handle(self, request_type: str, params: dict | None = None, progress: Progress | None = None,
               cancelled: Cancelled | None = None) -> dict:
        """Run one request; raises ServiceError (or another MGIMMError) on failure."""
        handler = HANDLERS.get(request_type)
        if handler is None:
            raise ServiceError("bad_request", f"unknown request type {request_type!r}; use one of "
                                              f"{', '.join(sorted(HANDLERS))}.")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ServiceError("bad_request", f"'params' of a {request_type} request must be a JSON object.")
        return handler(self, params, progress or (lambda value, message: None),
                       cancelled or (lambda: False))


def _cancelled_error(done: int, total: int, output: str | None) -> ServiceError:
    kept = (f"; the {done} region(s) finished so far are kept in {output} (rerun with mode 'resume' to "
            f"finish)" if output else "")
    return ServiceError("cancelled", f"cancelled by the client after {done} of {total} region(s){kept}.")


# ================================================================================ hello
def handle_hello(service: Service, params: dict, progress: Progress, cancelled: Cancelled) -> dict:
    """Protocol and package versions, and the model in use (loading it if needed)."""
    progress(0.0, "loading the model")
    return {"protocol": PROTOCOL_VERSION, "version": __version__, **service.model_info(),
            "types": sorted(HANDLERS)}


# ================================================================================ describe
def _open_request_scene(service: Service, params: dict, bands, nodata):
    """(scene, display name) from `raster` (a path) or `raster_b64` (GeoTIFF bytes, kept in memory)."""
    raster = _param(params, "raster", str, None)
    raster_b64 = _param(params, "raster_b64", str, None)
    if (raster is None) == (raster_b64 is None):
        raise ServiceError("bad_request", "give exactly one of 'raster' (a path the worker/server can read) "
                                          "and 'raster_b64' (base64 GeoTIFF bytes).")
    if raster is not None:
        path = service._existing(raster, "raster")
        return Scene.open(path, bands=bands, nodata=nodata), raster, None
    try:
        data = base64.b64decode(raster_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError("bad_request", f"'raster_b64' is not valid base64 ({exc}); send "
                                          f"base64.b64encode(geotiff_bytes).") from None
    if not data.startswith(_TIFF_MAGIC):
        raise ServiceError("bad_input", "'raster_b64' is not a GeoTIFF (wrong file signature); render the "
                                        "layer to a GeoTIFF with its georeference and send those bytes.")
    from rasterio.io import MemoryFile

    memfile = MemoryFile(data, ext=".tif")
    try:
        scene = Scene.open(memfile.name, bands=bands, nodata=nodata)
    except BaseException:
        memfile.close()
        raise
    name = _param(params, "raster_name", str, None) or "raster_b64"
    scene.path = name         # messages and records name what the client sent, not /vsimem
    return scene, name, memfile


def _features(params: dict) -> tuple[list[AOIFeature], list[dict]]:
    """AOI features from `regions` (WKT in `crs`), and error entries for regions that cannot be read."""
    regions = _param(params, "regions", list, allow_none=False)
    if not regions:
        raise ServiceError("bad_request", "'regions' is empty; give at least one "
                                          "{\"id\": ..., \"wkt\": \"POLYGON ((...))\"}.")
    if len(regions) > MAX_REGIONS_PER_REQUEST:
        raise ServiceError("bad_request", f"{len(regions)} regions in one request; split them into requests "
                                          f"of at most {MAX_REGIONS_PER_REQUEST} (or use describe_file).")
    crs = _param(params, "crs", str, "EPSG:4326", allow_none=False)
    features, errors = [], []
    for index, region in enumerate(regions):
        if not isinstance(region, dict) or not isinstance(region.get("wkt"), str):
            raise ServiceError("bad_request", f"regions[{index}] must be an object with a 'wkt' string "
                                              f"(and optional 'id', 'properties').")
        rid = str(region.get("id", index))
        props = region.get("properties") or {}
        if not isinstance(props, dict):
            raise ServiceError("bad_request", f"regions[{index}].properties must be a JSON object.")
        try:
            shapely.from_wkt(region["wkt"])          # a WKT string, never a file name (read_aoi takes both)
            feature = read_aoi(region["wkt"], crs=crs)[0]
        except (shapely.errors.GEOSException, AOIError) as exc:
            errors.append(_entry(rid, props, error=f"region {rid!r}: not valid WKT ({exc}); send e.g. "
                                                   f"'POLYGON ((x1 y1, x2 y2, x3 y3, x1 y1))' in {crs}."))
            continue
        except CRSError as exc:
            raise ServiceError("bad_request", f"parameter 'crs' = {crs!r}: {exc}") from None
        feature.id, feature.properties = rid, props
        features.append(feature)
    return features, errors


def _entry(rid: str, properties: dict, *, error: str | None = None, **fields) -> dict:
    entry = {"id": rid, "description": None, "attributes": {}, "attribute_text": None,
             "valid_fraction": None, "gsd_m": None, "scene": None, "model": None, "error": error,
             "thumbnail_png_b64": None, "properties": properties}
    entry.update(fields)
    return entry


def handle_describe(service: Service, params: dict, progress: Progress, cancelled: Cancelled) -> dict:
    """Describe the drawn regions of one raster; per-region failures are entries with `error` set."""
    started = time.perf_counter()
    bands = _bands_param(params)
    nodata = _param(params, "nodata", float, None)
    max_new_tokens = _int_param(params, "max_new_tokens", service.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
    batch_size = _int_param(params, "batch_size", 8, 1, 256)
    prompt = _param(params, "prompt", str, None)
    attributes = _param(params, "attributes", bool, True, allow_none=False)
    thumbnail = _param(params, "thumbnail", bool, True, allow_none=False)
    output = _param(params, "output", str, None)
    layer = _param(params, "layer", str, "regions", allow_none=False)
    mode = _param(params, "mode", str, "append", allow_none=False)
    if output is not None:
        output = service.check_path(output, "output")
    features, entries = _features(params)

    scene, scene_name, memfile = _open_request_scene(service, params, bands, nodata)
    try:
        progress(0.0, "loading the model")
        describer = service.describer(max_new_tokens)
        settings = DescribeSettings(batch_size=batch_size, prompt=prompt, attributes=attributes)
        total = len(features) + len(entries)
        with contextlib.ExitStack() as stack:
            writer = None
            if output is not None:
                run = RunInfo(model_id=describer.model_id, model_sha256=_model_hash(describer),
                              parameters={"request": "describe", "raster": scene_name, "bands": bands,
                                          "max_new_tokens": max_new_tokens, "prompt": prompt})
                writer = stack.enter_context(open_output(output, mode=mode, run=run, regions_layer=layer))
            for batch in _describe_batches(scene, features, describer, settings, thumbnail, cancelled):
                if writer is not None:
                    writer.write_regions([record for record, _ in batch])
                entries.extend(entry for _, entry in batch)
                progress(len(entries) / total, f"{len(entries)}/{total} regions")
            if cancelled():
                raise _cancelled_error(len(entries), total, output)
    except CRSError as exc:
        if scene.crs is None:
            raise ServiceError("no_crs", str(exc)) from None
        raise
    finally:
        scene.close()
        if memfile is not None:
            memfile.close()
    if entries and all(e["error"] and "outside" in e["error"] for e in entries):
        raise ServiceError("region_outside", f"every region lies outside the raster {scene_name} (raster "
                                             f"bounds {tuple(round(v, 6) for v in scene.bounds)} in its CRS); "
                                             f"draw the regions over the raster, in the CRS given as 'crs'.")
    order = {str(r.get("id", i)): i for i, r in enumerate(params["regions"]) if isinstance(r, dict)}
    entries.sort(key=lambda e: order.get(e["id"], 0))
    return {"regions": entries, "model": describer.model_id, "device": str(describer.device),
            "output": output, "seconds": round(time.perf_counter() - started, 3)}


def _model_hash(describer) -> str | None:
    return sha256_path(describer.model_dir) if getattr(describer, "model_dir", None) else None


def _describe_batches(scene, features, describer, settings, thumbnail: bool, cancelled: Cancelled):
    """Yield lists of (RegionRecord, result entry), one list per model batch or per region error.

    Like pipeline.describe_regions, but keeping what the interactive client also shows: the
    attribute answer as text and the chip the model saw (as a thumbnail).
    """
    prompt = settings.prompt or DESCRIPTION_PROMPT
    pending = []

    def record(feature, chip=None, text=None, error=None):
        return RegionRecord(
            scene=scene.path, region_id=feature.id, geometry=feature.geometry, crs=feature.crs,
            description=getattr(text, "description", None), attributes=getattr(text, "attributes", {}) or {},
            properties=feature.properties, valid_fraction=getattr(chip, "valid_fraction", None),
            gsd_m=getattr(chip, "gsd_m", None), model=describer.model_id, prompt=prompt, error=error)

    def entry(rec: RegionRecord, text=None, image=None, mask=None):
        gsd = rec.gsd_m if rec.gsd_m is None or np.isfinite(rec.gsd_m) else None
        return _entry(rec.region_id, dict(rec.properties), error=rec.error, description=rec.description,
                      attributes=dict(rec.attributes), attribute_text=getattr(text, "attribute_text", None),
                      valid_fraction=rec.valid_fraction, gsd_m=gsd, scene=rec.scene, model=rec.model,
                      thumbnail_png_b64=(thumbnail_png_b64(image, mask) if thumbnail and image is not None
                                         else None))

    def flush():
        images = [read_region(scene, chip)[0] for _, chip in pending]
        texts = describer.describe(images, [chip.box for _, chip in pending], [chip.mask for _, chip in pending],
                                   attributes=settings.attributes, description=settings.description,
                                   prompt=settings.prompt)
        out = []
        for (feature, chip), text, image in zip(pending, texts, images):
            rec = record(feature, chip, text)
            out.append((rec, entry(rec, text, image, chip.mask)))
        pending.clear()
        return out

    for _scene, feature, placed in place_regions([scene], features, chip_size=describer.chip_size,
                                                 context=settings.context, min_window=settings.min_window):
        if cancelled():
            return
        if isinstance(placed, RegionError):
            rec = record(feature, error=str(placed))
            yield [(rec, entry(rec))]
            continue
        pending.append((feature, placed))
        if len(pending) >= settings.batch_size:
            yield flush()
    if pending and not cancelled():
        yield flush()


# ================================================================================ describe_file
def handle_describe_file(service: Service, params: dict, progress: Progress, cancelled: Cancelled) -> dict:
    """The CLI's `describe` on files: scenes + AOI file (or tiles) -> an output layer; returns its summary."""
    started = time.perf_counter()
    scenes = _param(params, "scenes", list, allow_none=False)
    if not scenes or not all(isinstance(s, str) for s in scenes):
        raise ServiceError("bad_request", "'scenes' must be a non-empty list of raster paths.")
    tiles = _param(params, "tiles", bool, False, allow_none=False)
    aoi = _param(params, "aoi", str, None)
    if aoi is None and not tiles:
        raise ServiceError("bad_request", "give 'aoi' (a vector file of regions) or 'tiles': true.")
    output = service.check_path(_param(params, "output", str, allow_none=False), "output")
    mode = _param(params, "mode", str, "create", allow_none=False)
    bands = _bands_param(params)
    nodata = _param(params, "nodata", float, None)
    max_new_tokens = _int_param(params, "max_new_tokens", service.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
    options = {
        "tile_size": _int_param(params, "tile_size", 512, 16, 1 << 16),
        "tile_overlap": _int_param(params, "tile_overlap", 0, 0, 1 << 15),
        "min_valid": _param(params, "min_valid", float, 0.5, allow_none=False),
        "batch_size": _int_param(params, "batch_size", 8, 1, 256),
        "prompt": _param(params, "prompt", str, None),
        "attributes": _param(params, "attributes", bool, True, allow_none=False),
    }
    layer = _param(params, "layer", str, None)
    paths = expand_scene_paths([service._existing(s, "raster") for s in scenes])
    features = []
    if aoi is not None:
        features = read_aoi(service._existing(aoi, "AOI"), layer=layer,
                            buffer=_param(params, "buffer", float, None), crs=_param(params, "aoi_crs", str, None))
    opened = []
    try:
        for path in paths:
            opened.append(Scene.open(path, bands=bands, nodata=nodata))
        progress(0.0, "loading the model")
        describer = service.describer(max_new_tokens)
        run = RunInfo(model_id=describer.model_id, model_sha256=_model_hash(describer),
                      parameters={"request": "describe_file", "scenes": paths, "aoi": aoi, "layer": layer,
                                  "tiles": tiles, "bands": bands, "nodata": nodata, "device": str(describer.device),
                                  "max_new_tokens": max_new_tokens, **options})
        total = len(features) if not tiles and len(opened) == 1 else None

        def on_batch(done: int):
            progress(min(done / total, 1.0) if total else 0.0, f"{done} {'tiles' if tiles else 'regions'} done")

        summary = describe_to_output(opened, features, describer, output, mode, run, tiles=tiles,
                                     on_batch=on_batch, should_cancel=cancelled, **options)
    finally:
        for scene in opened:
            scene.close()
    if summary.get("cancelled"):
        raise ServiceError("cancelled", f"cancelled by the client after {summary['described'] + summary['failed']} "
                                        f"{summary['unit']}; what was written to {output} is kept (rerun with "
                                        f"mode 'resume' to finish).")
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


HANDLERS: dict[str, Callable[[Service, dict, Progress, Cancelled], dict]] = {
    "hello": handle_hello,
    "describe": handle_describe,
    "describe_file": handle_describe_file,
}


# ================================================================================ thumbnails
def thumbnail_png_b64(image: np.ndarray, mask: np.ndarray | None = None,
                      max_side: int = THUMBNAIL_MAX_SIDE) -> str:
    """The chip the model saw as a base64 PNG at most `max_side` pixels a side (nearest neighbour),
    pixels outside the region's mask dimmed so the region stands out."""
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if mask is not None and mask.shape == rgb.shape[:2] and mask.any():
        rgb = np.where(mask[:, :, None], rgb, (rgb // 2.5).astype(np.uint8))
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rows = (np.arange(max(1, round(h * scale))) / scale).astype(int)
        cols = (np.arange(max(1, round(w * scale))) / scale).astype(int)
        rgb = rgb[rows][:, cols]
    return base64.b64encode(encode_png(rgb)).decode("ascii")


def encode_png(rgb: np.ndarray) -> bytes:
    """A minimal 8-bit RGB PNG (no filter, zlib): enough for thumbnails, no imaging library needed."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


__all__ = ["PROTOCOL_VERSION", "ERROR_CODES", "ServiceError", "Service", "HANDLERS", "error_payload",
           "handle_hello", "handle_describe", "handle_describe_file", "describe_to_output",
           "thumbnail_png_b64", "encode_png"]
