"""A QgsTask that sends one request to the worker/server and keeps the answer or the error.

It receives plain data only (params built on the main thread by request_data.py) and a client; its
`run` (a background thread) calls `client.request` with progress and cancel callables. `finished`
(main thread) hands the outcome to `on_done(task)`: task.result (dict) or task.error (ClientError).
"""

from __future__ import annotations

import os
import time

from qgis.core import QgsTask

from .client import ClientError


class RequestTask(QgsTask):
    def __init__(self, description: str, client, request_type: str, params: dict, on_done=None):
        super().__init__(description, QgsTask.CanCancel)
        self.client = client
        self.request_type = request_type
        self.params = params
        self.on_done = on_done
        self.result = None
        self.error = None
        self.progress_message = ""
        self.elapsed = 0.0        # seconds the request took, as the user waited (cancelled ones too)

    def _progress(self, fraction: float, message: str) -> None:
        self.progress_message = message
        self.setProgress(max(0.0, min(100.0, 100.0 * fraction)))

    def run(self) -> bool:
        started = time.perf_counter()
        try:
            return self._run()
        finally:
            self.elapsed = time.perf_counter() - started

    def _run(self) -> bool:
        params = {k: v for k, v in self.params.items() if not k.startswith("_")}
        try:
            if "_chip_jobs" in self.params:   # a local raster, server or endpoint mode: region by region, as chips
                from .server_chips import describe_chips

                params.pop("regions", None)
                params.pop("raster_name", None)
                params.pop("guides", None)   # each chip's request carries the guides near its region
                self.result = describe_chips(self.client, self.params["_raster"], self.params["_chip_jobs"],
                                             params, progress=self._progress, cancelled=self.isCanceled)
                return True
            chunk = self.params.get("_chunk")
            if chunk and len(params.get("regions") or ()) > chunk:
                self.result = self._in_chunks(params, int(chunk))
                return True
            self.result = self.client.request(self.request_type, params, progress=self._progress,
                                              cancelled=self.isCanceled)
            return True
        except ClientError as exc:
            self.error = exc
        except Exception as exc:  # a bug on this side: still no traceback dialog, a message instead
            self.error = ClientError("internal", f"MGIMM plugin error ({type(exc).__name__}: {exc}); please "
                                                 f"report it with the QGIS log (MGIMM tab).")
        return False

    def _in_chunks(self, params: dict, chunk: int) -> dict:
        """`describe` in requests of `chunk` regions: after a cancel the finished ones are kept
        (result["cancelled"] True); a cancel before any finished is the cancelled error."""
        regions = params["regions"]
        entries, result = [], {}
        for start in range(0, len(regions), chunk):
            part = regions[start:start + chunk]

            def progress(fraction, message, start=start, size=len(part)):
                self._progress((start + fraction * size) / len(regions), f"{start + int(fraction * size)}/"
                               f"{len(regions)} regions")
            try:
                result = self.client.request(self.request_type, dict(params, regions=part), progress=progress,
                                             cancelled=self.isCanceled)
            except ClientError as exc:
                if exc.code == "cancelled" and entries:
                    break
                raise
            entries.extend(result.get("regions") or [])
        return dict(result, regions=entries, cancelled=len(entries) < len(regions))

    def finished(self, ok: bool) -> None:
        temp = self.params.get("_temp")
        if temp and os.path.exists(temp):
            try:
                os.remove(temp)
            except OSError:
                pass
        if not ok and self.error is None:
            self.error = ClientError("cancelled", "Cancelled.")
        if self.on_done is not None:
            self.on_done(self)
