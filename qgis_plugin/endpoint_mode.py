"""Endpoint mode: the model is one an OpenAI-compatible endpoint serves (vLLM, Ollama, llama.cpp,
another mgimm-geo serve), asked by the local worker (`mgimm-geo worker --model URL`).

The worker, not QGIS's Python, talks to the endpoint, so the region conventions, questions, retries
and error codes are mgimm_core's own (docs/protocol.md, "OpenAI-compatible endpoints") and the
results layer is the one worker mode writes. The endpoint's key lives in QGIS's authentication
database (like the server token) and reaches the worker in its environment (MGIMM_API_KEY), never
on its command line, which other users can read.
"""

from __future__ import annotations

import os

from .client import WorkerClient, worker_argv

KEY_VARIABLE = "MGIMM_API_KEY"


def endpoint_argv(settings) -> list:
    """The worker's command line for the endpoint settings (no key on it)."""
    argv = worker_argv(settings.worker_command, settings.endpoint_url)
    if settings.served_model:
        argv += ["--served-model", settings.served_model]
    if settings.family:
        argv += ["--family", settings.family]
    return argv


def endpoint_environment(settings, base: dict | None = None) -> dict:
    """The worker's environment: the key (from the auth database) as MGIMM_API_KEY, or none."""
    env = dict(os.environ if base is None else base)
    env.pop(KEY_VARIABLE, None)
    if settings.endpoint_key:
        env[KEY_VARIABLE] = settings.endpoint_key
    return env


def endpoint_client(settings) -> WorkerClient:
    return WorkerClient(endpoint_argv(settings), heartbeat_timeout=settings.heartbeat_timeout_s,
                        environ=endpoint_environment(settings))


def client_key(settings) -> tuple:
    return ("endpoint", settings.worker_command, settings.endpoint_url, settings.served_model, settings.family,
            settings.endpoint_key, settings.heartbeat_timeout_s)


class EndpointRows:
    """The settings dialog's endpoint rows: URL, served model, family, the key's auth config and a
    new key (stored in the authentication database on save)."""

    def __init__(self, dialog, form, settings):
        from qgis.gui import QgsAuthConfigSelect
        from qgis.PyQt.QtWidgets import QLineEdit

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
        from .settings import load_token

        return {"endpoint_url": self.url.text().strip(), "served_model": self.served_model.text().strip(),
                "family": self.family.text().strip(), "endpoint_authcfg": self.authcfg.configId(),
                "endpoint_key": self.key.text() or load_token(self.authcfg.configId())}
