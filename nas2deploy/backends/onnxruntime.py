"""ONNX Runtime: the loader (ONNX -> session), the runner and the backend.

CPU execution provider here; CUDA and TensorRT providers where onnxruntime-gpu is installed.
onnxruntime-gpu lists the CUDA and TensorRT providers even where they cannot load and then runs
on the CPU without raising; so the loader checks ``session.get_providers()`` after creating the
session and refuses a silent fallback. Inputs and outputs are bound once through IOBinding on
the provider's device, so timed runs measure inference, not host copies or allocations.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

from nas2deploy.backends.base import (
    Artifact,
    Backend,
    BackendOption,
    ModelFile,
    OnnxModel,
    Runner,
    TorchModule,
    available_cores,
    random_inputs,
)
from nas2deploy.backends.timing import cpu_time_runs
from nas2deploy.errors import UserError, first_line

if TYPE_CHECKING:
    import numpy as np

    from nas2deploy.backends.settings import BackendSettings

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
GRAPH_LEVELS = ("all", "extended", "basic", "disabled")
#: The longest one run of a model may take by default (s): a 224 px network at batch 64 runs in
#: about a second on a 2-core CPU; a minute is a model that will not end.
DEFAULT_RUN_LIMIT_S = 60


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            "onnxruntime is not installed: pip install 'nas2deploy[cpu]' (CPU) or 'nas2deploy[gpu]' "
            "(CUDA; never both)"
        ) from None
    return onnxruntime


def session_from_onnx(model: bytes, provider: str = "cpu", threads: int | None = None, graph_level: str = "all",
                      device_id: int = 0, source: str = "model") -> Any:
    """The loader: an InferenceSession on ``provider``, refusing a silent fallback to the CPU."""
    ort = import_onnxruntime()
    if provider not in PROVIDERS:
        raise UserError(f"unknown ONNX Runtime provider {provider!r}; valid: {', '.join(PROVIDERS)}")
    if graph_level not in GRAPH_LEVELS:
        raise UserError(f"unknown ONNX Runtime graph level {graph_level!r}; valid: {', '.join(GRAPH_LEVELS)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[graph_level]
    options.log_severity_level = 4  # errors reach the user as one line each (UserError), not as ORT's log
    chain: list[Any] = [PROVIDERS[provider]]
    if provider != "cpu":
        chain = [(PROVIDERS[provider], {"device_id": device_id}), "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(model, options, providers=chain)
    except Exception as exc:  # ORT raises its own exception types for bad graphs
        raise UserError(f"ONNX Runtime cannot load {source}: {first_line(exc)}") from None
    used = session.get_providers()
    if PROVIDERS[provider] not in used:
        raise UserError(
            f"ONNX Runtime fell back to {', '.join(used)} although {PROVIDERS[provider]} was requested: "
            "install onnxruntime-gpu matching this machine's CUDA (pip install 'nas2deploy[gpu]', "
            "after uninstalling onnxruntime) and check that a GPU is visible"
        )
    return session


class OnnxRuntimeRunner(Runner):

    """Runs an ONNX Runtime session. No run may take longer than ``limit_s``: a model that loops
    (a ``Loop`` of 10^12 iterations) or is far too large is stopped by ONNX Runtime's own
    ``RunOptions.terminate``, set by a timer, and refused in one line. Every ``infer`` runs under
    the limit; timing runs after one limited run has shown that a run ends, so the timer's
    thread is never inside a timed loop."""

    def __init__(self, session: Any, batch: int = 1, device: str = "cpu", device_id: int = 0, source: str = "model",
                 limit_s: float = DEFAULT_RUN_LIMIT_S):
        import numpy as np

        ort = import_onnxruntime()
        dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
                  "tensor(int8)": np.int8}  # 8-bit: an int8 op timed as it runs inside a network
        self.session, self.source, self.device, self.limit_s = session, source, device, limit_s
        self._ends = False  # one run under the limit has ended
        self._shapes = {}
        self._dtypes = {}
        for node in session.get_inputs():
            self._shapes[node.name] = tuple(d if isinstance(d, int) else batch for d in node.shape)
            self._dtypes[node.name] = dtypes.get(node.type, np.float32)
        self._binding = session.io_binding()
        for name, array in random_inputs(self._shapes).items():
            value = ort.OrtValue.ortvalue_from_numpy(array.astype(self._dtypes[name]), device, device_id)
            self._binding.bind_ortvalue_input(name, value)
        for node in session.get_outputs():
            self._binding.bind_output(node.name, device, device_id)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def _limited(self, run: Callable[[Any], Any]) -> Any:
        """``run(run_options)`` stopped by ONNX Runtime once it passes ``limit_s``."""
        options = import_onnxruntime().RunOptions()
        options.log_severity_level = 4  # the refusal below says it; ONNX Runtime's own log would repeat it
        timer = threading.Timer(self.limit_s, lambda: setattr(options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            result = run(options)
        except Exception as exc:  # a graph that loads can still fail to run (inconsistent shapes)
            if options.terminate:
                raise UserError(f"ONNX Runtime stopped {self.source}: one run took longer than {self.limit_s:g} s (a "
                                "loop that does not end, or a model far too large for this device); raise "
                                "--ort-run-limit-s if it is meant to") from None
            raise UserError(f"ONNX Runtime cannot run {self.source}: {first_line(exc)}") from None
        finally:
            timer.cancel()
        self._ends = True
        return result

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        cast = {k: v.astype(self._dtypes.get(k, v.dtype)) for k, v in feeds.items()}
        return dict(zip(names, self._limited(lambda options: self.session.run(names, cast, options))))

    def time_runs(self, n: int) -> list[float]:
        if not self._ends:
            self._limited(lambda options: self.session.run_with_iobinding(self._binding, options))
        try:
            return cpu_time_runs(lambda: self.session.run_with_iobinding(self._binding), n)
        except Exception as exc:
            raise UserError(f"ONNX Runtime cannot run {self.source}: {first_line(exc)}") from None

    def close(self) -> None:
        self._binding = None
        self.session = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    #: int8: a QDQ graph (``backends.quantize``), run by the CPU provider's integer kernels:
    #: calibrated on real images by ``export``, on random inputs where it is only timed.
    precisions = ("fp32", "fp16", "int8")
    options = (
        BackendOption("ort_provider", "str", None, "ONNX Runtime execution provider [default: the device's].",
                      choices=tuple(PROVIDERS), identity=True),
        BackendOption("ort_graph_level", "str", "all", "ONNX Runtime graph optimisation level.", choices=GRAPH_LEVELS,
                      identity=True),
        BackendOption("ort_run_limit_s", "int", DEFAULT_RUN_LIMIT_S, "Longest one run of the model may take (s): a run "
                      "past it is stopped and refused.", low=1, high=86_400, recorded=False),
    )

    def check_available(self, settings: BackendSettings) -> None:
        import_onnxruntime()

    def version(self) -> str:
        return str(import_onnxruntime().__version__)

    @staticmethod
    def provider(settings: BackendSettings) -> str:
        return str(settings.options.get("ort_provider") or settings.device)

    def recorded(self, settings: BackendSettings) -> dict[str, Any]:
        """The provider the session runs on (the device's where none was named)."""
        return {**super().recorded(settings), "ort_provider": self.provider(settings)}

    def check_precision(self, settings: BackendSettings) -> None:
        super().check_precision(settings)
        if settings.precision == "int8" and self.provider(settings) != "cpu":
            raise UserError("--precision int8 runs on ONNX Runtime's CPU provider here: leave out --device cuda and "
                            "--ort-provider")

    def prepare(self, settings: BackendSettings, artifact: TorchModule) -> OnnxModel:
        from nas2deploy.backends.onnx import onnx_from_module

        if settings.precision == "int8":  # timed as quantised (an export calibrates on real images instead)
            from nas2deploy.backends.quantize import for_timing

            graph = onnx_from_module(artifact, settings.batch)
            return OnnxModel(for_timing(graph.data, artifact.input_shape, settings.batch, artifact.interior), graph.source)
        return onnx_from_module(artifact, settings.batch, settings.precision)

    def open(self, settings: BackendSettings, artifact: Artifact) -> Runner:
        from nas2deploy.backends.onnx import read_model

        if isinstance(artifact, TorchModule):
            artifact = self.prepare(settings, artifact)
        elif isinstance(artifact, ModelFile) and artifact.path.suffix in self.suffixes:
            artifact = read_model(artifact)
        if not isinstance(artifact, OnnxModel):
            raise UserError(f"{artifact.source}: ONNX Runtime runs ONNX models ({', '.join(self.suffixes)} files)")
        provider = self.provider(settings)
        session = session_from_onnx(artifact.data, provider, settings.threads, settings.options["ort_graph_level"],
                                    source=artifact.source)
        return OnnxRuntimeRunner(session, settings.batch, "cpu" if provider == "cpu" else "cuda", source=artifact.source,
                                 limit_s=settings.options["ort_run_limit_s"])
