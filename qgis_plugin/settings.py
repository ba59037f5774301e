"""The plugin's settings (QgsSettings under "mgimm_geo/") and the client they describe.

The worker command runs in the user's own Python environment, where mgimm-geo (and torch) are
installed; QGIS's Python only starts it. `shared_client()` keeps one client per session so the model
stays loaded between requests; it is rebuilt when the settings change.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, fields

from qgis.core import QgsSettings

from .client import HttpClient, WorkerClient, worker_argv

PREFIX = "mgimm_geo/"
MODES = ("worker", "server")


def default_layer_path() -> str:
    """Where the "MGIMM descriptions" GeoPackage goes unless set: the user's home folder."""
    return os.path.join(os.path.expanduser("~"), "mgimm_descriptions.gpkg")


@dataclass
class PluginSettings:
    mode: str = "worker"                 # "worker" (local process) or "server" (HTTP)
    worker_command: str = "mgimm-geo worker"
    model: str = ""                      # model folder for the worker; "" = the embedded demo model
    vision: str = ""                     # vision-tower folder of an original-format LLaVA/GeoChat model
    device: str = ""                     # "", "auto", "cpu", "cuda", "cuda:N"
    server_url: str = "http://127.0.0.1:8765"
    token: str = ""
    layer_path: str = ""                 # GeoPackage of the "MGIMM descriptions" layer; "" = default
    prompt: str = ""                     # "" = the model's description prompt
    max_new_tokens: int = 200
    heartbeat_timeout_s: float = 60.0
    request_timeout_s: float = 600.0

    @classmethod
    def load(cls) -> "PluginSettings":
        store = QgsSettings()
        values = {}
        for item in fields(cls):
            default = item.default
            raw = store.value(PREFIX + item.name, default)
            try:
                values[item.name] = type(default)(raw) if raw is not None else default
            except (TypeError, ValueError):
                values[item.name] = default
        settings = cls(**values)
        if settings.mode not in MODES:
            settings.mode = "worker"
        return settings

    def save(self) -> None:
        store = QgsSettings()
        for name, value in asdict(self).items():
            store.setValue(PREFIX + name, value)

    def effective_layer_path(self) -> str:
        return self.layer_path or default_layer_path()

    def client_key(self) -> tuple:
        """What the client depends on: a change of these restarts the worker / reconnects."""
        if self.mode == "server":
            return (self.mode, self.server_url, self.token, self.request_timeout_s)
        return (self.mode, self.worker_command, self.model, self.vision, self.device, self.heartbeat_timeout_s)

    def make_client(self):
        """A new client for these settings (the worker process starts on its first request)."""
        if self.mode == "server":
            return HttpClient(self.server_url, self.token, timeout=self.request_timeout_s)
        return WorkerClient(worker_argv(self.worker_command, self.model, self.device, self.vision),
                            heartbeat_timeout=self.heartbeat_timeout_s)


_lock = threading.Lock()
_client = None
_client_key = None


def shared_client(settings: PluginSettings = None):
    """The session's client for `settings` (default: the saved ones), reused while they hold."""
    global _client, _client_key
    settings = settings or PluginSettings.load()
    key = settings.client_key()
    with _lock:
        if _client is None or _client_key != key:
            if _client is not None:
                _client.close()
            _client, _client_key = settings.make_client(), key
        return _client


def reset_shared_client() -> None:
    """Stop the session's worker (settings changed, or the plugin unloads)."""
    global _client, _client_key
    with _lock:
        if _client is not None:
            _client.close()
        _client, _client_key = None, None
