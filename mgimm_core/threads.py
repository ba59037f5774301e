"""How many torch threads to use: the cores free now, not every core.

On a shared machine (2 cores here, a busy laptop, a CI runner), torch's default of one thread per
core oversubscribes the cores another job already holds, and every step waits for the slowest
thread: 50 regions took 26-49 s with the default while other jobs ran, 6.8 s with one thread.

"Free now" is measured over a short window from the kernel's CPU counters, less this process's own
CPU time. The 1-minute load average is only the fallback where those counters are missing: it lags,
so a run started right after another one (a script, the benchmark) would see that finished run as
a competing job and take one thread on an idle machine.
"""

from __future__ import annotations

import os
import time

SAMPLE_SECONDS = 0.1


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _machine_cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [float(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    total = sum(fields)
    idle = fields[3] + fields[4]                  # idle + iowait
    return total - idle, total


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def busy_cores(window: float = SAMPLE_SECONDS) -> float | None:
    """Cores other processes kept busy over the last `window` seconds; None without CPU counters."""
    first, own_first, started = _machine_cpu_times(), _own_cpu_seconds(), time.monotonic()
    if first is None:
        return None
    time.sleep(window)
    second, own_second, elapsed = _machine_cpu_times(), _own_cpu_seconds(), time.monotonic() - started
    if second is None or second[1] <= first[1] or elapsed <= 0:
        return None
    machine_cores = os.cpu_count() or available_cores()
    busy = (second[0] - first[0]) / (second[1] - first[1]) * machine_cores
    return max(0.0, busy - (own_second - own_first) / elapsed)


def default_threads() -> int:
    """Cores minus what other jobs keep busy now, rounded, within 1..cores."""
    cores = available_cores()
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):   # no load figures on this platform: assume a quiet machine
            busy = 0.0
    return max(1, min(cores, round(cores - busy)))
