"""The MGIMM panel: which raster to describe and which of its bands the model sees as red, green,
blue (remembered per layer), the draw/select actions (icons, so the panel narrows like QGIS's own),
progress with cancel, and the results of the latest request: a list of its regions, and for the
chosen one its description, attributes and a thumbnail of the chip the model saw. A new request
or an error clears the previous results, so nothing old reads as the new answer."""

from __future__ import annotations

import base64

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import (QComboBox, QHBoxLayout, QHeaderView, QLabel, QListWidget, QProgressBar,
                                 QPushButton, QSizePolicy, QTableWidget, QTableWidgetItem, QTextBrowser,
                                 QToolButton, QVBoxLayout, QWidget)

from .bands import PROPERTY as BANDS_PROPERTY
from .bands import parse_bands, shown_bands
from .fields import ATTRIBUTE_ALIASES
from .messages import qgis_words

THUMBNAIL_SIDE = 192  # pixels on screen
RESULT_ROWS = 5       # the regions list shows this many rows at most, then scrolls


class BandComboBox(QComboBox):
    """A raster's bands by name: a band's description when it has one ("SR_B3"), else QGIS's name
    without its "Band " prefix ("1 (Red)", "4"), so three fit side by side in the panel (QGIS 3.22's
    own band combo box shows only "Band 3"); QGIS's full name ("Band 3: SR_B3") is the tooltip."""

    def setLayer(self, layer) -> None:  # noqa: N802 (Qt's style)
        self.blockSignals(True)
        self.clear()
        provider = layer.dataProvider() if layer is not None else None
        for band in range(1, (layer.bandCount() if layer is not None else 0) + 1):
            name = provider.displayBandName(band)
            short = name.split(": ", 1)[1] if ": " in name else name[5:] if name.startswith("Band ") else name
            self.addItem(short, band)
            self.setItemData(self.count() - 1, name, Qt.ToolTipRole)
        self.blockSignals(False)

    def setBand(self, band: int) -> None:  # noqa: N802
        index = self.findData(band)
        if index >= 0:
            self.setCurrentIndex(index)

    def currentBand(self) -> int:  # noqa: N802
        band = self.currentData()
        return int(band) if band is not None else -1


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
        self.raster_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.raster_combo.setMinimumContentsLength(6)
        self.raster_combo.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        row.addWidget(self.raster_combo, 1)
        layout.addLayout(row)

        self.bands_row = QWidget(body)   # shown for rasters of several bands
        bands = QHBoxLayout(self.bands_row)
        bands.setContentsMargins(0, 0, 0, 0)
        bands.addWidget(QLabel("Bands"))
        self.band_combos = []
        for colour in ("red", "green", "blue"):
            combo = BandComboBox(self.bands_row)
            combo.setToolTip(f"The band the model sees as {colour}")
            combo.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
            combo.currentIndexChanged.connect(self._bands_edited)
            bands.addWidget(combo, 1)
            self.band_combos.append(combo)
        self.bands_row.setVisible(False)
        layout.addWidget(self.bands_row)
        self._setting_bands = False
        self.raster_combo.layerChanged.connect(self.show_bands)

        self.guide_row = QWidget(body)  # shown while "Describe with guide layer" is on
        guide = QHBoxLayout(self.guide_row)
        guide.setContentsMargins(0, 0, 0, 0)
        guide.addWidget(QLabel("Guide"))
        self.guide_combo = QgsMapLayerComboBox(self.guide_row)
        self.guide_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.guide_combo.setAllowEmptyLayer(True)
        self.guide_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.guide_combo.setMinimumContentsLength(6)
        self.guide_combo.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.guide_combo.setToolTip("Polygon layer of objects (footprints, detections; any CRS) whose objects "
                                    "inside a region guide its description and get their own attributes")
        guide.addWidget(self.guide_combo, 1)
        self.guide_row.setVisible(False)
        layout.addWidget(self.guide_row)

        self.tool_row = QHBoxLayout()  # the plugin puts its draw/selection actions here
        self.tool_row.addStretch(1)
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

        self.results = QListWidget(body)   # the regions of the latest request; the chosen one is shown below
        self.results.currentRowChanged.connect(self._show_row)
        layout.addWidget(self.results)
        self._entries: list = []
        self._fit_results()

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
        self.attributes.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        layout.addWidget(self.attributes, 1)
        self.setWidget(body)
        self._task = None
        self.cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------------ bands
    def show_bands(self, layer=None) -> None:
        """The Bands row for `layer` (default: the chosen raster): its bands by name, set to the
        choice remembered on the layer, else the default (request_data.band_default)."""
        from .request_data import band_default

        layer = layer if layer is not None else self.raster_combo.currentLayer()
        count = layer.bandCount() if layer is not None and hasattr(layer, "bandCount") else 0
        self.bands_row.setVisible(count > 1)
        if count <= 1:
            return
        choice = band_default(layer)
        chosen = parse_bands(layer.customProperty(BANDS_PROPERTY, ""), count)
        if chosen is None:
            provider = layer.dataProvider()
            chosen = shown_bands([provider.colorInterpretationName(b) for b in range(1, count + 1)], choice)
        self._setting_bands = True
        try:
            for combo, band in zip(self.band_combos, chosen):
                combo.setLayer(layer)
                combo.setBand(band)
        finally:
            self._setting_bands = False
        why = "" if choice is None else f" (default: {choice.reason})"
        self.bands_row.setToolTip(f"The bands the model sees as red, green, blue{why}; your choice is kept "
                                  f"with the layer")
        if choice is not None and not choice.certain and layer.customProperty(BANDS_PROPERTY, "") == "":
            self.status.setText(f"{layer.name()}: {count} bands, none marked red, green or blue; the first three "
                                f"are used. Choose the red, green and blue bands in the Bands row.")

    def _bands_edited(self, _band: int = 0) -> None:
        """Remember the user's choice on the layer (saved with the project)."""
        layer = self.raster_combo.currentLayer()
        if self._setting_bands or layer is None:
            return
        bands = [combo.currentBand() for combo in self.band_combos]
        if all(b >= 1 for b in bands):
            layer.setCustomProperty(BANDS_PROPERTY, ",".join(str(b) for b in bands))

    def add_tool(self, action) -> None:
        button = QToolButton(self.widget())
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonIconOnly)   # the action's text is its tooltip
        button.setAutoRaise(True)
        self.tool_row.insertWidget(self.tool_row.count() - 1, button)

    # ------------------------------------------------------------------ task
    def follow(self, task) -> None:
        """Show `task`'s progress; Cancel cancels it."""
        self._task = task
        self.clear_results()
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

    def task_failed(self, message: str) -> None:
        """An error: its message, and no results of an earlier request left to read as the answer."""
        self.clear_results()
        self.progress.setValue(0)
        self.task_done(message)

    def clear_results(self) -> None:
        self._entries = []
        self.results.clear()
        self._fit_results()
        self.description.clear()
        self.attributes.setRowCount(0)
        self.thumbnail.clear()

    # ------------------------------------------------------------------ result
    def show_results(self, entries: list) -> None:
        """List the regions of a request (each browsable) and show the first."""
        self._entries = list(entries)
        self.results.clear()
        for entry in self._entries:
            text = entry.get("description") or entry.get("error") or ""
            attributes = entry.get("attributes") or {}
            label = " ".join(str(attributes[k]) for k in ("color", "object", "name") if attributes.get(k))
            self.results.addItem(f"{entry.get('id')}: {label or text[:60]}")
        self._fit_results()
        if self._entries:
            self.results.setCurrentRow(0)

    def _fit_results(self) -> None:
        """The list as tall as its rows, up to RESULT_ROWS (a single region leaves the room to its
        description), scrolling beyond."""
        count = self.results.count()
        row = self.results.sizeHintForRow(0) if count else -1
        if row <= 0:
            row = self.results.fontMetrics().height() + 4
        self.results.setMaximumHeight(row * min(max(count, 1), RESULT_ROWS) + 2 * self.results.frameWidth() + 2)

    def _show_row(self, row: int) -> None:
        if 0 <= row < len(self._entries):
            self.show_entry(self._entries[row])

    def show_entry(self, entry: dict) -> None:
        """One region of a `describe` result: text, attributes, thumbnail."""
        self.progress.setValue(100)
        text = entry.get("description") or ""
        if entry.get("error"):
            text = qgis_words(f"Region {entry.get('id')}: {entry['error']}")
        objects = [o for o in entry.get("objects") or [] if isinstance(o, dict)]
        if objects:   # which guide object got which attributes (their labels on the map start with the id)
            lines = [f"{o.get('region_id')}: {o.get('attribute_text') or o.get('error') or ''}"
                     + (f" ({o['guide_status']})" if o.get("guide_status") else "") for o in objects]
            text += "\n\nGuide objects:\n" + "\n".join(lines)
        self.description.setPlainText(text)
        rows = [(ATTRIBUTE_ALIASES.get(k, k), v) for k, v in (entry.get("attributes") or {}).items()
                if v not in (None, "")]
        row = entry.get("row") or {}     # the layer's row: no_object_p (MGIMM models) and object_p are there
        sure = entry.get("object_p", row.get("object_p"))
        if sure is not None:     # beside the class it is about, to 4 places (0.9995 is not "1")
            at = next((i + 1 for i, (key, _) in enumerate(rows) if key == "object"), len(rows))
            rows.insert(at, ("object_p", f"{sure:.4f}"))
        for key in ("guide_objects", "guide_objects_left", "no_object_p", "valid_fraction", "gsd_m", "scene",
                    "model"):
            value = entry.get(key, row.get(key))
            if value is not None:
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
