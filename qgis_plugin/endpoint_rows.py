"""The settings dialog's endpoint rows (widgets); the mode's Qt-free logic is endpoint_mode.py."""

from __future__ import annotations

from qgis.gui import QgsAuthConfigSelect
from qgis.PyQt.QtWidgets import QLineEdit

from .settings import load_token


class EndpointRows:
    """The settings dialog's endpoint rows: URL, served model, family, the key's auth config and a
    new key (stored in the authentication database on save)."""

    def __init__(self, dialog, form, settings):
        self.url = QLineEdit(settings.endpoint_url, dialog)
        self.url.setPlaceholderText("http://gpu-box:8000/v1")
        self.url.setToolTip("Base URL of an OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp, mgimm-geo serve), "
                            "ending in /v1; the worker command above asks it")
        form.addRow("Endpoint URL", self.url)
        self.served_model = QLineEdit(settings.served_model, dialog)
        self.served_model.setPlaceholderText("the only model it serves")
        form.addRow("Served model", self.served_model)
        self.family = QLineEdit(settings.family, dialog)
        self.family.setPlaceholderText("guessed from the served model (generic: region outlined)")
        form.addRow("Model family", self.family)
        self.authcfg = QgsAuthConfigSelect(dialog)
        self.authcfg.setConfigId(settings.endpoint_authcfg)
        self.authcfg.setToolTip("The QGIS authentication configuration that holds the endpoint's API key")
        form.addRow("Endpoint authentication", self.authcfg)
        self.key = QLineEdit("", dialog)
        self.key.setEchoMode(QLineEdit.Password)
        self.key.setPlaceholderText("kept in QGIS's authentication database" if settings.endpoint_key
                                    else "the endpoint's API key, if it needs one")
        form.addRow("Endpoint API key", self.key)

    def widgets(self) -> tuple:
        return (self.url, self.served_model, self.family, self.authcfg, self.key)

    def values(self) -> dict:
        return {"endpoint_url": self.url.text().strip(), "served_model": self.served_model.text().strip(),
                "family": self.family.text().strip(), "endpoint_authcfg": self.authcfg.configId(),
                "endpoint_key": self.key.text() or load_token(self.authcfg.configId())}
