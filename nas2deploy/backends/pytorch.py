"""PyTorch eager: the runner (CPU, or CUDA with CUDA-event timing on a dedicated stream) and the
backend. It runs torch modules as they are, so it needs no loader."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from nas2deploy.backends.base import Artifact, Backend, Runner, TorchModule, available_cores
from nas2deploy.backends.onnx import INPUT_NAME, OUTPUT_NAME
from nas2deploy.backends.timing import cpu_time_runs, cuda_time_runs
from nas2deploy.errors import UserError

if TYPE_CHECKING:
    from nas2deploy.backends.settings import BackendSettings


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise UserError(
            "no CUDA GPU is visible to torch (torch.cuda.is_available() is False): the cuda device needs an "
            "NVIDIA GPU, its driver and a CUDA build of torch (pip install torch --index-url "
            "https://download.pytorch.org/whl/cu128)"
        )


class TorchRunner(Runner):

    def __init__(
        self,
        module: nn.Module,
        input_shape: tuple[int, ...],
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
    ):
        if device == "cuda":
            require_cuda()
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.threads = threads or available_cores()
        if device == "cpu":
            torch.set_num_threads(self.threads)
        self.module = module.eval().to(self.device, self.dtype)
        self._shape = tuple(input_shape)
        self._input = torch.randn(*self._shape, device=self.device, dtype=self.dtype)
        self._stream = torch.cuda.Stream() if device == "cuda" else None

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {INPUT_NAME: self._shape}

    @torch.inference_mode()
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(feeds[INPUT_NAME]).to(self.device, self.dtype)
        return {OUTPUT_NAME: self.module(x).float().cpu().numpy()}

    def _run(self) -> None:
        self.module(self._input)

    @torch.inference_mode()
    def time_runs(self, n: int) -> list[float]:
        if self._stream is not None:
            return cuda_time_runs(self._run, n, self._stream)
        return cpu_time_runs(self._run, n)


class TorchBackend(Backend):
    name = "torch"
    suffixes = ()
    independent_of_torch = False  # it is the accuracy reference itself

    def check_available(self, settings: BackendSettings) -> None:
        """Part of torch itself (a CUDA device is checked by the settings)."""

    def version(self) -> str:
        return str(torch.__version__)

    def open(self, settings: BackendSettings, artifact: Artifact) -> Runner:
        if not isinstance(artifact, TorchModule):
            raise UserError(f"{artifact.source}: --backend torch runs PyTorch modules, not model files; "
                            "use onnxruntime or tensorrt")
        return TorchRunner(artifact.module, (settings.batch, *artifact.input_shape), settings.device, settings.precision,
                           settings.threads)
