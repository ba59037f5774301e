"""The default torch thread count follows the cores that are free now."""

from __future__ import annotations

import os

from mgimm_core import threads


def test_default_threads_leaves_busy_cores_to_the_jobs_holding_them(monkeypatch):
    # os.getloadavg is replaced (a real competing load would make the test slow and flaky): the
    # figure it reports is what the default must follow.
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    for load, expected in ((0.0, 4), (1.2, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert threads.default_threads() == expected


def test_available_cores_is_this_process_affinity():
    assert threads.available_cores() == len(os.sched_getaffinity(0))
