"""`mgimm-geo serve`: a real server subprocess on 127.0.0.1 (free port), spoken to over HTTP with
urllib: token, roots, body limit, describe with raster_b64, OpenAPI, refusal to bind openly."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
import urllib.error
import urllib.request

import pytest

from tests.service.test_service import INSIDE, UTM, save_tiny_model

TOKEN = "test-token-0123456789"
SERVE = [sys.executable, "-m", "batch.cli", "serve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base: str, path: str, body=None, *, token: str | None = TOKEN, raw: bytes | None = None,
         timeout: float = 60) -> tuple[int, dict]:
    """(status, JSON body) of a GET (body None) or POST to the server."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method="GET" if data is None else "POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@contextmanager
def serving(*args: str, timeout: float = 30, stopped: list | None = None):
    """A real `mgimm-geo serve ARGS` on a free port with TOKEN, its output kept for a failure
    message; yields its base URL once /health answers, and stops it afterwards (SIGTERM), putting
    (exit status, output) in `stopped` if given."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["MGIMM_SERVE_TOKEN"] = TOKEN
    port = free_port()
    with tempfile.TemporaryFile("w+") as output:
        proc = subprocess.Popen(SERVE + ["--port", str(port), *args], env=env, stdout=output,
                                stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if call(base, "/health", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output.seek(0)
                pytest.fail(f"server did not start: {output.read()[-3000:]}")
            time.sleep(0.2)
        try:
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if stopped is not None:
                output.seek(0)
                stopped.append((proc.returncode, output.read()))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, the --root folder) of a server of the tiny model."""
    root = tmp_path_factory.mktemp("served")
    with serving("--root", str(root), "--max-request-mb", "0.25", "--device", "cpu", "--max-new-tokens", "6",
                 "--model", save_tiny_model(tmp_path_factory)) as base:
        yield base, root


def test_health_and_openapi(server):
    base, _ = server
    status, health = call(base, "/health")
    assert status == 200 and health["status"] == "ok" and health["protocol"] == 1
    status, spec = call(base, "/openapi.json")
    assert status == 200 and "/v1/{request_type}" in spec["paths"] and "/health" in spec["paths"]


def test_missing_or_wrong_token_is_401(server):
    base, _ = server
    assert call(base, "/health", token=None)[0] == 401
    status, body = call(base, "/v1/hello", {}, token="wrong-token")
    assert status == 401 and body["code"] == "unauthorized" and "Bearer" in body["message"]


@pytest.mark.slow
def test_describe_raster_b64(server, make_raster):
    base, _ = server
    with open(make_raster(crs=UTM), "rb") as handle:
        chip = base64.b64encode(handle.read()).decode()
    status, result = call(base, "/v1/describe", {"raster_b64": chip, "crs": "EPSG:4326",
                                                 "regions": [{"id": "drawn", "wkt": INSIDE}]})
    assert status == 200, result
    (entry,) = result["regions"]
    assert entry["id"] == "drawn" and entry["error"] is None and entry["description"]
    assert entry["thumbnail_png_b64"]
    health = call(base, "/health")[1]
    assert health["model"] == "tiny_mgimm_model" and health["device"] == "cpu"


def test_raster_path_under_root_works_outside_is_403(server, make_raster):
    base, root = server
    outside = make_raster(crs=UTM)                      # in the test's tmp_path, not under --root
    status, body = call(base, "/v1/describe", {"raster": outside, "regions": [{"wkt": INSIDE}]})
    assert status == 403 and body["code"] == "forbidden" and outside in body["message"]
    escape = f"{root}/../{os.path.basename(os.path.dirname(outside))}/scene.tif"
    assert call(base, "/v1/describe", {"raster": escape, "regions": [{"wkt": INSIDE}]})[0] == 403
    inside = root / "scene.tif"
    inside.write_bytes(open(outside, "rb").read())
    status, result = call(base, "/v1/describe", {"raster": str(inside), "regions": [{"wkt": INSIDE}],
                                                 "thumbnail": False})
    assert status == 200 and result["regions"][0]["description"]
    status, body = call(base, "/v1/describe", {"raster": str(root / "gone.tif"), "regions": [{"wkt": INSIDE}]})
    assert status == 404 and body["code"] == "not_found"


def test_oversized_body_is_413(server):
    base, _ = server
    status, body = call(base, "/v1/describe", raw=b'{"raster_b64": "' + b"A" * 300_000 + b'"}')
    assert status == 413 and body["code"] == "too_large" and "--max-request-mb" in body["message"]


def test_bad_request_body_is_400(server):
    base, _ = server
    assert call(base, "/v1/describe", raw=b"[1, 2]")[0] == 400
    assert call(base, "/v1/nope", {})[1]["code"] == "bad_request"


def test_refuses_non_loopback_host_without_token():
    env = {k: v for k, v in os.environ.items() if k != "MGIMM_SERVE_TOKEN"}
    started = time.monotonic()
    result = subprocess.run(SERVE + ["--host", "0.0.0.0", "--port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "token is required" in result.stderr
    assert time.monotonic() - started < 20


def test_refuses_a_model_folder_without_a_model_at_start(tmp_path):
    """A --model folder that holds no model stops serve at start (exit 2, naming --model and what a
    model folder holds), rather than a server whose every request then fails."""
    (tmp_path / "empty").mkdir()
    result = subprocess.run(SERVE + ["--port", str(free_port()), "--model", str(tmp_path / "empty")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--model" in result.stderr and "no model here" in result.stderr and "config.json" in result.stderr
    result = subprocess.run(SERVE + ["--port", str(free_port()), "--model", str(tmp_path / "no-such-model")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no-such-model: no such folder" in result.stderr


def test_model_demo_names_the_embedded_demo_model():
    """`--model demo` serves the shipped demo model under the id "demo" (it once started, then
    answered every request with HTTP 500 "demo: no model here")."""
    with serving("--device", "cpu", "--model", "demo") as base:
        status, models = call(base, "/v1/models")
    assert status == 200 and [entry["id"] for entry in models["data"]] == ["demo"]


def test_sigterm_stops_the_server_saying_so(tmp_path_factory):
    """A scheduler's stop (SIGTERM) ends the server with 128 + 15 and a line that says it stopped
    (it once ended without a word)."""
    stopped: list = []
    model = save_tiny_model(tmp_path_factory)
    with serving("--device", "cpu", "--model", model, stopped=stopped) as base:
        port = base.rsplit(":", 1)[1]
        taken = subprocess.run(SERVE + ["--port", port, "--device", "cpu", "--model", model],
                               capture_output=True, text=True, timeout=60)      # the port is taken
    ((status, output),) = stopped
    assert status == 143 and f"http://127.0.0.1:{port}: stopped" in output
    assert taken.returncode == 2 and f"--port {port}: cannot listen there" in taken.stderr
    assert "serving on" not in taken.stderr                              # it never said it served


def test_health_answers_while_busy_and_cancel_stops_the_request(server, make_raster):
    import threading

    base, _ = server
    with open(make_raster(crs=UTM), "rb") as handle:
        chip = base64.b64encode(handle.read()).decode()
    params = {"raster_b64": chip, "regions": [{"id": str(i), "wkt": INSIDE} for i in range(200)],
              "batch_size": 1, "max_new_tokens": 60, "thumbnail": False}
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(
        zip(("status", "body"), call(base, "/v1/describe?request_id=long", params))))
    thread.start()
    deadline = time.monotonic() + 30
    while True:
        asked = time.monotonic()
        health = call(base, "/health", timeout=5)[1]
        if health["busy"] == "long":
            assert time.monotonic() - asked < 2           # the event loop is free while the model works
            break
        assert time.monotonic() < deadline, "the long request never started"
        time.sleep(0.1)
    assert call(base, "/v1/cancel?request_id=long", {})[0] == 200
    thread.join(timeout=15)
    assert answer["status"] == 409 and answer["body"]["code"] == "cancelled"


def test_deep_json_nul_paths_and_cancels_of_unseen_ids_get_json_answers(server):
    base, root = server
    status, body = call(base, "/v1/describe", raw=b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and body["code"] == "bad_request" and "nested too deeply" in body["message"]
    status, body = call(base, "/v1/describe", {"raster": f"{root}/a\u0000.tif", "regions": [{"wkt": INSIDE}]})
    assert status == 400 and body["code"] == "bad_request" and "NUL" in body["message"]
    status, body = call(base, "/v1/cancel?request_id=not-yet", {})
    assert status == 200 and body == {"cancelled": "not-yet", "found": False}
    status, body = call(base, "/v1/hello?request_id=not-yet", {}, timeout=120)   # not poisoned by that cancel
    assert status == 200 and body["protocol"] == 1
