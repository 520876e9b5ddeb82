"""The Runner interface: one small class per backend, in the spirit of Polygraphy's runners.

Loading (building a session or engine), running (``infer`` on host arrays) and timing
(``time_runs`` on inputs that already live on the device) are separate, so profiling, table
validation, ``bench`` and export accuracy checks all share the same runners and the same harness
(``nas2deploy.backends.timing``).
"""

from __future__ import annotations

import os
import platform
from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Runner(ABC):
    """A loaded model on one backend."""

    backend: str = ""

    @abstractmethod
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes (batch included) that ``time_runs`` feeds."""

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays and return host arrays (for accuracy comparisons)."""

    @abstractmethod
    def time_runs(self, n: int) -> list[float]:
        """Run ``n`` times on prepared device-resident inputs; per-run latency in ms."""

    def close(self) -> None:
        """Release sessions, engines and device buffers."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU model as the kernel reports it, plus the cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({available_cores()} cores)"


def random_inputs(shapes: dict[str, tuple[int, ...]], dtype: Any = np.float32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
