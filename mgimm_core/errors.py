"""Errors raised by mgimm_core.

One root class, `MGIMMError`. Each subclass also inherits the matching builtin (an unreadable file
is an `OSError`, a bad value a `ValueError`) so callers can catch either. Every message says what
went wrong, on which file, band or feature, and what to do about it.
"""


class MGIMMError(Exception):
    """Root of every error mgimm_core raises on purpose."""


class SceneError(MGIMMError, OSError):
    """A raster cannot be opened or read (missing, not a raster, corrupt)."""


class BandError(MGIMMError, ValueError):
    """A band selection is invalid (index out of range, ambiguous default)."""


class CRSError(MGIMMError, ValueError):
    """A coordinate reference system is missing, unknown, or incompatible with the request."""


class GeotransformError(MGIMMError, ValueError):
    """A raster's geotransform cannot be honoured exactly (e.g. unsupported rotation)."""


class AOIError(MGIMMError, ValueError):
    """An AOI source (file, layer, WKT, bbox) cannot be read as polygons."""


class RegionError(MGIMMError, ValueError):
    """One region cannot be described (outside the scene, empty, wrong geometry type)."""


class ModelError(MGIMMError, RuntimeError):
    """A model or checkpoint cannot be built, loaded or run."""


class OutputError(MGIMMError, OSError):
    """An output cannot be written (exists without --overwrite, wrong format, locked)."""
