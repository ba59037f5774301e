"""Errors raised by mgimm_core.

One root class, `MGIMMError`. Each subclass also inherits the matching builtin (an unreadable file
is an `OSError`, a bad value a `ValueError`) so callers can catch either. Every message says what
went wrong, on which file, band or feature, and what to do about it.

Every class has a stable `code` (snake_case). Codes travel in output rows (`error_code`), in the
worker/server protocol and in the plugin; callers decide what happened by the code or the class,
never by the message text, which may be reworded.
"""


class MGIMMError(Exception):
    """Root of every error mgimm_core raises on purpose (an input that cannot be used)."""

    code = "bad_input"


class SceneError(MGIMMError, OSError):
    """A raster cannot be opened or read (missing, not a raster, corrupt)."""

    code = "scene_unreadable"


class BandError(MGIMMError, ValueError):
    """A band selection is invalid (index out of range, ambiguous default)."""

    code = "band_error"


class CRSError(MGIMMError, ValueError):
    """A coordinate reference system is missing, unknown, or incompatible with the request."""

    code = "crs_error"


class NoCRSError(CRSError):
    """The raster has no CRS, and the regions are given in a geographic one."""

    code = "no_crs"


class GeotransformError(MGIMMError, ValueError):
    """A raster's geotransform cannot be honoured exactly (e.g. unsupported rotation)."""

    code = "geotransform_error"


class AOIError(MGIMMError, ValueError):
    """An AOI source (file, layer, WKT, bbox) cannot be read as polygons."""

    code = "aoi_error"


class AOICoordinatesError(AOIError):
    """An AOI's coordinates cannot be in its CRS: metres read as degrees (its CRS missing or wrong).
    `bounds` are the offending feature's, so each interface can name its own way to give the CRS."""

    def __init__(self, message: str, bounds: tuple[float, float, float, float]) -> None:
        super().__init__(message)
        self.bounds = bounds


class OptionsError(MGIMMError, ValueError):
    """Describe options that contradict each other or are out of range (a usage error).

    `option` names the field at fault (e.g. "tile_overlap"), so each interface can name it in its
    own words (the CLI's flag, the protocol's parameter).
    """

    code = "bad_option"

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class UnknownWordsError(OptionsError):
    """A prompt holds words the model's vocabulary does not know (refused with --strict)."""

    code = "unknown_words"

    def __init__(self, message: str, option: str | None = None, words: list[str] | None = None) -> None:
        super().__init__(message, option)
        self.words = list(words or [])


class RegionError(MGIMMError, ValueError):
    """One region cannot be described; the run goes on with the others."""

    code = "region_error"
    feature_id: str | None = None        # the AOI feature's id, where it is known


class RegionGeometryError(RegionError):
    """The region is empty, or not a polygon (a point or line without --buffer)."""

    code = "region_geometry"


class RegionOutsideError(RegionError):
    """The region lies outside the scene (or outside every scene given)."""

    code = "region_outside"


class RegionTooSmallError(RegionError):
    """The region has no area once placed on the scene's pixel grid."""

    code = "region_too_small"


class RegionNoDataError(RegionError):
    """The region holds no valid pixel (all nodata or masked): there is nothing to describe."""

    code = "region_nodata"


class ModelError(MGIMMError, RuntimeError):
    """A model or checkpoint cannot be built, loaded or run."""

    code = "model"


class InvalidAnswerError(MGIMMError, ValueError):
    """A model's answer cannot be read as what was asked (an attribute answer that is not the JSON
    object of the row schema): the region's row keeps what it can and carries this code."""

    code = "invalid_answer"


class EndpointError(MGIMMError):
    """A model endpoint (an OpenAI-compatible server, `--model URL`) did not answer a region's request;
    the region's row carries the code of the subclass and the run goes on (a resumed run retries it)."""

    code = "endpoint_unreachable"


class EndpointUnreachableError(EndpointError, ConnectionError):
    """No connection to the endpoint (refused, reset, DNS), or it kept answering 429/5xx after the retries."""

    code = "endpoint_unreachable"


class EndpointTimeoutError(EndpointError, TimeoutError):
    """The endpoint took longer than the timeout to answer (`--timeout`)."""

    code = "endpoint_timeout"


class EndpointRefusedError(EndpointError, RuntimeError):
    """The endpoint answered the request with an error that retrying cannot fix (4xx: a wrong key, an
    unknown served model, a request it does not take); `status` is the HTTP status."""

    code = "endpoint_refused"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VisionTowerNotFound(ModelError):
    """An original-format LLaVA/GeoChat directory names a vision tower that is not on this machine
    (the option that fixes it: `option`)."""

    code = "vision_not_found"
    option = "vision"


class IncompleteImportError(ModelError):
    """A checkpoint import left trained tensors (region module, projector) at their fresh values.

    `missing` lists the model's tensor names that no checkpoint provided.
    """

    code = "incomplete_import"

    def __init__(self, message: str, missing: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = list(missing or [])


class OutputError(MGIMMError, OSError):
    """An output cannot be written (exists without --overwrite, wrong format, locked)."""

    code = "output_error"


class OutputBusyError(OutputError):
    """Another run is writing the same output now (two writers would interleave or lose rows)."""

    code = "output_busy"


def error_code(exc: BaseException) -> str:
    """The stable code of an error; `internal` for anything mgimm_core did not raise on purpose."""
    return exc.code if isinstance(exc, MGIMMError) else "internal"
