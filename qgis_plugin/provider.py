"""The "MGIMM" Processing provider (toolbox, graphical modeler, qgis_process)."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import DescribeRegionsAlgorithm, DescribeTilesAlgorithm

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


class MGIMMProvider(QgsProcessingProvider):
    def id(self):
        return "mgimm"

    def name(self):
        return "MGIMM"

    def longName(self):
        return "MGIMM region descriptions"

    def icon(self):
        return QIcon(ICON)

    def loadAlgorithms(self):
        self.addAlgorithm(DescribeRegionsAlgorithm())
        self.addAlgorithm(DescribeTilesAlgorithm())
