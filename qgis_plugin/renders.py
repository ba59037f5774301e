"""Ending the map canvases' renders before the plugin writes to a layer they may be drawing.

QGIS 3.22 crashed when a canvas render thread read a GeoPackage layer while addFeatures wrote to
it on the main thread (gdb: the render thread in QgsVectorLayerFeatureIterator, the main thread in
GDAL's commit; tests/qgis/test_native_panel.py). QgsMapCanvas.stopRendering() only asks the render
threads to stop and returns at once, so a thread could still be reading when the write began (a CI
run crashed so). waitWhileRendering() would let a long render finish first and freeze the window
meanwhile, so renders are cancelled and then waited for: their threads (QtConcurrent, in the global
thread pool) end within milliseconds of a cancel.
"""

from __future__ import annotations

import time

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import QThreadPool

#: the longest the main thread waits for cancelled render threads (a slow layer's current feature)
RENDER_STOP_WAIT_S = 5.0


def render_threads() -> int:
    """Threads of the global pool busy with something other than a running QGIS task: map renders
    (and their labelling). Counted by status, not by the task manager's active count: in some
    QGIS versions the manager calls a task's finished() (where the plugin writes its results)
    before it stops counting the task active, though its thread has returned to the pool."""
    running = sum(task.status() == QgsTask.Running for task in QgsApplication.taskManager().tasks())
    return QThreadPool.globalInstance().activeThreadCount() - running


def end_map_renders(canvases, timeout: float = RENDER_STOP_WAIT_S) -> bool:
    """Cancel the renders (and preview renders) of `canvases` and wait until their threads have
    ended, at most `timeout` seconds. Returns whether they all ended in time."""
    for canvas in canvases:
        if canvas is not None:
            canvas.stopRendering()
    deadline = time.monotonic() + timeout
    while render_threads() > 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True
