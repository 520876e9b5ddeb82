"""Runners, backends and the artifacts they open, arranged as in Polygraphy.

- An **artifact** is what a loader produced: a torch module with its input shape, an ONNX model
  (bytes), a TensorRT engine (bytes), or a model file on disk.
- A **loader** turns one artifact into the next (module -> ONNX in ``backends/onnx.py``; ONNX ->
  session, ONNX -> engine, file -> engine in each backend's module).
- A **runner** only runs what a loader gave it: ``infer`` on host arrays (accuracy checks) and
  ``time_runs`` on inputs that already live on the device (the shared timing harness in
  ``backends/timing.py``), so profiling, validation, ``bench`` and export share them.
- A **backend** is one module that declares how to check it is installed, its version, what a
  table records of its settings, which artifacts it runs, and how it opens a runner; the
  registry (``nas2deploy.backends.BACKENDS``) holds one per runtime, so a new runtime is one
  module and one line there, and no other module compares backend names.
"""

from __future__ import annotations

import os
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from torch import nn

from nas2deploy.errors import UserError

if TYPE_CHECKING:
    from nas2deploy.backends.settings import BackendSettings
    from nas2deploy.backends.timing import LaunchCosts


class Runner(ABC):
    """A loaded model on one backend."""

    @abstractmethod
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes (batch included) that ``time_runs`` feeds."""

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays and return host arrays (for accuracy comparisons)."""

    @abstractmethod
    def time_runs(self, n: int) -> list[float]:
        """Run ``n`` times on prepared device-resident inputs; per-run latency in ms."""

    def launch_costs(self, n: int) -> LaunchCosts | None:
        """The host's and the GPU's share of one run (medians of ``n``), for runners that launch
        a GPU's kernels one by one from the host (eager PyTorch on CUDA); None for the others,
        whose run time is what a table needs (a CPU, a graph, an engine)."""
        return None

    def close(self) -> None:
        """Release sessions, engines and device buffers."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- artifacts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TorchModule:
    """A torch module and the (C, H, W) of its one input (the batch comes from the settings)."""

    module: nn.Module
    input_shape: tuple[int, ...]
    source: str = "model"


@dataclass(frozen=True)
class OnnxModel:
    data: bytes
    source: str = "model.onnx"


@dataclass(frozen=True)
class EngineModel:
    """A serialized TensorRT engine."""

    data: bytes
    source: str = "model.engine"


@dataclass(frozen=True)
class ModelFile:
    """A model on disk (``bench``): each backend names the suffixes it opens."""

    path: Path

    @property
    def source(self) -> str:
        return str(self.path)


Artifact = TorchModule | OnnxModel | EngineModel | ModelFile


class Backend(ABC):
    """One runtime: availability, version, what it records, and how it opens a runner."""

    name: ClassVar[str]
    #: Devices it runs on; the first is the one it uses when none is given (TensorRT: cuda).
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: Model files ``bench`` opens with it.
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    #: Whether ``--precision`` shapes what it runs (an fp16 engine); else it runs the fp32 graph.
    uses_precision: ClassVar[bool] = False
    #: Whether running it tests something the PyTorch reference does not (export's accuracy check).
    independent_of_torch: ClassVar[bool] = True
    #: Whether ``--cuda-graph`` can capture its launches into a CUDA graph on a GPU.
    captures_cuda_graphs: ClassVar[bool] = False
    #: Whether what ``deploy`` builds can take a dynamic batch (``export --dynamic-batch``).
    dynamic_batch: ClassVar[bool] = True
    #: The ``BackendSettings`` fields only this backend reads (set to anything but their default
    #: for another backend, they are refused: an option must never be silently ignored).
    own_settings: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def check_available(self, settings: BackendSettings) -> None:
        """Raise one UserError, with the install hint, when the stack is missing."""

    @abstractmethod
    def version(self) -> str:
        """The runtime's version string (recorded in tables; tables of other versions do not mix)."""

    def recorded(self, settings: BackendSettings) -> dict[str, Any]:
        """The backend's own settings a table records (ONNX Runtime: provider, graph level)."""
        return {}

    @abstractmethod
    def open(self, settings: BackendSettings, artifact: Artifact) -> Runner:
        """A runner for ``artifact`` (loading it as far as this backend needs), or a UserError
        saying which artifacts this backend runs."""

    def prepare(self, settings: BackendSettings, artifact: TorchModule) -> Artifact:
        """The part of loading ``artifact`` that needs neither the device nor this process (the
        ONNX export, for the backends that run ONNX), so that profiling can do it in a helper
        process while another op is timed; by default nothing (``open`` takes the module)."""
        return artifact

    def deploy(self, settings: BackendSettings, artifact: TorchModule, out: Path,
               batch_range: tuple[int, int, int] | None = None) -> tuple[Artifact, dict[str, Any]] | None:
        """What ``export`` writes into ``out`` for this backend besides ``model.onnx`` (TensorRT:
        an engine, for batches in ``batch_range`` when the batch is dynamic; AOTInductor: a
        package): the artifact its runner then opens and the report's entry for it (``file`` and
        ``what`` at least); None when the backend runs the ONNX."""
        return None


# -- machine ------------------------------------------------------------------------------------
def refuse_other_platform(recorded: dict[str, Any], here: dict[str, str], what: str, rebuild: str) -> None:
    """Refuse an artifact built elsewhere (an engine, a compiled package), naming where it was
    built and what this machine has, for every key of ``here`` on which they differ."""
    differ = [k for k in here if recorded.get(k) != here[k]]
    if differ:
        built = ", ".join(f"{k} {recorded.get(k)}" for k in differ)
        now = ", ".join(f"{k} {here[k]}" for k in differ)
        raise UserError(f"{what} was built for {built}; this machine has {now}: rebuild it here with {rebuild}")


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
