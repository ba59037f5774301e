"""The MGIMM panel: which raster to describe, progress with cancel, and the latest result
(description, attributes, and a thumbnail of the chip the model saw)."""

from __future__ import annotations

import base64

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import (QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton, QTableWidget,
                                 QTableWidgetItem, QTextBrowser, QToolButton, QVBoxLayout, QWidget)

THUMBNAIL_SIDE = 192  # pixels on screen


class DescriptionDock(QgsDockWidget):
    def __init__(self, parent=None):
        super().__init__("MGIMM descriptions", parent)
        self.setObjectName("MGIMMDescriptionDock")
        body = QWidget(self)
        layout = QVBoxLayout(body)

        row = QHBoxLayout()
        row.addWidget(QLabel("Raster"))
        self.raster_combo = QgsMapLayerComboBox(body)
        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        row.addWidget(self.raster_combo, 1)
        layout.addLayout(row)

        self.tool_row = QHBoxLayout()  # the plugin puts its draw/selection actions here
        layout.addLayout(self.tool_row)

        row = QHBoxLayout()
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        row.addWidget(self.progress, 1)
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.setEnabled(False)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status = QLabel("Draw a region over a raster.", body)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.thumbnail = QLabel(body)
        self.thumbnail.setAlignment(Qt.AlignCenter)
        self.thumbnail.setMinimumHeight(64)
        layout.addWidget(self.thumbnail)
        self.description = QTextBrowser(body)
        layout.addWidget(self.description, 2)
        self.attributes = QTableWidget(0, 2, body)
        self.attributes.setHorizontalHeaderLabels(["Attribute", "Value"])
        self.attributes.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.attributes.verticalHeader().setVisible(False)
        layout.addWidget(self.attributes, 1)
        self.setWidget(body)
        self._task = None
        self.cancel_button.clicked.connect(self.cancel)

    def add_tool(self, action) -> None:
        button = QToolButton(self.widget())
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.tool_row.addWidget(button)

    # ------------------------------------------------------------------ task
    def follow(self, task) -> None:
        """Show `task`'s progress; Cancel cancels it."""
        self._task = task
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)
        self.status.setText(task.description())
        task.progressChanged.connect(self._on_progress)

    def _on_progress(self, value: float) -> None:
        self.progress.setValue(int(value))
        task = self._task
        if task is not None and getattr(task, "progress_message", ""):
            self.status.setText(task.progress_message)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def task_done(self, message: str) -> None:
        self._task = None
        self.cancel_button.setEnabled(False)
        self.status.setText(message)

    # ------------------------------------------------------------------ result
    def show_entry(self, entry: dict) -> None:
        """One region of a `describe` result: text, attributes, thumbnail."""
        self.progress.setValue(100)
        text = entry.get("description") or ""
        if entry.get("error"):
            text = f"Region {entry.get('id')}: {entry['error']}"
        self.description.setPlainText(text)
        rows = [(k, v) for k, v in (entry.get("attributes") or {}).items() if v not in (None, "")]
        for key in ("valid_fraction", "gsd_m", "scene", "model"):
            if entry.get(key) is not None:
                value = entry[key]
                rows.append((key, f"{value:.3g}" if isinstance(value, float) else value))
        self.attributes.setRowCount(len(rows))
        for i, (key, value) in enumerate(rows):
            self.attributes.setItem(i, 0, QTableWidgetItem(str(key)))
            self.attributes.setItem(i, 1, QTableWidgetItem(str(value)))
        self.thumbnail.clear()
        data = entry.get("thumbnail_png_b64")
        if data:
            pixmap = QPixmap()
            if pixmap.loadFromData(base64.b64decode(data), "PNG"):
                self.thumbnail.setPixmap(pixmap.scaled(THUMBNAIL_SIDE, THUMBNAIL_SIDE, Qt.KeepAspectRatio,
                                                       Qt.SmoothTransformation))
