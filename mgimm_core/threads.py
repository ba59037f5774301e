"""How many torch threads to use: the cores free now, not every core.

On a shared machine (2 cores here, a busy laptop, a CI runner), torch's default of one thread per
core oversubscribes the cores another job already holds, and every step waits for the slowest
thread: 50 regions took 26-49 s with the default while other jobs ran, 6.8 s with one thread.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Cores minus the 1-minute load average (what other jobs keep busy), rounded, within 1..cores."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):   # no load average on this platform: assume a quiet machine
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))
