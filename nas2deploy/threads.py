"""How many CPU threads a computation takes: by default the cores that are free when it starts.

PyTorch's default is every core the process may use. On a machine shared with other jobs (a CI
runner, a team's server, two benchmarks at once) that oversubscribes the cores: the threads of
one parallel region wait for each other, and each one that the scheduler parks stalls the rest.
Measured on the 2-core development machine beside a CPU-bound process (``benchmarks/threads.py``):
a short search epoch took 111 s on 2 threads against 15 s on 1, a training epoch 16 s against 5
s; quiet, 2 threads were 1.1-1.2x faster than 1. So the default is measured, not assumed: the share of the cores left idle over a short window as the command
starts (``/proc/stat``), rounded, at least 1 and never more than the cores this process may use.
``--threads N`` overrides it, and so does ``OMP_NUM_THREADS`` where it is set (the standard knob,
which torchrun sets for its ranks too).
"""

from __future__ import annotations

import os
import time
from typing import Callable

from nas2deploy.backends.base import available_cores

#: How the idle share of the cores is watched before a computation starts: ``WINDOWS`` windows of
#: ``WINDOW_S`` seconds each, the most idle one counting. One window of 0.25 s was fooled by a
#: blip (another short command starting beside it) into one thread for a whole 6-minute demo
#: (343 s against 305 s on both cores); a load that persists fills every window.
WINDOW_S, WINDOWS = 0.1, 3


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores since boot, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def free_cores(cores: int | None = None, window_s: float = WINDOW_S, windows: int = WINDOWS,
               read: Callable[[], tuple[int, int] | None] = _cpu_times,
               sleep: Callable[[float], None] = time.sleep) -> int:
    """The cores left idle in the most idle of ``windows`` windows of ``window_s`` (all of them
    where the kernel cannot say), at least 1."""
    cores = cores or available_cores()
    readings = [read()]
    for _ in range(windows):
        sleep(window_s)
        readings.append(read())
    shares = [(after[0] - before[0]) / (after[1] - before[1]) for before, after in zip(readings, readings[1:])
              if before is not None and after is not None and after[1] > before[1]]
    if not shares:
        return cores
    return max(1, min(cores, round(max(shares) * cores)))


def choose_threads(requested: int, ranks: int = 1, measure: Callable[[], int] = free_cores) -> int:
    """``requested`` threads, or with 0 ``OMP_NUM_THREADS`` where it is a positive integer, else
    the free cores shared among the ``ranks`` processes of this machine (torchrun's local
    ranks), at least 1 each."""
    if requested > 0:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, measure() // max(1, ranks))


def use_threads(requested: int, ranks: int = 1) -> int:
    """Set torch's intra-op threads (``choose_threads``) and return how many."""
    import torch

    threads = choose_threads(requested, ranks)
    torch.set_num_threads(threads)
    return threads
