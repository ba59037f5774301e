"""Talk to mgimm_core running in the user's own Python: a local worker process or an HTTP server.

Standard library only (no Qt, no QGIS): QGIS's Python never imports torch, rasterio or mgimm_core;
the model runs in another process (docs/protocol.md, notes/worker_protocol.md).

Both clients offer the same call, made from a background thread (a QgsTask or a Processing
algorithm):

    client.request(type, params, progress=callable(fraction 0..1, message), cancelled=callable() -> bool)
        -> the result dict, or raises ClientError(code, message)

ClientError codes: the protocol's (bad_request, not_found, region_outside, no_crs, bad_input, model,
cancelled, internal, unauthorized, forbidden, too_large) plus two of the client's own:
`worker_missing` (the worker command cannot be started or exits) and `unreachable` (no server
answers, or the worker stopped sending heartbeats).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from typing import Callable, Optional

PROTOCOL_VERSION = 1
Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]

# Variables QGIS (or its bundle) sets for its own Python, GDAL and PROJ: a worker that inherits them
# loads QGIS's GDAL data / PROJ database or QGIS's site-packages instead of its own.
_DROPPED_ENVIRONMENT = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONUSERBASE",
                        "VIRTUAL_ENV", "GDAL_DATA", "GDAL_DRIVER_PATH", "GDAL_PLUGINS", "GDAL_SKIP",
                        "PROJ_LIB", "PROJ_DATA", "PROJ_NETWORK", "GEOTIFF_CSV", "GISBASE",
                        "QGIS_PREFIX_PATH", "QGIS_PLUGINPATH", "QGIS_CUSTOM_CONFIG_PATH", "QT_PLUGIN_PATH",
                        "QT_QPA_PLATFORM_PLUGIN_PATH", "OSGEO4W_ROOT", "SSL_CERT_FILE")


class ClientError(Exception):
    """A request failed; `code` says which way (see the module docstring), the message what to do."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def clean_environment(environ: Optional[dict] = None) -> dict:
    """A copy of `environ` without QGIS's Python/GDAL/PROJ variables, for the worker process."""
    env = dict(os.environ if environ is None else environ)
    for name in _DROPPED_ENVIRONMENT:
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def worker_argv(command: str, model: str = "", device: str = "", vision: str = "") -> list:
    """The worker's argv from the settings: `command` is the program and its first arguments,
    e.g. "mgimm-geo worker" or "/opt/env/bin/python -m batch.cli worker"; a bare `mgimm-geo`
    (or a path ending in it) gets the `worker` sub-command appended."""
    argv = shlex.split(command.strip(), posix=(os.name != "nt"))
    if not argv:
        raise ClientError("worker_missing", "No worker command is set. Open MGIMM settings and set the "
                                            "worker command, e.g. `mgimm-geo worker` or the full path of "
                                            "mgimm-geo in the environment where mgimm-geo is installed.")
    if "worker" not in argv[1:]:
        argv.append("worker")
    if model:
        argv += ["--model", model]
    if vision:
        argv += ["--vision", vision]
    if device:
        argv += ["--device", device]
    return argv


class WorkerClient:
    """A long-lived `mgimm-geo worker` process, spoken to in JSON lines (one request at a time).

    The process starts on the first request (and again after it died); the model stays loaded in it
    between requests. `heartbeat_timeout` (seconds): a busy worker that sends nothing for this long
    is considered hung and is killed.
    """

    def __init__(self, argv: list, *, heartbeat_timeout: float = 60.0, start_timeout: float = 60.0,
                 cwd: Optional[str] = None, environ: Optional[dict] = None):
        self.argv = list(argv)
        self.heartbeat_timeout = heartbeat_timeout
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.environ = clean_environment(environ)
        self._process: Optional[subprocess.Popen] = None
        self._messages: "queue.Queue[Optional[dict]]" = queue.Queue()
        self._stderr_tail: deque = deque(maxlen=30)
        self._request_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.ready: Optional[dict] = None

    # ------------------------------------------------------------------ process
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _start(self) -> None:
        self._messages = queue.Queue()
        self._stderr_tail.clear()
        try:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.cwd, env=self.environ, text=True, encoding="utf-8", errors="replace", bufsize=1)
        except OSError as exc:
            raise ClientError("worker_missing", f"Cannot start the MGIMM worker `{shlex.join(self.argv)}` "
                                                f"({exc.strerror or exc}). Install mgimm-geo in a Python "
                                                f"environment and set its full path as the worker command "
                                                f"in MGIMM settings.") from exc
        process = self._process
        threading.Thread(target=self._read_stdout, args=(process, self._messages), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(process,), daemon=True).start()
        message = self._next_message(time.monotonic() + self.start_timeout, startup=True)
        if message.get("type") != "ready":
            self.close()
            raise ClientError("worker_missing", f"`{shlex.join(self.argv)}` is not an MGIMM worker: its first "
                                                f"message was {json.dumps(message)[:120]}. Set the worker "
                                                f"command to `mgimm-geo worker` of your mgimm-geo install.")
        if message.get("protocol") != PROTOCOL_VERSION:
            self.close()
            raise ClientError("worker_missing", f"The worker speaks protocol {message.get('protocol')}, this "
                                                f"plugin {PROTOCOL_VERSION}: install matching versions of "
                                                f"mgimm-geo and the QGIS plugin.")
        self.ready = message

    @staticmethod
    def _read_stdout(process, messages) -> None:
        for line in process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = {"type": "_noise", "line": line[:200]}
            messages.put(message if isinstance(message, dict) else {"type": "_noise", "line": line[:200]})
        messages.put(None)  # end of stream: the process exited

    def _read_stderr(self, process) -> None:
        for line in process.stderr:
            self._stderr_tail.append(line.rstrip())

    def _exited_error(self) -> ClientError:
        process = self._process
        code = None
        if process is not None:
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        tail = " | ".join(line for line in list(self._stderr_tail)[-5:] if line)
        self._process = None
        return ClientError("worker_missing", f"The MGIMM worker `{shlex.join(self.argv)}` stopped "
                                             f"(exit code {code}){': ' + tail if tail else ''}. Check the "
                                             f"worker command and model folder in MGIMM settings.")

    def _next_message(self, deadline: float, startup: bool = False, poll: Callable[[], None] = None) -> dict:
        """The next protocol message; raises when the worker exits or stays silent past `deadline`.
        `poll` runs every 0.1 s while waiting (it sends a cancel when the caller asks for one)."""
        while True:
            if poll is not None:
                poll()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                what = "did not start" if startup else "stopped answering (no heartbeat)"
                seconds = self.start_timeout if startup else self.heartbeat_timeout
                raise ClientError("unreachable", f"The MGIMM worker {what} within {seconds:g} s; it was "
                                                 f"stopped. Try again, or check the worker command in "
                                                 f"MGIMM settings.")
            try:
                message = self._messages.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if message is None:
                raise self._exited_error()
            if message.get("type") == "_noise":
                self._stderr_tail.append(message["line"])
                continue
            return message

    def _send(self, message: dict) -> None:
        with self._write_lock:
            try:
                self._process.stdin.write(json.dumps(message) + "\n")
                self._process.stdin.flush()
            except (OSError, ValueError, AttributeError):
                raise self._exited_error() from None

    # ------------------------------------------------------------------ requests
    def request(self, type: str, params: Optional[dict] = None, progress: Progress = None,
                cancelled: Cancelled = None) -> dict:
        """Send one request and wait for its answer, reporting progress and honouring cancel."""
        with self._request_lock:
            if cancelled is not None and cancelled():
                raise ClientError("cancelled", "Cancelled before the request was sent.")
            if not self.running:
                self._start()
            request_id = f"r{next(self._ids)}"
            message = {"id": request_id, "type": type}
            if params is not None:
                message["params"] = params
            self._send(message)
            cancel_sent = False

            def send_cancel_when_asked():
                nonlocal cancel_sent
                if not cancel_sent and cancelled is not None and cancelled():
                    cancel_sent = True
                    self._send({"id": request_id, "type": "cancel"})

            while True:
                message = self._next_message(time.monotonic() + self.heartbeat_timeout,
                                             poll=send_cancel_when_asked)
                if message.get("id") != request_id:
                    continue  # heartbeats (they only reset the silence deadline) and stale answers
                kind = message.get("type")
                if kind == "progress" and progress is not None:
                    progress(float(message.get("value") or 0.0), str(message.get("message") or ""))
                elif kind == "ok":
                    return message.get("result") or {}
                elif kind == "error":
                    raise ClientError(str(message.get("code") or "internal"), str(message.get("message")))

    def hello(self) -> dict:
        return self.request("hello")

    def close(self) -> None:
        """Ask the worker to shut down, and kill it if it does not within 3 s."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.stdin.write(json.dumps({"type": "shutdown"}) + "\n")
                process.stdin.flush()
                process.stdin.close()
                process.wait(timeout=3)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


class HttpClient:
    """`mgimm-geo serve` over HTTP: POST /v1/{type}?request_id=ID for every request (hello too, so it
    reports the loaded model), POST /v1/cancel?request_id=ID to cancel.

    The HTTP call runs in a helper thread so cancel returns at once. `timeout` is in seconds.
    """

    def __init__(self, url: str, token: str = "", *, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Optional[dict]) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8") or "{}")
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError("unreachable", f"No MGIMM server answers at {self.url} ({reason}). Start it "
                                             f"with `mgimm-geo serve` on that machine, or fix the server "
                                             f"URL in MGIMM settings.") from None
        except ValueError:
            raise ClientError("unreachable", f"{self.url} answered, but not with JSON: is this an MGIMM "
                                             f"server (`mgimm-geo serve`)? Fix the server URL in MGIMM "
                                             f"settings.") from None

    def _http_error(self, exc: urllib.error.HTTPError) -> ClientError:
        try:
            payload = json.loads(exc.read().decode("utf-8"))
        except (ValueError, OSError):
            payload = {}
        if isinstance(payload.get("detail"), dict):  # FastAPI's HTTPException wraps the body in detail
            payload = payload["detail"]
        code = payload.get("code") if isinstance(payload, dict) else None
        message = payload.get("message") if isinstance(payload, dict) else None
        if exc.code == 401:   # the server's own text speaks of HTTP headers: QGIS users get their settings
            return ClientError("unauthorized", f"The MGIMM server at {self.url} refused the token. Enter the "
                                               f"token the server was started with as the Server token (or "
                                               f"choose its Authentication configuration) in MGIMM settings.")
        if exc.code == 404 and not code:
            return ClientError("unreachable", f"{self.url} answers, but is not an MGIMM server. Fix the server "
                                              f"URL in MGIMM settings.")
        return ClientError(code or "internal", message or f"The MGIMM server at {self.url} failed (status "
                                                          f"{exc.code}); see the server's log.")

    def request(self, type: str, params: Optional[dict] = None, progress: Progress = None,
                cancelled: Cancelled = None) -> dict:
        request_id = f"qgis-{uuid.uuid4().hex[:12]}"
        outcome: dict = {}

        def call():
            try:
                outcome["result"] = self._call("POST", f"/v1/{type}?request_id={request_id}", params or {})
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        if progress is not None:
            progress(0.0, f"sent to {self.url}")
        while thread.is_alive():
            thread.join(0.1)
            if cancelled is not None and cancelled():
                try:  # best effort: the server stops between batches
                    self._call("POST", f"/v1/cancel?request_id={request_id}", {})
                except ClientError:
                    pass
                raise ClientError("cancelled", "Cancelled.")
        if "error" in outcome:
            raise outcome["error"]
        if progress is not None:
            progress(1.0, "done")
        return outcome["result"]

    def health(self) -> dict:
        """GET /health: liveness and versions, without loading the model."""
        return self._call("GET", "/health", None)

    def hello(self) -> dict:
        return self.request("hello")

    def close(self) -> None:
        pass
