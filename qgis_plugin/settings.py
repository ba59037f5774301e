"""The plugin's settings (QgsSettings under "mgimm_geo/") and the client they describe.

The worker command runs in the user's own Python environment, where mgimm-geo (and torch) are
installed; QGIS's Python only starts it. The server token is a secret: it lives in QGIS's
authentication database (QgsAuthManager, encrypted with the user's master password) and the
settings keep only its config id (`authcfg`); a plain token left in QGIS3.ini by an older version
is moved there on load. The database is touched in server mode only: a local worker needs no
token, and reading it would make QGIS ask for the master password. `shared_client()` keeps one
client per session so the model stays loaded between requests; it is rebuilt when the settings
change.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, fields

from qgis.core import Qgis, QgsApplication, QgsAuthMethodConfig, QgsMessageLog, QgsSettings

from . import endpoint_mode
from .client import HttpClient, WorkerClient, worker_argv

PREFIX = "mgimm_geo/"
MODES = ("worker", "server", "endpoint")
AUTH_METHOD = "Basic"        # the token is the password of a Basic config (an EsriToken config's token works too)
NOT_SAVED = ("token", "endpoint_key")   # never written to QgsSettings (QGIS3.ini): they go to the auth database


class SecretStoreError(Exception):
    """The token cannot be stored in QGIS's authentication database (locked, disabled)."""

    code = "bad_input"


def _auth_manager():
    return QgsApplication.authManager()


def store_token(token: str, url: str, authcfg: str = "") -> str:
    """Put `token` into QGIS's authentication database (the config `authcfg`, or a new one named
    after the server) and return the config id. QGIS asks for the master password if needed."""
    manager = _auth_manager()
    if manager.isDisabled() or not manager.setMasterPassword(True):
        raise SecretStoreError("QGIS's authentication database is locked or disabled, so the server token "
                               "cannot be stored safely; set or enter the master password (Settings > Options "
                               "> Authentication) and save the MGIMM settings again.")
    config = QgsAuthMethodConfig()
    existing = bool(authcfg) and manager.loadAuthenticationConfig(authcfg, config, True)
    if not existing:
        config = QgsAuthMethodConfig(AUTH_METHOD)
        config.setName(f"MGIMM server {url}")
    config.setUri(url)
    if config.method() == "EsriToken":
        config.setConfig("token", token)
    else:
        config.setConfig("username", config.config("username") or "mgimm")
        config.setConfig("password", token)
    ok = manager.updateAuthenticationConfig(config) if existing else manager.storeAuthenticationConfig(config)
    if not ok:
        raise SecretStoreError("QGIS's authentication database refused the server token; check it in "
                               "Settings > Options > Authentication.")
    return config.id()


def load_token(authcfg: str) -> str:
    """The token of the auth config `authcfg` ("" when there is none or the database is locked)."""
    if not authcfg:
        return ""
    config = QgsAuthMethodConfig()
    if not _auth_manager().loadAuthenticationConfig(authcfg, config, True):
        return ""
    return config.config("token") if config.method() == "EsriToken" else config.config("password")


def default_layer_path() -> str:
    """Where the "MGIMM descriptions" GeoPackage goes unless set: the user's home folder."""
    return os.path.join(os.path.expanduser("~"), "mgimm_descriptions.gpkg")


@dataclass
class PluginSettings:
    mode: str = "worker"                 # "worker" (local process), "server" (HTTP) or "endpoint"
    worker_command: str = "mgimm-geo worker"
    model: str = ""                      # model folder for the worker; "" = the embedded demo model
    vision: str = ""                     # vision-tower folder of an original-format LLaVA/GeoChat model
    models_folder: str = ""              # a folder of model folders (offline use): the dialog lists them
    device: str = ""                     # "", "auto", "cpu", "cuda", "cuda:N"
    server_url: str = "http://127.0.0.1:8765"
    token: str = ""                      # in memory only: from / to the auth config `authcfg`
    authcfg: str = ""                    # QGIS authentication config id holding the server token
    layer_path: str = ""                 # GeoPackage of the "MGIMM descriptions" layer; "" = default
    prompt: str = ""                     # "" = the model's description prompt
    max_new_tokens: int = 200
    heartbeat_timeout_s: float = 60.0
    request_timeout_s: float = 600.0
    # endpoint mode (endpoint_mode.py): the worker asks an OpenAI-compatible endpoint's served model
    endpoint_url: str = ""
    served_model: str = ""               # "" = the only model the endpoint lists
    family: str = ""                     # "" = guessed from the served model
    endpoint_key: str = ""               # in memory only: from / to the auth config `endpoint_authcfg`
    endpoint_authcfg: str = ""

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
        if settings.mode == "endpoint":   # the endpoint's key only
            settings.endpoint_key = load_token(settings.endpoint_authcfg)
            return settings
        if settings.mode != "server":   # no secret needed: the auth database (and its master password) untouched
            return settings
        if settings.token:            # a plain token in QGIS3.ini (older versions): move it to the auth database
            try:
                settings.authcfg = store_token(settings.token, settings.server_url, settings.authcfg)
            except SecretStoreError as exc:
                QgsMessageLog.logMessage(f"The MGIMM server token is still stored in plain text: {exc}", "MGIMM",
                                         Qgis.Warning)
                return settings
            store.remove(PREFIX + "token")
            store.setValue(PREFIX + "authcfg", settings.authcfg)
        else:
            settings.token = load_token(settings.authcfg)
        return settings

    def save(self) -> None:
        """Write the settings; a token goes to QGIS's authentication database (SecretStoreError when
        it cannot), never to QGIS3.ini."""
        store = QgsSettings()
        if self.token and self.mode == "server":   # the config saved before is updated, not a new one per save
            previous = self.authcfg or str(store.value(PREFIX + "authcfg", "") or "")
            self.authcfg = store_token(self.token, self.server_url, previous)
        if self.endpoint_key and self.mode == "endpoint":
            previous = self.endpoint_authcfg or str(store.value(PREFIX + "endpoint_authcfg", "") or "")
            self.endpoint_authcfg = store_token(self.endpoint_key, self.endpoint_url, previous)
        for name, value in asdict(self).items():
            if name not in NOT_SAVED:
                store.setValue(PREFIX + name, value)
        if self.mode == "server":      # a worker-mode save leaves a plain token of an older version for later
            store.remove(PREFIX + "token")

    @property
    def cuts_chips(self) -> bool:
        """Whether the plugin cuts each region's chip itself and sends it (server_chips.py): server
        mode (the server cannot see our files) and endpoint mode (the local worker describes the
        chips the plugin cut, as a server does); only a worker on a local model reads the raster file."""
        return self.mode in ("server", "endpoint")

    def effective_layer_path(self) -> str:
        return self.layer_path or default_layer_path()

    def client_key(self) -> tuple:
        """What the client depends on: a change of these restarts the worker / reconnects."""
        if self.mode == "server":
            return (self.mode, self.server_url, self.token, self.request_timeout_s)
        if self.mode == "endpoint":
            return endpoint_mode.client_key(self)
        return (self.mode, self.worker_command, self.model, self.vision, self.device, self.heartbeat_timeout_s)

    def make_client(self):
        """A new client for these settings (the worker process starts on its first request)."""
        if self.mode == "server":
            return HttpClient(self.server_url, self.token, timeout=self.request_timeout_s)
        if self.mode == "endpoint":
            return endpoint_mode.endpoint_client(self)
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
