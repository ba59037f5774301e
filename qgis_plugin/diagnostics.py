"""The Diagnostics dialog: where the model runs (CPU/CUDA, memory), which model (family, card), the
worker's or server's versions, the plugin's settings and the last error, as text the user can copy
into a report. The facts come from the worker/server (`diagnostics` request: no model loads)."""

from __future__ import annotations

import json

from qgis.PyQt.QtGui import QGuiApplication
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QPlainTextEdit, QPushButton, QVBoxLayout


def _size(count) -> str:
    return f"{count / 2**30:.1f} GiB" if isinstance(count, (int, float)) else "?"


def report_text(settings, reply: dict | None, error=None, last_error=None) -> str:
    """The diagnostics as plain text: the worker's/server's reply, or why there is none."""
    lines = ["MGIMM diagnostics", ""]
    where = (f"server {settings.server_url}" if settings.mode == "server"
             else f"local worker: {settings.worker_command}")
    lines += [f"Mode: {where}", f"Model folder setting: {settings.model or '(the embedded demo model)'}"]
    if reply is None:
        lines += ["", f"The worker/server did not answer: {error.message if error is not None else 'no reply'}"]
    else:
        devices = reply.get("cuda_devices") or []
        gpus = "; ".join(f"{d['name']} ({_size(d['memory_free_bytes'])} free of {_size(d['memory_total_bytes'])})"
                         for d in devices) or "none"
        model = reply.get("model") or {}
        lines += ["", f"Device asked for: {reply.get('device_asked')}; in use: "
                      f"{reply.get('device_in_use') or 'chosen when the model loads'}",
                  f"CUDA GPUs: {gpus}",
                  f"CPU cores: {reply.get('cpu_cores')}; memory {_size(reply.get('memory_free_bytes'))} free of "
                  f"{_size(reply.get('memory_total_bytes'))}",
                  "", f"Model: {model.get('model') or model.get('error')} ({model.get('path', '')})",
                  f"Family: {model.get('kind')} [{model.get('family')}]; "
                  f"licence: {model.get('licence') or 'not stated'}"
                  + (f" ({model['licence_warning']})" if model.get("licence_warning") else ""),
                  f"Model card (trained on): {json.dumps(model.get('trained_on'))}",
                  "", f"Versions: mgimm-geo {reply.get('mgimm_geo')}, Python {reply.get('python')}, torch "
                      f"{reply.get('torch')}, rasterio {reply.get('rasterio')}, GDAL {reply.get('gdal')} "
                      f"({reply.get('platform')})"]
    lines += ["", "Last error: " + (f"[{last_error.code}] {last_error.message}" if last_error is not None
                                    else "none in this session")]
    return "\n".join(lines)


class DiagnosticsDialog(QDialog):
    def __init__(self, text: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("MGIMM diagnostics")
        self.resize(720, 420)
        layout = QVBoxLayout(self)
        self.text = QPlainTextEdit(text, self)
        self.text.setReadOnly(True)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        self.copy_button = QPushButton("Copy", self)
        buttons.addButton(self.copy_button, QDialogButtonBox.ActionRole)
        self.copy_button.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())
