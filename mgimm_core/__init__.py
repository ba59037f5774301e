"""mgimm_core: GeoTIFFs and drawn polygons in, region-guided MGIMM descriptions out.

The core never imports click or Qt; the CLI (`batch`) and the QGIS plugin are thin layers over it.
"""

__version__ = "0.1.0"
