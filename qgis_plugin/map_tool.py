"""A map tool that draws a polygon or a rectangle and hands it over in the canvas CRS.

Polygon: left click adds a corner, right click (or a double click) closes it; the release that ends
a double click starts nothing. Rectangle: press, drag,
release. Escape or Backspace cancel / remove the last corner. The finished geometry is emitted by
`regionDrawn(QgsGeometry)` in map units of the canvas (its destination CRS); the caller transforms
it to the raster's CRS.
"""

from __future__ import annotations

from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle, QgsWkbTypes
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

POLYGON, RECTANGLE = "polygon", "rectangle"


class RegionMapTool(QgsMapTool):
    regionDrawn = pyqtSignal(QgsGeometry)

    def __init__(self, canvas, shape: str = POLYGON):
        super().__init__(canvas)
        self.shape = shape
        self.points: list = []
        self._start = None
        self._after_double_click = False
        self.rubber_band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.rubber_band.setColor(QColor(230, 120, 0, 200))
        self.rubber_band.setFillColor(QColor(255, 200, 0, 50))
        self.rubber_band.setWidth(2)
        self.setCursor(Qt.CrossCursor)

    # ------------------------------------------------------------------ events
    def canvasPressEvent(self, event):
        if self.shape == RECTANGLE and event.button() == Qt.LeftButton:
            self._start = event.mapPoint()
            self._show_rectangle(self._start)

    def canvasMoveEvent(self, event):
        if self.shape == RECTANGLE:
            if self._start is not None:
                self._show_rectangle(event.mapPoint())
        elif self.points:
            self._show_polygon(self.points + [event.mapPoint()])

    def canvasReleaseEvent(self, event):
        if self._after_double_click:     # Qt sends press, release, double click, release: the last
            self._after_double_click = False   # release belongs to the double click that closed the polygon
            return
        point = event.mapPoint()
        if self.shape == RECTANGLE:
            if self._start is None or event.button() != Qt.LeftButton:
                return
            rectangle = QgsRectangle(self._start, point)
            self._start = None
            self.rubber_band.reset(QgsWkbTypes.PolygonGeometry)
            if rectangle.width() > 0 and rectangle.height() > 0:
                self.regionDrawn.emit(QgsGeometry.fromRect(rectangle))
            return
        if event.button() == Qt.LeftButton:
            self.points.append(QgsPointXY(point))
            self._show_polygon(self.points)
        elif event.button() == Qt.RightButton:
            self.finish_polygon()

    def canvasDoubleClickEvent(self, event):
        if self.shape == POLYGON and event.button() == Qt.LeftButton:
            self._after_double_click = True
            self.finish_polygon()

    def keyPressEvent(self, event):
        if event.key() == Qt.Key_Escape:
            self.clear()
        elif event.key() == Qt.Key_Backspace and self.points:
            self.points.pop()
            self._show_polygon(self.points)

    def deactivate(self):
        self.clear()
        super().deactivate()

    # ------------------------------------------------------------------ drawing
    def finish_polygon(self) -> None:
        """Close the polygon drawn so far and emit it (three distinct corners at least)."""
        points = [p for i, p in enumerate(self.points) if i == 0 or p != self.points[i - 1]]
        self.clear()
        if len(points) >= 3:
            geometry = QgsGeometry.fromPolygonXY([points + [points[0]]])
            if geometry.area() > 0:
                self.regionDrawn.emit(geometry)

    def clear(self) -> None:
        self.points = []
        self._start = None
        self.rubber_band.reset(QgsWkbTypes.PolygonGeometry)

    def _show_polygon(self, points) -> None:
        self.rubber_band.reset(QgsWkbTypes.PolygonGeometry)
        for point in points:
            self.rubber_band.addPoint(QgsPointXY(point), False)
        self.rubber_band.show()
        if points:
            self.rubber_band.updatePosition()
            self.rubber_band.update()

    def _show_rectangle(self, corner) -> None:
        self.rubber_band.setToGeometry(QgsGeometry.fromRect(QgsRectangle(self._start, corner)), None)
        self.rubber_band.show()

    def remove_rubber_band(self) -> None:
        """Take the rubber band off the canvas (the plugin calls this when it unloads)."""
        self.clear()
        scene = self.canvas().scene()
        if scene is not None and self.rubber_band.scene() is scene:
            scene.removeItem(self.rubber_band)
