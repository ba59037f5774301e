"""The default torch thread count follows the cores that are free now."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from mgimm_core import threads


def test_default_threads_leaves_busy_cores_to_the_jobs_holding_them(monkeypatch):
    # busy_cores is replaced (a real competing load of every size would make the test slow): the
    # figure it reports is what the default must follow.
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    for busy, expected in ((0.0, 4), (1.2, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(threads, "busy_cores", lambda busy=busy: busy)
        assert threads.default_threads() == expected


def test_load_average_is_the_fallback_without_cpu_counters(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "_machine_cpu_times", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    assert threads.busy_cores() is None
    assert threads.default_threads() == 3


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux CPU counters")
def test_busy_cores_sees_a_real_competing_process():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        seen = max(threads.busy_cores(0.3) or 0.0 for _ in range(3))
    finally:
        spinner.kill()
        spinner.wait()
    assert seen >= 0.6, seen


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux CPU counters")
def test_busy_cores_does_not_count_this_process():
    # A thread of this process spins through the window: that is our own work (e.g. the previous
    # batch finishing), not a competing job, so it must not take a thread away. Compared with the
    # same measure without it, so other jobs on the machine (a loaded CI runner) cancel out.
    baseline = min(threads.busy_cores(0.3) or 0.0 for _ in range(3))
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass
    spinning = threading.Thread(target=spin)
    spinning.start()
    try:
        seen = min(threads.busy_cores(0.3) or 0.0 for _ in range(3))
    finally:
        stop.set()
        spinning.join()
    assert seen - baseline < 0.5, (seen, baseline)


def test_available_cores_is_this_process_affinity():
    assert threads.available_cores() == len(os.sched_getaffinity(0))
