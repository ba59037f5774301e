"""The worker/server protocol's fixed parts: version, error codes with their HTTP status, the
structured error payload, and checked request parameters (docs/protocol.md)."""

from __future__ import annotations

import logging
from typing import Any

from mgimm_core import __version__
from mgimm_core.errors import MGIMMError, error_code

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1

#: Every error code a client may see, with the HTTP status the server answers it with. Request-level
#: codes first; then the codes of mgimm_core.errors, which also label failed regions (`error_code`).
ERROR_CODES = {
    "bad_request": 400,     # malformed request: unknown type, missing/wrong parameter
    "unauthorized": 401,    # server only: missing or wrong token
    "forbidden": 403,       # a path outside the server's --root folders, or a remote (/vsi, URL) path
    "not_found": 404,       # a raster / AOI file that does not exist
    "too_large": 413,       # server only: request body over --max-request-mb
    "cancelled": 409,       # the client cancelled the request
    "internal": 500,        # a bug: the message says where to report it
    # mgimm_core.errors
    "bad_input": 422,           # an input that exists but cannot be used
    "scene_unreadable": 422,    # SceneError: the raster cannot be opened or read
    "band_error": 422,          # BandError: band selection out of range or needed
    "crs_error": 422,           # CRSError: unknown or incompatible CRS
    "no_crs": 422,              # NoCRSError: the raster has no CRS and the regions are geographic
    "geotransform_error": 422,  # GeotransformError
    "aoi_error": 422,           # AOIError: the AOI source cannot be read as polygons
    "bad_option": 400,          # OptionsError: options that contradict each other or are out of range
    "unknown_words": 400,       # UnknownWordsError: prompt words the model does not know (strict)
    "region_error": 422,        # RegionError (per region)
    "region_geometry": 422,     # RegionGeometryError: empty, or not a polygon
    "region_outside": 422,      # RegionOutsideError: outside the raster (as a request: every region)
    "region_too_small": 422,    # RegionTooSmallError: no area on the scene's pixel grid
    "output_error": 422,        # OutputError: the output cannot be written
    "region_nodata": 422,       # RegionNoDataError: per region: every pixel under it is nodata
    "output_busy": 409,         # OutputBusyError: another run is writing the same output now
    "model": 500,               # ModelError: the model cannot be loaded or run
    "vision_not_found": 500,    # VisionTowerNotFound: a LLaVA/GeoChat vision tower is not on the machine
    "incomplete_import": 422,   # IncompleteImportError: a checkpoint import left trained tensors unprovided
    "invalid_answer": 422,      # InvalidAnswerError (per region): an attribute answer that is not the row's JSON
    "endpoint_unreachable": 502,  # EndpointUnreachableError: the model endpoint (--model URL) cannot be reached
    "endpoint_timeout": 504,    # EndpointTimeoutError: the model endpoint did not answer in time
    "endpoint_refused": 502,    # EndpointRefusedError: the model endpoint answered with an error (4xx)
}


class ServiceError(MGIMMError):
    """A request failed as a whole; `code` is one of ERROR_CODES, `message` says what to do."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message


def error_payload(exc: BaseException) -> dict[str, Any]:
    """{"code", "message"} for any exception: ours keep their code and message, others become `internal`."""
    code = error_code(exc)
    if code == "internal" or code not in ERROR_CODES:
        log.error("internal error", exc_info=exc)
        return {"code": "internal", "message": f"internal error ({type(exc).__name__}: {exc}). This is a "
                f"bug in mgimm-geo {__version__}: please report it with the worker's or server's log."}
    return {"code": code, "message": str(exc)}


# ================================================================================ parameters
_MISSING = object()


def param(params: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING, *,
          allow_none: bool = True) -> Any:      # a JSON value, checked against `kind`
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


def int_param(params: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    value: int = param(params, name, int, default, allow_none=False)
    if not low <= value <= high:
        raise ServiceError("bad_request", f"parameter {name!r} = {value} is out of range; give {low}..{high}.")
    return value


def bands_param(params: dict[str, Any]) -> tuple[int, ...] | None:
    bands = param(params, "bands", list, None)
    if bands is None:
        return None
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bands):
        raise ServiceError("bad_request", f"parameter 'bands' = {bands!r}: give 1-based band numbers, "
                                          f"e.g. [3, 2, 1] or [1].")
    return tuple(bands)
