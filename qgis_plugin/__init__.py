"""mgimm-geo QGIS plugin: draw a region over imagery, get its MGIMM description as a feature.

A thin client: QGIS's Python never imports torch; the model runs in the user's own environment
(`mgimm-geo worker` or `mgimm-geo serve`). Only QGIS imports happen when QGIS calls classFactory.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import MGIMMPlugin

    return MGIMMPlugin(iface)
