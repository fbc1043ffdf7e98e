"""Process resources for CPU inference: cores actually usable, and freed memory returned.

Cores: torch and ONNX Runtime size their pools by the machine's cores, not the container's CPU
quota or affinity; a pod limited to 2 CPUs on a 64-core node then runs 64 spinning threads.

Memory:
glibc's allocator keeps freed heap memory for reuse; after torch inference on batches of
different shapes the process keeps the high-water mark of every shape it saw, so RSS grew with
the day (859 -> 1,748 MB from 1x to 16x the phrases with the demo model) although nothing was
held. `malloc_trim(0)` after a batch returns it (measured: 984 MB at 16x, same speed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


#: `malloc_trim` walks the heap (milliseconds): after every batch-1 call it cost 35% of the demo
#: model's throughput, so it runs at most this often. Memory still never grows with the day.
TRIM_INTERVAL_S = 1.0
_last_trim = [0.0]


def release_freed_memory(*, force: bool = False) -> bool:
    """Return freed heap pages to the OS (at most every `TRIM_INTERVAL_S` unless forced).

    True when the C library could do it, whether or not this call was throttled.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    now = time.monotonic()
    if force or now - _last_trim[0] >= TRIM_INTERVAL_S:
        trim(0)
        _last_trim[0] = time.monotonic()
    return True


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota if any."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    """The cgroup v2 (`cpu.max`) or v1 (`cfs_quota_us / cfs_period_us`) quota in CPUs."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None
