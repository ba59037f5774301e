"""Settings dialog: worker or server mode, their parameters, the layer path, a connection test that
shows the model and device in use, and a models folder whose model folders (found by the worker or
server, with family, size and licence) are picked from a list (requests run as QgsTasks, so QGIS
stays responsive)."""

from __future__ import annotations

import shlex

from qgis.core import QgsApplication
from qgis.gui import QgsAuthConfigSelect, QgsFileWidget
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                                 QLabel, QLineEdit, QPushButton, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from .endpoint_rows import EndpointRows
from .settings import MODES, PluginSettings, SecretStoreError, default_layer_path, load_token
from .task import RequestTask


def model_label(row: dict) -> str:
    """One found model as the list shows it: name, family, size on disk, licence."""
    size = row.get("size_bytes") or 0
    size_text = f"{size / 2**30:.1f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"
    warning = " (non-commercial)" if row.get("licence_warning") else ""
    return (f"{row.get('model')}: {row.get('kind') or row.get('family')}, {size_text}, "
            f"licence {row.get('licence') or 'not stated'}{warning}")


class SettingsDialog(QDialog):
    def __init__(self, settings: PluginSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("MGIMM settings")
        self.settings = settings
        self._task = None
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)   # path fields take the full width
        self.mode = QComboBox(self)
        self.mode.addItems(MODES)
        self.mode.setCurrentText(settings.mode)
        form.addRow("Mode", self.mode)
        self.worker_command = QLineEdit(settings.worker_command, self)
        self.worker_command.setToolTip("The worker in the Python environment where mgimm-geo is installed, "
                                       "e.g. /home/me/envs/mgimm/bin/mgimm-geo worker")
        browse = QToolButton(self)
        browse.setText("…")
        browse.setToolTip("Choose the mgimm-geo program of the environment where mgimm-geo is installed")
        browse.clicked.connect(self._browse_worker)
        row = QWidget(self)
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.worker_command, 1)
        row_layout.addWidget(browse)
        form.addRow("Worker command", row)
        self.model = self._path_widget(settings.model, QgsFileWidget.GetDirectory, "embedded demo model")
        self.model.setToolTip("A model folder of any family mgimm-geo runs (MGIMM, LLaVA-1.5, GeoChat, Qwen2.5-VL, "
                              "Qwen3-VL, InternVL, LLaVA-OneVision, Florence-2, SmolVLM: docs/models.md)")
        form.addRow("Model folder", self.model)
        self.models_folder = self._path_widget(settings.models_folder, QgsFileWidget.GetDirectory,
                                               "a folder of model folders, for offline use")
        self.models_folder.setToolTip("The folder where your model folders are; \"Find models\" lists them")
        self.find_models_button = QPushButton("Find models", self)
        self.find_models_button.clicked.connect(self.find_models)
        row = QWidget(self)
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.models_folder, 1)
        row_layout.addWidget(self.find_models_button)
        form.addRow("Models folder", row)
        self.model_list = QComboBox(self)
        self.model_list.setToolTip("The models found in the models folder: choosing one sets the model folder")
        self.model_list.addItem("(Find models to list them)", "")
        self.model_list.activated.connect(self._model_chosen)
        form.addRow("Models found", self.model_list)
        self.vision = self._path_widget(settings.vision, QgsFileWidget.GetDirectory,
                                        "only for original-format LLaVA / GeoChat")
        self.vision.setToolTip("The CLIP vision-tower folder the model names (mm_vision_tower), when it is "
                               "not found by itself")
        form.addRow("Vision tower folder", self.vision)
        self.device = QLineEdit(settings.device, self)
        self.device.setPlaceholderText("auto")
        form.addRow("Device", self.device)
        self.server_url = QLineEdit(settings.server_url, self)
        form.addRow("Server URL", self.server_url)
        self.authcfg = QgsAuthConfigSelect(self)
        self.authcfg.setConfigId(settings.authcfg)
        self.authcfg.setToolTip("The QGIS authentication configuration that holds the server token (a Basic "
                                "configuration whose password is the token)")
        form.addRow("Authentication", self.authcfg)
        self.token = QLineEdit("", self)
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("kept in QGIS's authentication database" if settings.token
                                      else "the token the server was started with")
        self.token.setToolTip("A new token is stored in QGIS's authentication database (the configuration "
                              "above, or a new one), never in QGIS's settings file")
        form.addRow("Server token", self.token)
        self.endpoint = EndpointRows(self, form, settings)
        self.layer_path = self._path_widget(settings.layer_path, QgsFileWidget.SaveFile, default_layer_path(),
                                            "GeoPackage (*.gpkg)")
        form.addRow("Descriptions GeoPackage", self.layer_path)
        self.prompt = QLineEdit(settings.prompt, self)
        self.prompt.setPlaceholderText("the model's description prompt")
        form.addRow("Prompt", self.prompt)
        self.max_new_tokens = QSpinBox(self)
        self.max_new_tokens.setRange(1, 1024)
        self.max_new_tokens.setValue(settings.max_new_tokens)
        form.addRow("Max new tokens", self.max_new_tokens)

        self.test_button = QPushButton("Test connection", self)
        self.test_result = QLabel("", self)
        self.test_result.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.test_button)
        layout.addWidget(self.test_result)
        layout.addWidget(buttons)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.test_button.clicked.connect(self.test_connection)
        self.mode.currentTextChanged.connect(self._mode_changed)
        self._mode_changed(self.mode.currentText())

    def _path_widget(self, value: str, mode, placeholder: str, file_filter: str = "") -> QgsFileWidget:
        widget = QgsFileWidget(self)
        widget.setStorageMode(mode)
        widget.setFilePath(value)
        widget.lineEdit().setPlaceholderText(placeholder)
        if file_filter:
            widget.setFilter(file_filter)
        return widget

    def _browse_worker(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The mgimm-geo program", "",
                                              "mgimm-geo (mgimm-geo*);;All files (*)")
        if path:
            self.set_worker_program(path)

    def set_worker_program(self, path: str) -> None:
        """The worker command for the chosen mgimm-geo program (quoted when its path has spaces)."""
        self.worker_command.setText(f"{shlex.quote(path)} worker")

    def _mode_changed(self, mode: str) -> None:
        self.worker_command.setEnabled(mode in ("worker", "endpoint"))    # endpoint mode: the worker asks it
        for widget in (self.model, self.vision, self.device, self.models_folder, self.find_models_button,
                       self.model_list):
            widget.setEnabled(mode == "worker")
        for widget in self.endpoint.widgets():
            widget.setEnabled(mode == "endpoint")
        for widget in (self.server_url, self.authcfg, self.token):
            widget.setEnabled(mode == "server")

    def edited_settings(self) -> PluginSettings:
        return PluginSettings(
            mode=self.mode.currentText(), worker_command=self.worker_command.text().strip(),
            model=self.model.filePath().strip(), vision=self.vision.filePath().strip(),
            models_folder=self.models_folder.filePath().strip(),
            device=self.device.text().strip(),
            server_url=self.server_url.text().strip(), authcfg=self.authcfg.configId(),
            token=(self.token.text() or load_token(self.authcfg.configId())) if self.mode.currentText() == "server"
            else "",
            layer_path=self.layer_path.filePath().strip(), prompt=self.prompt.text().strip(),
            max_new_tokens=self.max_new_tokens.value(),
            heartbeat_timeout_s=self.settings.heartbeat_timeout_s,
            request_timeout_s=self.settings.request_timeout_s, **self.endpoint.values())

    def test_connection(self) -> None:
        """Send `hello` with the edited settings (a throwaway client) and show model and device."""
        self.test_button.setEnabled(False)
        self.test_result.setText("Connecting (the worker loads the model on first use)...")
        client = self.edited_settings().make_client()
        self._task = RequestTask("MGIMM: test connection", client, "hello", {}, on_done=self._tested)
        QgsApplication.taskManager().addTask(self._task)

    def find_models(self) -> None:
        """Ask the worker (or server) for the model folders in the models folder, with their facts."""
        folder = self.models_folder.filePath().strip()
        if not folder:
            self.test_result.setText("Choose the models folder first.")
            return
        self.find_models_button.setEnabled(False)
        self.test_result.setText("Looking for models (the worker starts on first use)...")
        client = self.edited_settings().make_client()
        self._models_task = RequestTask("MGIMM: find models", client, "models", {"folder": folder},
                                        on_done=self._models_found)
        QgsApplication.taskManager().addTask(self._models_task)

    def _models_found(self, task) -> None:
        task.client.close()
        self.find_models_button.setEnabled(True)
        self._models_task = None
        if task.error is not None:
            self.test_result.setText(f"Failed: {task.error.message}")
            return
        models = (task.result or {}).get("models") or []
        self.model_list.clear()
        for row in models:
            self.model_list.addItem(model_label(row), row["path"])
        self.test_result.setText(f"{len(models)} model folder(s) found." if models else
                                 "No model folder found there (a model folder holds config.json).")
        if models:
            self.model_list.setCurrentIndex(0)

    def _model_chosen(self, index: int) -> None:
        path = self.model_list.itemData(index)
        if path:
            self.model.setFilePath(path)

    def _tested(self, task) -> None:
        task.client.close()
        self.test_button.setEnabled(True)
        if task.error is not None:
            self.test_result.setText(f"Failed: {task.error.message}")
        else:
            info = task.result or {}
            self.test_result.setText(f"OK: model {info.get('model')} on {info.get('device')} "
                                     f"(mgimm-geo {info.get('version')}, chip {info.get('chip_size')} px)")
        self._task = None

    def accept(self) -> None:
        settings = self.edited_settings()
        try:
            settings.save()
        except SecretStoreError as exc:
            self.test_result.setText(f"Not saved: {exc}")
            return
        self.settings = settings
        super().accept()
