"""JSON over HTTP to an OpenAI-compatible endpoint: kept-alive connections, timeouts, retries.

Standard library only (http.client): a small pool of persistent connections, one per concurrent
request, so a run opens `--concurrency` connections once instead of one per region. 429 and 5xx
answers and connection failures are retried with exponential backoff (honouring Retry-After);
what is left becomes a typed error with a stable code (mgimm_core.errors: endpoint_unreachable,
endpoint_timeout, endpoint_refused). The API key travels only in the Authorization header: it is
never part of a message, a log line or a repr.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from mgimm_core.errors import (EndpointRefusedError, EndpointTimeoutError, EndpointUnreachableError,
                               OptionsError)

log = logging.getLogger(__name__)

#: Environment variables holding the endpoint's API key, in the order they are read.
API_KEY_VARIABLES = ("MGIMM_API_KEY", "OPENAI_API_KEY")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_S = 0.5          # first wait; doubles each retry
MAX_BACKOFF_S = 8.0


def api_key_from_env() -> str | None:
    """MGIMM_API_KEY, else OPENAI_API_KEY, else None (no Authorization header)."""
    for name in API_KEY_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


def is_endpoint_url(model: object) -> TypeGuard[str]:
    """True when `--model` names an endpoint (an http(s) URL) rather than a folder."""
    return isinstance(model, str) and model.lower().startswith(("http://", "https://"))


def check_base_url(url: str) -> str:
    """The base URL without a trailing slash, checked: http(s), a host, a path ending in /v1, no
    user:password (the key goes in MGIMM_API_KEY), no query."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OptionsError(f"--model {url!r}: an endpoint is an http(s) URL such as http://127.0.0.1:8000/v1.",
                           "model")
    if parts.username or parts.password:
        raise OptionsError(f"--model: the endpoint URL holds a user name or password; give the URL without it and "
                           f"the key in {API_KEY_VARIABLES[0]} (or {API_KEY_VARIABLES[1]}).", "model")
    if parts.query or parts.fragment:
        raise OptionsError(f"--model {url!r}: give the endpoint's base URL without a query (…/v1).", "model")
    base = url.rstrip("/")
    if not parts.path.rstrip("/").endswith("/v1"):
        raise OptionsError(f"--model {url!r}: give the endpoint's base URL ending in /v1 (e.g. "
                           f"{parts.scheme}://{parts.netloc}/v1), as OpenAI clients take it.", "model")
    return base


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]
    retry_after: str | None = None


def _loopback(host: str) -> bool:
    """True for this machine's own addresses (a key sent there in clear stays on the machine)."""
    return host in ("localhost", "::1") or host.startswith("127.")


class EndpointClient:
    """GET/POST JSON to one base URL over a pool of kept-alive connections (thread-safe)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0, retries: int = 4,
                 pool_size: int = 4) -> None:
        self.base_url = check_base_url(base_url)
        parts = urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "mgimm-geo"}
        if api_key:
            if not self._https and not _loopback(self._host):
                raise OptionsError(f"{self.base_url}: the API key (MGIMM_API_KEY or OPENAI_API_KEY) would travel in "
                                   f"clear over http to another machine; give the endpoint's https URL with "
                                   f"--model, or unset the key variable for a server that needs none.", "model")
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.retries = retries
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(maxsize=max(1, pool_size))
        self.connections_opened = 0          # for the bench: connection reuse shows here

    def __repr__(self) -> str:               # never the key
        return f"EndpointClient({self.base_url!r})"

    # ------------------------------------------------------------------ connections
    def _connect(self) -> http.client.HTTPConnection:
        self.connections_opened += 1
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _take(self) -> http.client.HTTPConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._connect()

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        try:
            self._idle.put_nowait(connection)
        except queue.Full:
            connection.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    # ------------------------------------------------------------------ requests
    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, json.dumps(payload).encode())

    def request(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        """The JSON answer of `method path`; retries 429/5xx and connection failures, then raises the
        typed error (EndpointUnreachableError, EndpointTimeoutError, EndpointRefusedError)."""
        url = f"{self.base_url}{path}"
        wait = BACKOFF_S
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._once(method, path, body)
            except socket.timeout:
                raise EndpointTimeoutError(f"{url}: no answer within {self.timeout:g} s; raise --timeout or lower "
                                           f"--concurrency if the server is busy.") from None
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                if last:
                    raise EndpointUnreachableError(f"{url}: cannot connect ({type(exc).__name__}: {exc}) after "
                                                   f"{self.retries + 1} tries; is the server running at "
                                                   f"{self.base_url}?") from None
                log.debug("%s %s: %s; retrying in %.1f s", method, url, exc, wait)
            else:
                if response.status < 400:
                    return response.body
                if response.status not in RETRY_STATUSES:
                    raise self._refused(url, response)
                if last:
                    raise EndpointUnreachableError(f"{url}: answered HTTP {response.status} "
                                                   f"({_message(response.body)}) after {self.retries + 1} tries; "
                                                   f"the server is overloaded or failing.")
                wait = max(wait, _retry_after(response))
                log.debug("%s %s: HTTP %d; retrying in %.1f s", method, url, response.status, wait)
            time.sleep(wait)
            wait = min(wait * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, body: bytes | None) -> Response:
        connection = self._take()
        try:
            connection.request(method, self._prefix + path, body=body, headers=self._headers)
            raw = connection.getresponse()
            data = raw.read()
            headers = {k.lower(): v for k, v in raw.getheaders()}
        except BaseException:
            connection.close()            # a half-used connection is never reused
            raise
        if raw.will_close:
            connection.close()
        else:
            self._give_back(connection)
        try:
            parsed = json.loads(data) if data.strip() else {}
        except (ValueError, UnicodeDecodeError):
            parsed = {"error": {"message": data[:200].decode("utf-8", "replace")}}
        if not isinstance(parsed, dict):
            parsed = {"data": parsed}
        return Response(raw.status, parsed, headers.get("retry-after"))

    def _refused(self, url: str, response: Response) -> EndpointRefusedError:
        hint = ""
        if response.status in (401, 403):
            hint = (f"; set the endpoint's key in {API_KEY_VARIABLES[0]} (or {API_KEY_VARIABLES[1]})")
        elif response.status == 404:
            hint = "; check --model (the base URL ends in /v1) and --served-model"
        return EndpointRefusedError(f"{url}: HTTP {response.status} ({_message(response.body)}){hint}.",
                                    response.status)


def _message(body: dict[str, Any]) -> str:
    """The server's own error text (OpenAI's {"error": {"message"}}, mgimm-geo's {"message"})."""
    error = body.get("error")
    text = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    text = text or body.get("message") or body.get("detail") or "no message"
    return str(text)[:300]


def _retry_after(response: Response) -> float:
    value = response.retry_after
    try:
        return min(float(value), MAX_BACKOFF_S * 4) if value is not None else 0.0
    except ValueError:
        return 0.0
