"""`mgimm-geo worker`: the JSON-lines worker the QGIS plugin starts (docs/protocol.md).

One JSON object per line on stdin (requests) and stdout (replies). stdout carries protocol lines
only: at start the real stdout is kept for the protocol writer and file descriptor 1 is pointed at
stderr, so stray prints, progress bars and C-library output land in the log instead of corrupting
the stream. stdin is read on the main thread while requests run one at a time on a worker thread,
so `cancel` and `shutdown` are seen mid-request; a heartbeat thread proves the process is alive.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time

import click

from batch.options import check_region_as, endpoint_options, model_option, region_as_option, threads_option

from mgimm_core import __version__


# Quiet the libraries before they are imported (the model loads lazily, on the first request).
_QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
PROGRESS_INTERVAL_S = 0.25
#: Longest request line read (characters; --max-request-mb), so one line cannot take the worker's memory.
MAX_LINE_CHARS = 64 * 2**20


class ProtocolWriter:
    """Writes one JSON object per line to the protocol stream; safe from any thread."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = json.dumps(message, ensure_ascii=True, allow_nan=False, default=str)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass    # the client went away; the stdin loop will see EOF and end


def claim_stdout():
    """A text stream on the real stdout for the protocol; fd 1 and sys.stdout now go to stderr."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def _writable(value) -> bool:
    """Whether `value` can be written back in strict JSON (Python's parser reads NaN and Infinity,
    which no answer may carry: an id holding one could not be answered)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def request_key(request_id) -> str:
    """A request's id (any JSON value) as the text the worker tracks it by: its canonical JSON, so
    {"a": 1} and "{'a': 1}", or 7 and "7", stay different requests. Replies carry the id as sent."""
    return json.dumps(request_id, sort_keys=True, separators=(",", ":"))


class Worker:
    """Request queue, the one thread that runs requests, heartbeats and cancellation."""

    def __init__(self, service, writer: ProtocolWriter, heartbeat_s: float, max_line_chars: int = MAX_LINE_CHARS):
        self.service = service
        self.writer = writer
        self.heartbeat_s = heartbeat_s
        self.max_line_chars = max_line_chars
        self.requests: queue.Queue = queue.Queue()
        # Requests are tracked by `request_key` of their id; replies carry the id as sent.
        self.queued: dict[str, int] = {}          # keys waiting in the queue (how many requests each)
        self.cancelled_ids: set[str] = set()      # only keys queued or running (a cancel of others is ignored)
        self.busy: str | None = None              # the running request's key
        self.busy_id = None                       # and its id as sent (heartbeats)
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ main thread
    def serve(self, stdin) -> None:
        """Read requests until EOF or `shutdown`; then cancel what runs and wait for it."""
        from mgimm_core.service import PROTOCOL_VERSION

        runner = threading.Thread(target=self._run_requests, name="mgimm-request", daemon=True)
        runner.start()
        heartbeat = threading.Thread(target=self._heartbeats, name="mgimm-heartbeat", daemon=True)
        if self.heartbeat_s > 0:
            heartbeat.start()
        self.writer.send({"type": "ready", "protocol": PROTOCOL_VERSION, "version": __version__,
                          "pid": os.getpid()})
        for line in self._lines(stdin):
            if line is None:
                mb = self.max_line_chars / 2**20
                self._error(None, "too_large", f"a request line over the worker's limit of {mb:g} MB was "
                                               f"skipped; send fewer regions per request or a smaller "
                                               f"raster_b64, or start the worker with a larger --max-request-mb.")
                continue
            if not line.strip():
                continue
            if not self._dispatch(line):
                break
        self.stopping.set()
        with self._lock:
            if self.busy is not None:
                self.cancelled_ids.add(self.busy)
        self.requests.put(None)
        runner.join(timeout=30)
        if heartbeat.is_alive():
            # a daemon thread still writing to stdout as the interpreter shuts down aborts it (exit -6,
            # seen once in the suite): let the heartbeat finish its line first
            heartbeat.join(timeout=5)

    def _lines(self, stdin):
        """The lines of stdin, None in place of one longer than max_line_chars (read and dropped in
        pieces of that size, so memory stays bounded whatever a client sends)."""
        limit = self.max_line_chars
        while True:
            line = stdin.readline(limit + 1)
            if not line:
                return
            if len(line) <= limit or line.endswith("\n"):     # whole (the newline may be char limit + 1)
                yield line
                continue
            while line and not line.endswith("\n"):       # the rest of the oversized line
                line = stdin.readline(limit + 1)
            yield None

    def _dispatch(self, line: str) -> bool:
        """Queue or act on one request line; False on shutdown."""
        try:
            message = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            self._error(None, "bad_request", f"not a JSON line ({reason}); send one JSON object per line.")
            return True
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._error(None, "bad_request", "each line must be a JSON object with a 'type'.")
            return True
        kind, request_id = message["type"], message.get("id")
        if not _writable(request_id):
            self._error(None, "bad_request", "the 'id' holds NaN or Infinity, which a JSON answer cannot "
                                             "repeat; use a string or a finite number.")
            return True
        key = request_key(request_id)
        if kind == "shutdown":
            return False
        if kind == "cancel":
            with self._lock:
                if request_id is not None and (key in self.queued or key == self.busy):
                    self.cancelled_ids.add(key)
            return True
        if request_id is None:
            self._error(None, "bad_request", f"a {kind!r} request needs an 'id' to answer to.")
            return True
        with self._lock:
            self.queued[key] = self.queued.get(key, 0) + 1
        self.requests.put((key, request_id, kind, message.get("params")))
        return True

    # ------------------------------------------------------------------ request thread
    def _run_requests(self) -> None:
        from mgimm_core.service import error_payload

        while True:
            item = self.requests.get()
            if item is None:
                return
            key, request_id, kind, params = item
            with self._lock:
                self.queued[key] -= 1
                if not self.queued[key]:
                    del self.queued[key]
                if key in self.cancelled_ids or self.stopping.is_set():
                    self.cancelled_ids.discard(key)
                    self._error(request_id, "cancelled", "cancelled by the client before it started.")
                    continue
                self.busy, self.busy_id = key, request_id
            try:
                result = self.service.handle(kind, params, self._progress(request_id),
                                             lambda k=key: k in self.cancelled_ids)
                self.writer.send({"id": request_id, "type": "ok", "result": result})
            except Exception as exc:       # every failure becomes a structured message
                self.writer.send({"id": request_id, "type": "error", **error_payload(exc)})
            finally:
                with self._lock:
                    self.busy, self.busy_id = None, None
                    self.cancelled_ids.discard(key)

    def _progress(self, request_id):
        last = [0.0]

        def progress(value: float, message: str) -> None:
            now = time.monotonic()
            if value < 1.0 and value > 0.0 and now - last[0] < PROGRESS_INTERVAL_S:
                return
            last[0] = now
            self.writer.send({"id": request_id, "type": "progress", "value": round(float(value), 4),
                              "message": message})
        return progress

    def _heartbeats(self) -> None:
        while not self.stopping.wait(self.heartbeat_s):
            self.writer.send({"type": "heartbeat", "time": round(time.time(), 3), "busy": self.busy_id})

    def _error(self, request_id, code: str, message: str) -> None:
        self.writer.send({"id": request_id, "type": "error", "code": code, "message": message})


@click.command("worker")
@model_option
@endpoint_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@threads_option
@click.option("--max-new-tokens", type=click.IntRange(1, 1024), default=200, show_default=True,
              help="Default longest answer, in tokens (a request may ask for another).")
@region_as_option
@click.option("--heartbeat", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds between heartbeat messages (0: none).")
@click.option("--max-request-mb", type=click.FloatRange(min=0.001), default=MAX_LINE_CHARS / 2**20,
              show_default=True, help="Longest request line accepted (longer ones are skipped: too_large).")
def command(model_dir, device, threads, max_new_tokens, region_as, heartbeat, max_request_mb, endpoint):
    """Serve describe requests as JSON lines on stdin/stdout (for the QGIS plugin).

    \b
    stdin: one request per line, e.g. {"id": "r1", "type": "hello"}
    stdout: protocol messages only (ready, progress, heartbeat, ok, error); logs go to stderr.
    The model loads on the first request. EOF on stdin or {"type": "shutdown"} ends the worker
    (exit status 0). See docs/protocol.md.
    """
    check_region_as(model_dir, region_as)
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    writer = ProtocolWriter(claim_stdout())
    from mgimm_core.engines import LoadOptions
    from mgimm_core.service import Service

    service = Service(model_dir, load=LoadOptions(device=device, max_new_tokens=max_new_tokens, threads=threads,
                                                  region_as=region_as, endpoint=endpoint))
    stdin = open(sys.stdin.fileno(), "r", encoding="utf-8", errors="replace", closefd=False)
    Worker(service, writer, heartbeat, max_line_chars=int(max_request_mb * 2**20)).serve(stdin)
