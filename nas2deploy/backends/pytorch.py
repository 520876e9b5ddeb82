"""PyTorch: the runner (CPU, or CUDA with CUDA-event timing on a dedicated stream) and the
backend. It runs torch modules as they are, so it needs no loader.

On CUDA a module runs eagerly (every kernel launched by Python through the dispatcher: what an
eager deployment pays) or, with ``cuda_graph``, captured once into a CUDA graph and replayed
(what a graph-launched engine pays: TensorRT with a graph, ``torch.compile(mode=
"reduce-overhead")``, an AOTInductor package with graphs). For microsecond GPU ops the two
differ by the launch cost of every kernel, which is why a table records which it holds.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from nas2deploy.backends.base import (
    CUDA_GRAPH,
    INPUT_NAME,
    OUTPUT_NAME,
    Artifact,
    Backend,
    Runner,
    TorchModule,
    available_cores,
    refuse_cuda_graph_off_gpu,
)
from nas2deploy.backends.timing import LaunchCosts, cpu_time_runs, time_on
from nas2deploy.errors import UserError, first_line

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from nas2deploy.backends.settings import BackendSettings


def require_cuda() -> None:
    import torch

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
        cuda_graph: bool = False,
        source: str = "model",
    ):
        import torch

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
        self._graph: torch.cuda.CUDAGraph | None = None
        self.source = source
        if cuda_graph:
            self._graph = self._capture()

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {INPUT_NAME: self._shape}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(feeds[INPUT_NAME]).to(self.device, self.dtype)
            return {OUTPUT_NAME: self.module(x).float().cpu().numpy()}

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Run a few times on the runner's stream (cuDNN picks its kernels, the allocator
        settles), then capture one forward pass into a graph on the same stream.

        The warm-up runs with torch's sync debug mode set to error, so a forward pass that waits
        for the GPU on the host (``.item()``, ``float(tensor)``, ``nonzero``) is refused before
        the capture starts: a capture that fails half-way leaves torch's CUDA random-number state
        in capture mode (seen on an H200: every later ``torch.randn`` on the GPU failed), so the
        process could not go on to time the op eagerly."""
        import torch

        assert self._stream is not None, "a CUDA graph needs the cuda device (checked by the settings)"
        previous = torch.cuda.get_sync_debug_mode()
        try:
            torch.cuda.set_sync_debug_mode("error")
            with torch.inference_mode(), torch.cuda.stream(self._stream):
                for _ in range(3):
                    self.module(self._input)
        except RuntimeError as exc:
            raise UserError(f"{self.source}: its forward pass waits for the GPU on the host ({first_line(exc)}), so it "
                            "cannot be captured as a CUDA graph; time it eagerly (leave out --cuda-graph)") from None
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.inference_mode(), torch.cuda.graph(graph, stream=self._stream):
                self.module(self._input)
        except RuntimeError as exc:
            raise UserError(f"{self.source}: its forward pass cannot be captured as a CUDA graph ({first_line(exc)}); "
                            "time it eagerly (leave out --cuda-graph), in a new process: a failed capture can "
                            "leave this one's CUDA state unusable") from None
        return graph

    def _run(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            self.module(self._input)

    def time_runs(self, n: int) -> list[float]:
        import torch

        with torch.inference_mode():
            return time_on(self._run, n, self._stream)

    def launch_costs(self, n: int) -> LaunchCosts | None:
        """Eager on CUDA: the median host dispatch time of a run, and the median replay time of
        the run captured as a CUDA graph (its kernels without launch gaps). The capture happens
        here, after the eager timing, so it never changes what the eager runs measured; a
        forward pass that cannot be captured (it waits for the GPU on the host, which the
        capture's warm-up refuses before capturing) has no launch costs: None."""
        import torch

        if self._stream is None or self._graph is not None:
            return None
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            host = statistics.median(cpu_time_runs(lambda: self.module(self._input), n, self._stream.synchronize))
        try:
            graph = self._capture()
        except UserError:
            return None
        with torch.inference_mode():
            kernels = statistics.median(time_on(graph.replay, n, self._stream))
        return LaunchCosts(round(host, 6), round(kernels, 6))


class TorchBackend(Backend):
    name = "torch"
    suffixes = ()
    independent_of_torch = False  # it is the accuracy reference itself
    options = (CUDA_GRAPH,)

    def check_available(self, settings: BackendSettings) -> None:
        """Part of torch itself (a CUDA device is checked by the settings)."""

    def check_options(self, settings: BackendSettings) -> None:
        refuse_cuda_graph_off_gpu(settings)

    def version(self) -> str:
        import torch

        return str(torch.__version__)

    def open(self, settings: BackendSettings, artifact: Artifact) -> Runner:
        if not isinstance(artifact, TorchModule):
            raise UserError(f"{artifact.source}: --backend torch runs PyTorch modules, not model files; "
                            "use onnxruntime or tensorrt")
        return TorchRunner(artifact.module, (settings.batch, *artifact.input_shape), settings.device, settings.precision,
                           settings.threads, settings.options["cuda_graph"], artifact.source)
