"""Runners, backends and the artifacts they open, arranged as in Polygraphy.

- An **artifact** is what a loader produced: a torch module with its input shape, an ONNX model
  (bytes), a TensorRT engine (bytes), or a model file on disk.
- A **loader** turns one artifact into the next (module -> ONNX in ``backends/onnx.py``; ONNX ->
  session, ONNX -> engine, file -> engine in each backend's module).
- A **runner** only runs what a loader gave it: ``infer`` on host arrays (accuracy checks) and
  ``time_runs`` on inputs that already live on the device (the shared timing harness in
  ``backends/timing.py``), so profiling, validation, ``bench`` and export share them.
- A **backend** is one module that declares the devices and precisions it runs, its own options
  (``BackendOption``: each one's flag, type, default and help, and whether it is part of a
  table's measurement identity), how to check it is installed, its version, which artifacts it
  runs, and how it opens a runner. ``register_backend`` adds one to the registry
  (``nas2deploy.backends.BACKENDS``); the command line's flags, the settings' validation, what a
  table records and matches on, and the command that re-profiles a table all come from these
  declarations, so a new runtime is one module and its registration, and no other module
  compares backend names.

Importing a backend module must stay cheap (the command line reads the declarations to build its
options and answer ``--help``): torch, numpy and the runtimes are imported inside the functions
that use them.
"""

from __future__ import annotations

import os
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nas2deploy.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from nas2deploy.backends.settings import BackendSettings
    from nas2deploy.backends.timing import LaunchCosts
    from nas2deploy.validate import Field

#: The ONNX opset of every exported graph (recorded in tables: graphs of other opsets do not mix).
OPSET = 17
#: The names of a deployed network's one input and one output, in every artifact.
INPUT_NAME = "input"
OUTPUT_NAME = "output"


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
    """A torch module and the (C, H, W) of its one input (the batch comes from the settings).
    ``interior``: an op profiled as it runs inside a network, where a quantised (int8) op takes
    and returns quantised tensors (``backends.quantize.interior``)."""

    module: nn.Module
    input_shape: tuple[int, ...]
    source: str = "model"
    interior: bool = False


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


@dataclass(frozen=True)
class BackendOption:
    """An option that one or more backends read (ONNX Runtime's execution provider, TensorRT's
    builder workspace, a CUDA-graph launch): its flag on ``profile``, ``export`` and ``bench``
    (``--ort-provider``), its kind (``int``, ``str`` or ``flag``) with choices or bounds, its
    default and help, and what a latency table does with it: ``identity`` options are part of
    the measurement's identity (tables measured under different values are never merged or
    compared), ``recorded`` ones are written into the table's metadata. ``command_line`` False
    keeps an option internal (the TensorRT timing cache's path, chosen by the command)."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    low: int | None = None
    high: int | None = None
    identity: bool = False
    recorded: bool = True
    command_line: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def read(self, f: Field) -> Any:
        """The option's value as read from a file (a table's metadata), checked by its kind."""
        if f.value is None and self.default is None:
            return None
        if self.kind == "flag":
            return f.bool()
        if self.kind == "int":
            return f.int(self.low if self.low is not None else -(2**31), self.high if self.high is not None else 2**31)
        return f.str(self.choices or None, max_len=1024)

    def check(self, value: Any, backend: str) -> Any:
        """A value given in code or on the command line, refused in one line when it is not one."""
        ok = (value is None and self.default is None) or (
            isinstance(value, bool) if self.kind == "flag" else
            (type(value) is int and (self.low is None or value >= self.low) and (self.high is None or value <= self.high))
            if self.kind == "int" else isinstance(value, str) and (not self.choices or value in self.choices))
        if not ok:
            kinds = {"flag": "true or false", "int": "a whole number", "str": "a string"}
            valid = f"one of {', '.join(self.choices)}" if self.choices else kinds[self.kind] + (
                f" in [{self.low}, {self.high}]" if self.kind == "int" and self.low is not None else "")
            raise UserError(f"{self.flag} {value!r} for --backend {backend}: expected {valid}")
        return value


class Backend(ABC):
    """One runtime: what it declares (devices, precisions, options), availability, version, and
    how it opens a runner."""

    name: ClassVar[str]
    #: Devices it runs on; the first is the one it uses when none is given (TensorRT: cuda).
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: Precisions it runs; fp16 only on a GPU device (``check_precision``).
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")
    #: Its own options (``BackendOption``); an option given for another backend is refused.
    options: ClassVar[tuple[BackendOption, ...]] = ()
    #: Model files ``bench`` opens with it.
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    #: Whether ``--precision`` shapes what ``export`` builds (an fp16 engine); else it runs the fp32 graph.
    uses_precision: ClassVar[bool] = False
    #: Whether running it tests something the PyTorch reference does not (export's accuracy check).
    independent_of_torch: ClassVar[bool] = True
    #: Whether what ``deploy`` builds can take a dynamic batch (``export --dynamic-batch``).
    dynamic_batch: ClassVar[bool] = True

    @abstractmethod
    def check_available(self, settings: BackendSettings) -> None:
        """Raise one UserError, with the install hint, when the stack is missing."""

    @abstractmethod
    def version(self) -> str:
        """The runtime's version string (recorded in tables; tables of other versions do not mix)."""

    def check_precision(self, settings: BackendSettings) -> None:
        """Refuse a precision this backend does not run, or fp16 on the CPU: there ONNX Runtime and
        PyTorch run fp16 through slow fallbacks, so a table would mislead."""
        if settings.precision not in self.precisions:
            raise UserError(f"--backend {self.name} runs {' or '.join(self.precisions)}, not --precision {settings.precision}")
        if settings.precision == "fp16" and settings.device == "cpu":
            raise UserError("--precision fp16 needs a GPU target (--device cuda or --backend tensorrt): on the CPU, ONNX "
                            "Runtime and PyTorch run fp16 through slow fallbacks, so a table would mislead")

    def check_options(self, settings: BackendSettings) -> None:
        """Refuse combinations of this backend's options that cannot run (a CUDA graph on a CPU)."""

    def check_device(self, device: str) -> None:
        """Fail early, with the fix, when ``device`` is not usable here (no visible GPU)."""
        if device == "cuda":
            from nas2deploy.backends.pytorch import require_cuda

            require_cuda()

    def device_name(self, device: str) -> str:
        """The name a table records of the device (tables of other devices are not compared)."""
        if device == "cuda":
            import torch

            return str(torch.cuda.get_device_name())
        return cpu_name()

    def recorded(self, settings: BackendSettings) -> dict[str, Any]:
        """What a table records of this backend's options: each ``recorded`` option's value."""
        return {o.name: settings.options[o.name] for o in self.options if o.recorded}

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
               batch_range: tuple[int, int, int] | None = None,
               quantized: OnnxModel | None = None) -> tuple[Artifact, dict[str, Any]] | None:
        """What ``export`` writes into ``out`` for this backend besides ``model.onnx`` (TensorRT:
        an engine, for batches in ``batch_range`` when the batch is dynamic; AOTInductor: a
        package): the artifact its runner then opens and the report's entry for it (``file`` and
        ``what`` at least); None when the backend runs the ONNX. ``quantized``: at int8, the
        graph calibrated on real images (``model.int8.onnx``) that the backend builds from."""
        return None


#: Shared by the backends that capture their launches into a CUDA graph on a GPU (torch, TensorRT).
CUDA_GRAPH = BackendOption(
    "cuda_graph", "flag", False, "On cuda: time graph replays (kernels only, as a graph-launched engine runs) instead of "
    "eager launches; recorded in the table.", identity=True)


def refuse_cuda_graph_off_gpu(settings: BackendSettings) -> None:
    """A CUDA graph needs the cuda device."""
    if settings.options.get("cuda_graph") and settings.device != "cuda":
        raise UserError(f"--cuda-graph captures GPU launches: it needs --device cuda (got --backend {settings.backend} "
                        f"--device {settings.device})")


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


def random_inputs(shapes: dict[str, tuple[int, ...]], dtype: Any = None, seed: int = 0) -> dict[str, np.ndarray]:
    import numpy as np

    dtype = dtype or np.float32
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
