"""`mgimm-geo serve`: the worker's requests over HTTP, for a GPU machine on the network.

Same handlers as the worker (`mgimm_core.service`), behind three guards: a bearer token (required
to bind anything but a loopback address, checked in constant time on every request), a request body
limit (413), and --root folders outside which no path is opened (403). Model requests run one at a
time in a thread, so /health answers while a description is being generated.
"""


import asyncio
import hmac
import ipaddress
import json
import os
import socket
import threading

import click

from batch.options import (check_region_as, endpoint_options, model_option, region_as_option, resolve_model_now,
                           threads_option)

from mgimm_core import __version__


TOKEN_ENV = "MGIMM_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); hostnames other than
    'localhost' count as reachable from the network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _send_json(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>` (401 otherwise)."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                await _send_json(send, 401, {"code": "unauthorized", "message": (
                    "missing or wrong token; send the server's token as 'Authorization: Bearer TOKEN' "
                    "(set it in the plugin's settings).")}, [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` (413), declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, send):
        mb = self.max_bytes / 2**20
        return _send_json(send, 413, {"code": "too_large", "message": (
            f"request body over the server's limit of {mb:g} MB; send fewer regions or a smaller "
            f"raster_b64 chip, or restart the server with a larger --max-request-mb.")})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size = [], 0
        while True:                                   # read (bounded) before the app sees anything
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._too_large(send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()                     # afterwards: disconnect notices

        await self.app(scope, replay, send)


def create_app(service, *, token: str | None = None, max_request_bytes: int = 64 * 2**20):
    """The FastAPI app: /health, POST /v1/{type}, POST /v1/cancel, /openapi.json, and the
    OpenAI-compatible GET /v1/models and POST /v1/chat/completions (mgimm_core/service/openai_chat.py)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from mgimm_core.service import ERROR_CODES, HANDLERS, PROTOCOL_VERSION, ServiceError, error_payload
    from mgimm_core.service.openai_chat import chat_completion, list_models

    app = FastAPI(title="mgimm-geo", version=__version__, docs_url=None, redoc_url=None,
                  description="Region descriptions of remote-sensing rasters with MGIMM. The request "
                              "and result bodies are those of the worker protocol (docs/protocol.md).")
    model_lock = asyncio.Lock()
    cancelled_ids: set[str] = set()      # only ids waiting or running: a cancel of any other id is ignored
    active: dict[str, int] = {}          # ids waiting or running (how many requests each)
    state = {"busy": None}
    guard = threading.Lock()

    def error_response(payload: dict) -> JSONResponse:
        return JSONResponse(payload, status_code=ERROR_CODES.get(payload["code"], 500))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error_response({"code": "bad_request", "message": f"malformed request ({where}); the body "
                               f"must be a JSON object of the request's params (docs/protocol.md)."})

    @app.get("/health", summary="Liveness, versions, and the model once it is loaded")
    async def health():
        info = {"status": "ok", "protocol": PROTOCOL_VERSION, "version": __version__, "busy": state["busy"],
                "model": None, "device": None}
        info.update(service.loaded_model_info() or {})
        return info

    @app.post("/v1/cancel", summary="Cancel a request by the request_id it was sent with")
    async def cancel(request_id: str):
        with guard:
            found = request_id in active
            if found:
                cancelled_ids.add(request_id)
        return {"cancelled": request_id, "found": found}

    def openai_error(exc: BaseException) -> JSONResponse:
        """An error in the OpenAI shape ({"error": {message, type, code}}), the protocol's status."""
        payload = error_payload(exc)
        return JSONResponse({"error": {"message": payload["message"], "type": payload["code"],
                                       "code": payload["code"], "param": None}},
                            status_code=ERROR_CODES.get(payload["code"], 500))

    @app.get("/v1/models", summary="OpenAI-compatible: the served model (with its chip settings)")
    async def models():
        try:
            return await run_in_threadpool(list_models, service)
        except Exception as exc:
            return openai_error(exc)

    @app.post("/v1/chat/completions", summary="OpenAI-compatible: describe one image (and region) with the model",
              description="One user message with the chip as an image_url data URI; the region in the 'mgimm' "
                          "extension field (docs/protocol.md, OpenAI-compatible endpoints).")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            body = None
        if not isinstance(body, dict):
            return openai_error(ServiceError("bad_request", "the body must be a chat-completions JSON object."))
        async with model_lock:
            state["busy"] = "chat"
            try:
                return await run_in_threadpool(chat_completion, service, body)
            except Exception as exc:
                return openai_error(exc)
            finally:
                state["busy"] = None

    @app.post("/v1/{request_type}", summary="Run one request (hello, describe, describe_file)",
              description="The body is the request's params object (docs/protocol.md); the answer is its "
                          "result, or {code, message} with the status of ERROR_CODES.",
              responses={status: {"description": "error: {code, message}"} for status in set(ERROR_CODES.values())},
              openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
                  "schema": {"type": "object", "additionalProperties": True}}}}})
    async def run_request(request_type: str, request: Request, request_id: str | None = None):
        if request_type not in HANDLERS:
            return error_response({"code": "bad_request", "message": f"unknown request type {request_type!r}; "
                                   f"use one of {', '.join(sorted(HANDLERS))}."})
        body = await request.body()
        try:
            params = json.loads(body) if body.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            return error_response({"code": "bad_request", "message": f"the body is not JSON ({reason}); send the "
                                   f"request's params as a JSON object."})
        if not isinstance(params, dict):
            return error_response({"code": "bad_request", "message": "the body must be a JSON object of the "
                                   "request's params (docs/protocol.md)."})
        rid = request_id or f"http-{id(request)}"

        def is_cancelled() -> bool:
            return rid in cancelled_ids

        with guard:
            active[rid] = active.get(rid, 0) + 1
        try:
            async with model_lock:
                if is_cancelled():
                    return error_response({"code": "cancelled", "message": "cancelled before it started."})
                state["busy"] = rid
                job = asyncio.ensure_future(run_in_threadpool(service.handle, request_type, params, None,
                                                              is_cancelled))
                try:
                    while not job.done():
                        await asyncio.wait({job}, timeout=0.5)
                        if not job.done() and await request.is_disconnected():
                            with guard:
                                cancelled_ids.add(rid)          # the client gave up: stop between batches
                    try:
                        return job.result()
                    except Exception as exc:
                        return error_response(error_payload(exc))
                finally:
                    state["busy"] = None
        finally:
            with guard:
                active[rid] -= 1
                if not active[rid]:
                    del active[rid]
                    cancelled_ids.discard(rid)

    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    if token:
        app.add_middleware(TokenGuard, token=token)        # added last = outermost: auth before reading bodies
    return app


def _check_port_free(host: str, port: int) -> None:
    """A usage error now, before saying it serves, when the address cannot be bound (taken, or not
    this machine's); uvicorn would print its own error and exit 3, the code describe uses for failed
    regions."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); choose "
                                   f"another --port, or stop the program that uses it.") from None


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but a loopback address needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--token", default=None, envvar=TOKEN_ENV, show_envvar=True,
              help="Bearer token every request must carry (prefer the environment variable: "
                   "command lines are visible to other users).")
@click.option("--root", "roots", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder whose rasters, AOIs and outputs requests may name (repeatable). Without it "
                   "only raster_b64 requests work.")
@click.option("--max-request-mb", type=click.FloatRange(min=0.001), default=64.0, show_default=True,
              help="Largest request body accepted (413 beyond).")
@model_option
@endpoint_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@threads_option
@click.option("--max-new-tokens", type=click.IntRange(1, 1024), default=200, show_default=True,
              help="Default longest answer, in tokens.")
@region_as_option
@click.option("--preload", is_flag=True, help="Load the model before accepting requests.")
def command(host, port, token, roots, max_request_mb, model_dir, device, threads, max_new_tokens, region_as, preload,
            endpoint):
    """Serve describe requests over HTTP (POST /v1/describe, ...; OpenAPI at /openapi.json).

    Binds 127.0.0.1 by default. Binding any other address requires --token; every request must
    then send 'Authorization: Bearer TOKEN'. See docs/protocol.md.
    """
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"--host {host} is reachable from the network, so a token is required: start with "
            f"--token TOKEN (or set {TOKEN_ENV}), e.g. a value from "
            f"`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`; or bind 127.0.0.1.")
    model_dir = resolve_model_now(model_dir)
    check_region_as(model_dir, region_as)
    try:
        import uvicorn
    except ImportError:
        raise click.ClickException("the server needs FastAPI and uvicorn: pip install 'mgimm-geo[server]'") from None
    os.environ.setdefault("TQDM_DISABLE", "1")
    from mgimm_core.engines import LoadOptions
    from mgimm_core.service import Service

    service = Service(model_dir, load=LoadOptions(device=device, max_new_tokens=max_new_tokens, threads=threads,
                                                  region_as=region_as, endpoint=endpoint),
                      roots=list(roots))
    if preload:
        service.describer()
    app = create_app(service, token=token, max_request_bytes=int(max_request_mb * 2**20))
    _check_port_free(host, port)
    click.echo(f"mgimm-geo {__version__} serving on http://{host}:{port} (token {'on' if token else 'off'}, "
               f"roots: {', '.join(service.roots) or 'none: raster_b64 only'})", err=True)
    from uvicorn.config import STARTUP_FAILURE

    ended = "stopped"          # Ctrl-C (uvicorn returns) or SIGTERM (batch/cli.py: SystemExit 143)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    except SystemExit as exc:
        if exc.code == STARTUP_FAILURE:        # e.g. the port is taken: uvicorn said why just above
            ended = "could not start"
        raise
    finally:
        click.echo(f"mgimm-geo serve on http://{host}:{port}: {ended}", err=True)
