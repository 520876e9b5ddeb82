"""One value that says where and how a model runs: backend, device, precision, batch, threads and
the options of particular backends. It checks the environment, opens runners and describes the
measurement for a latency table's metadata, asking the backend's module (the registry) for what
differs between runtimes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nas2deploy import __version__
from nas2deploy.backends.base import Artifact, Backend, Runner, cpu_name
from nas2deploy.backends.onnx import OPSET
from nas2deploy.backends.pytorch import require_cuda
from nas2deploy.backends.registry import BACKENDS
from nas2deploy.errors import UserError

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class BackendSettings:
    backend: str = "onnxruntime"
    device: str = "cpu"
    precision: str = "fp32"
    batch: int = 1
    #: CPU threads, pinned and recorded. One by default: on a small machine a run that uses every
    #: core competes with everything else there (2 threads on 2 cores varied by up to 45% between
    #: repeats here, 1 thread by under 2%); pass more to profile multi-threaded inference.
    threads: int = 1
    #: ONNX Runtime execution provider; defaults to the device's (cpu -> CPU, cuda -> CUDA).
    ort_provider: str | None = None
    ort_graph_level: str = "all"
    workspace_mb: int = 1024
    cuda_graph: bool = False
    timing_cache: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; valid backends: {', '.join(BACKENDS)}")
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}; valid devices: {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; valid precisions: {', '.join(PRECISIONS)}")
        if self.device not in self.impl.devices:
            object.__setattr__(self, "device", self.impl.devices[0])  # TensorRT only runs on NVIDIA GPUs
        if self.precision == "fp16" and self.device == "cpu":
            raise UserError(
                "--precision fp16 needs a GPU target (--device cuda or --backend tensorrt): on the CPU, "
                "ONNX Runtime and PyTorch run fp16 through slow fallbacks, so a table would mislead"
            )
        if self.cuda_graph and not (self.device == "cuda" and self.impl.captures_cuda_graphs):
            capturing = [name for name, b in BACKENDS.items() if b.captures_cuda_graphs]
            raise UserError(f"--cuda-graph captures GPU launches: it needs --device cuda and one of the backends "
                            f"{', '.join(capturing)} (got --backend {self.backend} --device {self.device})")
        if self.batch < 1 or self.threads < 1:
            raise UserError("--batch and --threads must be at least 1")
        defaults = BackendSettings.__dataclass_fields__
        for name, b in BACKENDS.items():
            for option in b.own_settings:
                if name != self.backend and getattr(self, option) != defaults[option].default:
                    flag = "--" + option.replace("_", "-")
                    raise UserError(f"{flag} applies to --backend {name} only; --backend {self.backend} would ignore it: "
                                    f"leave {flag} out")

    @property
    def impl(self) -> Backend:
        """The backend's module-level object (``nas2deploy.backends.registry``)."""
        return BACKENDS[self.backend]

    def check_available(self) -> None:
        """Fail early, with the install hint, when the requested stack is missing (the
        backend's own stack first, then the GPU it would run on)."""
        self.impl.check_available(self)
        if self.device == "cuda":
            require_cuda()

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        return cpu_name()

    def backend_version(self) -> str:
        return self.impl.version()

    def describe(self) -> dict[str, Any]:
        """What identifies a measurement: tables measured under different values do not mix."""
        return {
            "backend": self.backend, "device": self.device, "precision": self.precision, "batch": self.batch,
            "threads": self.threads, **self.impl.recorded(self), "backend_version": self.backend_version(),
            "device_name": self.device_name(), "torch_version": str(torch.__version__), "onnx_opset": OPSET,
            "nas2deploy_version": __version__,
        }

    def open(self, artifact: Artifact) -> Runner:
        """A runner for ``artifact`` on this backend, loading it as far as the backend needs."""
        return self.impl.open(self, artifact)
