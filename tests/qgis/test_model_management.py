"""Offline model management in QGIS 3.22 with a real worker: the settings' models folder lists the
model folders the worker finds there (family, size, licence) to pick from, and the Diagnostics
action shows device, model, versions and the last error, copyable."""

from __future__ import annotations

from pathlib import Path

from plugin_fixtures import WORKER_TIMEOUT, wait_until
from qgis.PyQt.QtGui import QGuiApplication


def test_models_folder_lists_model_folders_to_pick_from(plugin_module, worker_settings, tiny_model_dir):
    from mgimm_geo.settings_dialog import SettingsDialog

    dialog = SettingsDialog(worker_settings)
    dialog.model.setFilePath("")
    dialog.models_folder.setFilePath(str(Path(tiny_model_dir).parent))
    dialog.find_models()
    wait_until(lambda: dialog.find_models_button.isEnabled(), WORKER_TIMEOUT, "the models list")
    assert dialog.model_list.count() == 1, dialog.test_result.text()
    label = dialog.model_list.itemText(0)
    assert label.startswith("tiny: MGIMM") and "MiB" in label and "licence" in label
    dialog.model_list.activated.emit(0)                 # the user picks it
    assert dialog.model.filePath() == tiny_model_dir
    assert dialog.edited_settings().models_folder == str(Path(tiny_model_dir).parent)


def test_diagnostics_show_device_model_versions_and_last_error(plugin, plugin_module, worker_settings):
    from mgimm_geo.client import ClientError

    plugin.last_error = ClientError("region_outside", "The region lies outside the raster.")
    plugin.show_diagnostics()
    wait_until(lambda: plugin.diagnostics_dialog is not None, WORKER_TIMEOUT, "the diagnostics")
    text = plugin.diagnostics_dialog.text.toPlainText()
    assert "Device asked for: cpu" in text and "CUDA GPUs:" in text and "CPU cores:" in text
    assert "Model: tiny" in text and "Family: MGIMM" in text
    assert "Versions: mgimm-geo" in text and "torch" in text
    assert "Last error: [region_outside] The region lies outside the raster." in text
    plugin.diagnostics_dialog.copy()
    assert QGuiApplication.clipboard().text() == text
