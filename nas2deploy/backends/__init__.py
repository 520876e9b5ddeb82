"""Backend selection: one settings value that checks the environment, opens Runners and
describes the measurement for a latency table's metadata.

Heavy optional stacks (onnxruntime, tensorrt, CUDA) are imported only inside their runner
modules, so the package imports and works without them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nas2deploy import __version__
from nas2deploy.backends.base import Runner, cpu_name
from nas2deploy.deploy.onnx_export import OPSET, export_onnx
from nas2deploy.errors import UserError

BACKENDS = ("onnxruntime", "torch", "tensorrt")
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
        if self.backend == "tensorrt" and self.device != "cuda":
            object.__setattr__(self, "device", "cuda")  # TensorRT only runs on NVIDIA GPUs
        if self.precision == "fp16" and self.device == "cpu":
            raise UserError(
                "--precision fp16 needs a GPU target (--device cuda or --backend tensorrt): on the CPU, "
                "ONNX Runtime and PyTorch run fp16 through slow fallbacks, so a table would mislead"
            )
        if self.batch < 1 or self.threads < 1:
            raise UserError("--batch and --threads must be at least 1")

    @property
    def provider(self) -> str:
        return self.ort_provider or self.device

    def check_available(self) -> None:
        """Fail early, with the install hint, when the requested stack is missing."""
        if self.backend == "onnxruntime":
            from nas2deploy.backends.onnxruntime_runner import import_onnxruntime

            import_onnxruntime()
        if self.backend == "tensorrt":
            from nas2deploy.backends.tensorrt_runner import require_tensorrt

            require_tensorrt()  # TensorRT first, then the GPU
        elif self.device == "cuda":
            from nas2deploy.backends.torch_runner import require_cuda

            require_cuda()

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        return cpu_name()

    def backend_version(self) -> str:
        if self.backend == "onnxruntime":
            from nas2deploy.backends.onnxruntime_runner import onnxruntime_version

            return onnxruntime_version()
        if self.backend == "tensorrt":
            from nas2deploy.backends.tensorrt_runner import tensorrt_version

            return tensorrt_version()
        return str(torch.__version__)

    def describe(self) -> dict[str, Any]:
        """What identifies a measurement: tables measured under different values do not mix."""
        info = asdict(self)
        info.pop("timing_cache")
        info.update(
            backend_version=self.backend_version(),
            device_name=self.device_name(),
            torch_version=str(torch.__version__),
            onnx_opset=OPSET,
            nas2deploy_version=__version__,
        )
        if self.backend == "onnxruntime":
            info["ort_provider"] = self.provider
        else:
            del info["ort_provider"], info["ort_graph_level"]
        if self.backend != "tensorrt":
            del info["workspace_mb"], info["cuda_graph"]
        return info

    def open(self, module: nn.Module, input_shape: tuple[int, ...], source: str = "model") -> Runner:
        """A runner for ``module`` on an input of ``input_shape`` (C, H, W) at this batch."""
        shape = (self.batch, *input_shape)
        if self.backend == "torch":
            from nas2deploy.backends.torch_runner import TorchRunner

            return TorchRunner(module, shape, self.device, self.precision, self.threads)
        onnx_bytes = export_onnx(module, shape, self.precision)
        return self.open_onnx(onnx_bytes, source)

    def open_onnx(self, onnx_bytes: bytes, source: str = "model") -> Runner:
        if self.backend == "onnxruntime":
            from nas2deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

            return OnnxRuntimeRunner(
                onnx_bytes, self.provider, self.threads, self.batch, self.ort_graph_level, source=source
            )
        if self.backend == "tensorrt":
            from nas2deploy.backends.tensorrt_runner import (
                SharedTimingCache,
                TensorRTRunner,
                build_engine,
            )

            cache = _timing_caches.setdefault(self.timing_cache or "", SharedTimingCache(self.timing_cache))
            engine = build_engine(onnx_bytes, self.precision, self.workspace_mb, cache, source=source)
            return TensorRTRunner(engine, self.batch, self.cuda_graph, source=source)
        raise UserError(f"backend {self.backend} does not run ONNX files")


# One shared timing cache per cache path for the life of the process (reference.md section 4).
_timing_caches: dict[str, Any] = {}

__all__ = ["BACKENDS", "BackendSettings", "Runner"]
