"""Messages in QGIS's message bar with a Details button: the bar cuts a long text to two lines, and
Details shows all of it in a dialog whose text can be selected and copied."""

from __future__ import annotations

from qgis.core import Qgis
from qgis.gui import QgsMessageBarItem
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QMessageBox, QPushButton

_ICONS = {Qgis.Info: QMessageBox.Information, Qgis.Warning: QMessageBox.Warning,
          Qgis.Critical: QMessageBox.Critical, Qgis.Success: QMessageBox.Information}
_open: list = []   # the Details dialogs shown (non-modal), kept alive until closed


def push_message(bar, title: str, message: str, level=Qgis.Warning, duration: int = 10) -> QgsMessageBarItem:
    """Push `title: message` with a Details button onto `bar` (a QgsMessageBar); returns the item."""
    item = QgsMessageBarItem(title, message, level, duration, bar)
    button = QPushButton("Details", item)
    button.setToolTip("Show the whole message, to read or copy")
    button.clicked.connect(lambda checked=False: show_details(bar.window(), title, message, level))
    item.setWidget(button)
    bar.pushItem(item)
    return item


def show_details(parent, title: str, message: str, level=Qgis.Warning) -> QMessageBox:
    """The whole message in a non-modal dialog, its text selectable."""
    box = QMessageBox(_ICONS.get(level, QMessageBox.Information), title, message, QMessageBox.Close, parent)
    box.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.finished.connect(lambda result: _open.remove(box) if box in _open else None)
    _open.append(box)
    box.show()
    return box
