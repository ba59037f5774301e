"""Endpoint mode: the model is one an OpenAI-compatible endpoint serves (vLLM, Ollama, llama.cpp,
another mgimm-geo serve), asked by the local worker (`mgimm-geo worker --model URL`).

The plugin cuts each region's chip of a local raster with QGIS's GDAL and sends the chips to that
worker as per-region `raster_b64`, exactly as server mode sends them to a server: one code path
(request_data.py `chip_jobs`, server_chips.py `describe_chips`, algorithms.py `_chip_regions`)
parametrised by the client only (PluginSettings.cuts_chips), so the worker never reads the raster
file, and the entries, the error rows (a region off the raster, a region the worker left out) and
the results layer are server mode's. A web layer is rendered and sent as one `raster_b64`, as in
server mode. The worker, not QGIS's Python, talks to the endpoint, so the region conventions,
questions, retries and error codes are mgimm_core's own (docs/protocol.md, "OpenAI-compatible
endpoints"). The endpoint's key lives in QGIS's authentication database (like the server token)
and reaches the worker in its environment (MGIMM_API_KEY), never on its command line, which other
users can read, and never in a request.
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
