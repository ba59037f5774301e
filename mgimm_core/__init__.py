"""mgimm_core: GeoTIFFs and drawn polygons in, region-guided MGIMM descriptions out.

The core never imports click or Qt; the CLI (`batch`) and the QGIS plugin are thin layers over it.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "describe", "load_model"]


def __getattr__(name: str) -> Any:
    """`mgimm_core.describe` / `mgimm_core.load_model` (mgimm_core.api), imported on first use so that
    `import mgimm_core` stays light."""
    if name in ("describe", "load_model"):
        from mgimm_core import api

        return getattr(api, name)
    raise AttributeError(f"module 'mgimm_core' has no attribute {name!r}")
