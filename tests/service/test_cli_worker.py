"""`mgimm-geo worker` as the QGIS plugin runs it: a real subprocess speaking JSON lines, with a
tiny MGIMM saved to disk. Every stdout line must parse as a protocol message."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from tests.service.test_service import INSIDE, OUTSIDE, UTM, save_tiny_model

WORKER = [sys.executable, "-m", "batch.cli", "worker"]


class WorkerProcess:
    """A worker subprocess; stdout lines are parsed (and so checked) as JSON on a reader thread."""

    def __init__(self, *args: str):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.proc = subprocess.Popen(WORKER + list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1, env=env)
        self.messages: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.bad_lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.messages.put(json.loads(line))
            except json.JSONDecodeError:
                self.bad_lines.append(line)

    def send(self, message: dict):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching message within {timeout} s; seen: {self.seen[-5:]}; "
                                     f"stderr: {self._stderr_tail()}")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(message)
            if predicate(message):
                return message

    def reply(self, request_id: str, timeout: float = 90.0) -> dict:
        return self.wait_for(lambda m: m.get("id") == request_id and m["type"] in ("ok", "error"), timeout)

    def _stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()[-2000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    model_dir = tmp_path_factory.getbasetemp() / "tiny_mgimm_model"
    process = WorkerProcess("--model", str(model_dir), "--device", "cpu", "--max-new-tokens", "6",
                            "--heartbeat", "0.5")
    save_tiny_model(tmp_path_factory)      # while the worker starts: it loads the model on first use
    yield process
    process.close()


@pytest.mark.slow
def test_ready_comes_first_then_hello_reports_the_model(worker):
    ready = worker.wait_for(lambda m: True, timeout=90)
    assert ready["type"] == "ready" and ready["protocol"] == 1 and ready["version"]
    worker.send({"id": "h1", "type": "hello"})
    reply = worker.reply("h1", timeout=180)
    assert reply["type"] == "ok", reply
    assert reply["result"]["model"] == "tiny_mgimm_model" and reply["result"]["device"] == "cpu"


def test_describe_drawn_polygon_and_region_outside(worker, make_raster):
    raster = make_raster(crs=UTM)
    worker.send({"id": "d1", "type": "describe", "params": {
        "raster": raster, "crs": "EPSG:4326",
        "regions": [{"id": "in", "wkt": INSIDE}, {"id": "out", "wkt": OUTSIDE}]}})
    reply = worker.reply("d1")
    assert reply["type"] == "ok", reply
    inside, outside = reply["result"]["regions"]
    assert inside["error"] is None and inside["description"] and inside["thumbnail_png_b64"]
    assert outside["description"] is None and "outside" in outside["error"]
    progress = [m for m in worker.seen if m.get("id") == "d1" and m["type"] == "progress"]
    assert progress and progress[-1]["value"] == 1.0


def test_missing_raster_is_an_error_message_naming_the_file(worker, tmp_path):
    missing = str(tmp_path / "no_such_scene.tif")
    worker.send({"id": "d2", "type": "describe", "params": {"raster": missing, "regions": [{"wkt": INSIDE}]}})
    reply = worker.reply("d2")
    assert reply["type"] == "error" and reply["code"] == "not_found" and missing in reply["message"]


def test_malformed_line_gets_bad_request(worker):
    worker.proc.stdin.write("this is not json\n")
    worker.proc.stdin.flush()
    reply = worker.wait_for(lambda m: m["type"] == "error" and m.get("id") is None)
    assert reply["code"] == "bad_request"


def test_cancel_stops_a_long_request_quickly_and_heartbeats_flow(worker, make_raster):
    raster = make_raster(crs=UTM)
    regions = [{"id": str(i), "wkt": INSIDE} for i in range(200)]     # minutes of work uncancelled
    worker.send({"id": "long", "type": "describe", "params": {
        "raster": raster, "regions": regions, "batch_size": 1, "max_new_tokens": 60, "thumbnail": False}})
    worker.wait_for(lambda m: m.get("id") == "long" and m["type"] == "progress" and m["value"] > 0)
    beat = worker.wait_for(lambda m: m["type"] == "heartbeat", timeout=5)
    assert beat["busy"] == "long" and beat["time"] > 0
    sent = time.monotonic()
    worker.send({"id": "long", "type": "cancel"})
    reply = worker.reply("long", timeout=15)
    assert reply["type"] == "error" and reply["code"] == "cancelled"
    assert time.monotonic() - sent < 5
    # the worker is still usable afterwards
    worker.send({"id": "h2", "type": "hello"})
    assert worker.reply("h2")["type"] == "ok"


def test_shutdown_exits_zero_with_protocol_only_stdout(worker):
    worker.send({"type": "shutdown"})
    assert worker.proc.wait(timeout=20) == 0
    time.sleep(0.2)
    assert worker.bad_lines == []          # nothing but JSON ever reached stdout


def test_eof_on_stdin_exits_zero():
    process = WorkerProcess("--model", "/nonexistent", "--heartbeat", "0")
    try:
        assert process.wait_for(lambda m: True, timeout=90)["type"] == "ready"
        process.proc.stdin.close()
        assert process.proc.wait(timeout=20) == 0
    finally:
        process.close()


def test_oversized_lines_deep_json_and_cancels_of_unseen_ids_leave_the_worker_working(tmp_path_factory):
    model_dir = save_tiny_model(tmp_path_factory)
    process = WorkerProcess("--model", model_dir, "--device", "cpu", "--max-new-tokens", "2", "--heartbeat", "0",
                            "--max-request-mb", "0.5")
    try:
        assert process.wait_for(lambda m: True)["type"] == "ready"
        process.proc.stdin.write(json.dumps({"id": "big", "type": "hello", "pad": "x" * 2_000_000}) + "\n")
        process.proc.stdin.write("[" * 100_000 + "]" * 100_000 + "\n")
        process.proc.stdin.flush()
        too_large = process.wait_for(lambda m: m["type"] == "error")
        assert too_large["id"] is None and too_large["code"] == "too_large" and "0.5 MB" in too_large["message"]
        deep = process.wait_for(lambda m: m["type"] == "error")
        assert deep["code"] == "bad_request" and "nested too deeply" in deep["message"]
        process.send({"id": "later", "type": "cancel"})          # an id the worker has not seen: ignored
        process.send({"id": "later", "type": "hello"})
        assert process.reply("later", timeout=120)["type"] == "ok"
        process.send({"id": "after", "type": "hello"})           # and the next request is not the one cancelled
        assert process.reply("after")["type"] == "ok"
        assert process.bad_lines == []
    finally:
        process.close()


class _WaitsForCancel:
    """A service whose requests run until the client cancels them (the worker's loop, no model)."""

    def handle(self, kind, params, progress, cancelled):
        from mgimm_core.service import ServiceError

        deadline = time.monotonic() + 10
        while not cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise ServiceError("cancelled", "cancelled by the client.")


@pytest.mark.parametrize("request_id", [{"a": 1}, [1, "x"], 7, "7", 2.5])
def test_replies_and_cancels_use_the_id_as_sent(request_id):
    import io

    from batch.worker import ProtocolWriter, Worker

    stream = io.StringIO()
    lines = [{"id": request_id, "type": "describe"}, {"id": request_id, "type": "cancel"},
             {"id": "after", "type": "describe"}, {"id": "after", "type": "cancel"}]
    worker = Worker(_WaitsForCancel(), ProtocolWriter(stream), heartbeat_s=0)
    worker.serve(io.StringIO("".join(json.dumps(line) + "\n" for line in lines)))
    replies = [json.loads(line) for line in stream.getvalue().splitlines()][1:]
    assert [(r["id"], r["type"], r["code"]) for r in replies] == [(request_id, "error", "cancelled"),
                                                                    ("after", "error", "cancelled")]
    assert type(replies[0]["id"]) is type(request_id)
