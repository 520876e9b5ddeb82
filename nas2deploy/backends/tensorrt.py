"""TensorRT: the loaders (ONNX -> engine with a shared timing cache, engine file -> engine), the
runner and the backend, for the TensorRT 10.x and 11.x API.

Written against the documented Python API (reference.md section 4) and type-checked with mypy
against the ``tensorrt-stubs`` package (``make typecheck``); TensorRT itself cannot be installed
on the machines this project is developed on, so its runtime tests skip there.

- Build: Builder -> create_network(0) -> OnnxParser.parse (every parser error reported with its
  node) -> builder config with a workspace limit -> build_serialized_network.
- Timing cache: one ITimingCache shared by every build in the process and saved to disk, so the
  hundreds of per-op engines of a profile reuse each other's tactic timings.
- Precision: fp16 comes from an fp16 ONNX graph (TensorRT 11.x networks are strongly typed and
  have no FP16 builder flag); on 10.x the deprecated FP16 flag is set as well, looked up by name
  (enum integer values changed between 10 and 11, so none are stored).
- Run: device buffers are torch CUDA tensors (no pycuda), addresses bound with
  set_tensor_address, execute_async_v3 on a torch stream, CUDA events around each launch;
  optionally the launch is captured once into a CUDA graph and replayed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas2deploy.backends.base import (
    CUDA_GRAPH,
    Artifact,
    Backend,
    BackendOption,
    EngineModel,
    ModelFile,
    OnnxModel,
    Runner,
    TorchModule,
    refuse_other_platform,
)
from nas2deploy.backends.pytorch import require_cuda
from nas2deploy.backends.timing import cuda_time_runs
from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_bytes, atomic_write_json, read_json, require_file

if TYPE_CHECKING:
    import numpy as np
    import torch

    from nas2deploy.backends.settings import BackendSettings

INSTALL_HINT = (
    "install TensorRT 10.x or 11.x on a machine with an NVIDIA GPU: pip install 'nas2deploy[tensorrt]' "
    "(see https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html)"
)


def require_tensorrt() -> None:
    """Fail with one line when TensorRT or a GPU is missing (a stub-only package counts as missing)."""
    spec = importlib.util.find_spec("tensorrt")
    if spec is None or spec.origin is None:
        raise UserError(f"TensorRT is not installed: {INSTALL_HINT}")
    require_cuda()


def tensorrt_version() -> str:
    require_tensorrt()
    import tensorrt as trt

    return trt.__version__


def _dims(dims: object) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (it supports ``len`` and indexing in every version)."""
    import tensorrt as trt

    assert isinstance(dims, trt.Dims)
    return tuple(int(dims[i]) for i in range(len(dims)))


class SharedTimingCache:
    """One timing cache for all builds of a process, loaded from and saved to ``path``.

    The cache is specific to the GPU, CUDA and TensorRT version; TensorRT rejects a mismatching
    one (``ignore_mismatch=False``), which surfaces as an error naming the cache file.
    """

    def __init__(self, path: str | os.PathLike[str] | None):
        self.path = Path(path) if path else None
        self._cache: object | None = None

    def attach(self, config: object) -> None:
        import tensorrt as trt

        assert isinstance(config, trt.IBuilderConfig)
        if self._cache is None:
            data = self.path.read_bytes() if self.path and self.path.exists() else b""
            self._cache = config.create_timing_cache(data)
        assert isinstance(self._cache, trt.ITimingCache)
        if not config.set_timing_cache(self._cache, False):
            raise UserError(
                f"timing cache {self.path}: built for another GPU, CUDA or TensorRT version; delete it to start afresh"
            )

    def save(self) -> None:
        import tensorrt as trt

        if self.path is not None and isinstance(self._cache, trt.ITimingCache):
            atomic_write_bytes(self.path, bytes(memoryview(self._cache.serialize())))


def build_engine(
    onnx_bytes: bytes,
    precision: str = "fp32",
    workspace_mb: int = 1024,
    timing_cache: SharedTimingCache | None = None,
    batch_range: tuple[int, int, int] | None = None,
    source: str = "model",
) -> bytes:
    """Parse ONNX, build and return a serialized engine.

    ``batch_range`` (min, opt, max) adds an optimisation profile for a dynamic batch dimension.
    """
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"node {err.node_name() or err.node()} ({err.node_operator()}): {err.desc()}")
        raise UserError(f"TensorRT's ONNX parser rejected {source}: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 10.x only
        config.set_flag(getattr(trt.BuilderFlag, "FP16"))
    if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):  # 10.x: a QDQ graph's layers run int8 with the flag
        config.set_flag(getattr(trt.BuilderFlag, "INT8"))
    if batch_range is not None:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = list(_dims(tensor.shape))[1:]
            lo, opt, hi = ([b, *dims] for b in batch_range)
            profile.set_shape(tensor.name, trt.Dims(lo), trt.Dims(opt), trt.Dims(hi))
        config.add_optimization_profile(profile)
    if timing_cache is not None:
        timing_cache.attach(config)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT could not build an engine for {source}; its log above says why")
    if timing_cache is not None:
        timing_cache.save()
    return bytes(memoryview(plan))


def engine_platform() -> dict[str, str]:
    """What a serialized engine is bound to: TensorRT refuses plans from another version, and
    tactics chosen for one GPU model are wrong (or invalid) on another."""
    require_tensorrt()
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def check_engine_platform(recorded: dict[str, str], here: dict[str, str], source: str) -> None:
    """Refuse an engine built elsewhere, naming where it was built and where it is being run."""
    refuse_other_platform(recorded, here, f"engine {source}", "nas2deploy export")


def save_engine(path: str | os.PathLike[str], engine: bytes) -> None:
    """Write the engine and, beside it (``NAME.engine.json``), the platform it was built on."""
    atomic_write_bytes(path, engine)
    atomic_write_json(f"{path}.json", {"format": "nas2deploy.engine", "version": 1, **engine_platform()})


def load_engine(path: str | os.PathLike[str]) -> bytes:
    """Read an engine, refusing one whose recorded platform differs from this machine's."""
    p = require_file(path, "engine")
    info = Path(f"{p}.json")
    if info.exists():
        recorded = read_json(info, "engine info")
        if not isinstance(recorded, dict):
            raise UserError(f"engine info {info}: not a JSON object")
        check_engine_platform(recorded, engine_platform(), str(p))
    return p.read_bytes()


class TensorRTRunner(Runner):

    def __init__(self, engine: bytes, batch: int = 1, cuda_graph: bool = False, source: str = "engine"):
        require_tensorrt()
        import tensorrt as trt
        import torch

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise UserError(
                f"TensorRT cannot load {source}: it is corrupt or was built for another GPU or TensorRT version "
                f"(this is TensorRT {trt.__version__} on {torch.cuda.get_device_name()}); rebuild it here"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in names:  # inputs first: output shapes depend on them
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(batch if d < 0 else d for d in _dims(self.engine.get_tensor_shape(name)))
                self.context.set_input_shape(name, shape)
                self.inputs[name] = torch.randn(shape, device="cuda").to(self._dtype(name))
        for name in names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = _dims(self.context.get_tensor_shape(name))
                self.outputs[name] = torch.empty(shape, device="cuda", dtype=self._dtype(name))
        for name, tensor in {**self.inputs, **self.outputs}.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.graph: torch.cuda.CUDAGraph | None = None
        if cuda_graph:
            self._launch()  # TensorRT must run once before its launches can be captured
            self.stream.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self._launch()

    def _dtype(self, name: str) -> torch.dtype:
        import numpy as np
        import tensorrt as trt
        import torch

        return torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def _launch(self) -> None:
        import torch

        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise UserError("TensorRT execute_async_v3 failed; its log above says why")

    def _run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._launch()

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape) for name, t in self.inputs.items()}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import torch

        with torch.cuda.stream(self.stream):
            for name, tensor in self.inputs.items():
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(feeds[name])).to(tensor.dtype))
            self._run()
        self.stream.synchronize()
        return {name: t.float().cpu().numpy() for name, t in self.outputs.items()}

    def time_runs(self, n: int) -> list[float]:
        return cuda_time_runs(self._run, n, self.stream)

    def close(self) -> None:
        self.stream.synchronize()
        self.graph = None
        del self.context, self.engine  # the context must go before its engine


# One shared timing cache per cache path for the life of the process (reference.md section 4).
_timing_caches: dict[str, SharedTimingCache] = {}


class TensorRTBackend(Backend):
    name = "tensorrt"
    devices = ("cuda",)
    #: int8 from a QDQ graph with symmetric int8 activations (explicit quantisation), which
    #: ``export --precision int8`` quantises on real images; a lone op cannot be calibrated so,
    #: and is not profiled at int8 here.
    precisions = ("fp32", "fp16", "int8")
    suffixes = (".engine", ".onnx")
    uses_precision = True
    options = (
        BackendOption("workspace_mb", "int", 1024, "TensorRT builder workspace limit (MB).", low=1, high=2**20),
        CUDA_GRAPH,
        BackendOption("timing_cache", "str", None, "The shared timing cache's file (the command chooses it).",
                      recorded=False, command_line=False),
    )

    def check_available(self, settings: BackendSettings) -> None:
        require_tensorrt()  # TensorRT first, then the GPU

    def version(self) -> str:
        return tensorrt_version()

    def prepare(self, settings: BackendSettings, artifact: TorchModule) -> OnnxModel:
        """The ONNX graph the engine is built from: fp16 comes from an fp16 graph (TensorRT 11
        is strongly typed)."""
        from nas2deploy.backends.onnx import export_onnx

        if settings.precision == "int8":
            raise UserError("--backend tensorrt --precision int8 builds from a graph quantised on real images: export "
                            "one (nas2deploy export --precision int8 --calibration-data D) and bench its model.engine")
        return OnnxModel(export_onnx(artifact.module, (settings.batch, *artifact.input_shape), settings.precision),
                         artifact.source)

    def open(self, settings: BackendSettings, artifact: Artifact) -> Runner:
        from nas2deploy.backends.onnx import read_model

        if isinstance(artifact, ModelFile):
            if artifact.path.suffix == ".engine":
                artifact = EngineModel(load_engine(artifact.path), artifact.source)
            elif artifact.path.suffix == ".onnx":
                artifact = read_model(artifact)
            else:
                raise UserError(f"{artifact.source}: TensorRT runs {' and '.join(self.suffixes)} files")
        if isinstance(artifact, TorchModule):
            artifact = self.prepare(settings, artifact)
        if isinstance(artifact, OnnxModel):
            path = settings.options["timing_cache"]
            cache = _timing_caches.setdefault(path or "", SharedTimingCache(path))
            artifact = EngineModel(build_engine(artifact.data, settings.precision, settings.options["workspace_mb"], cache,
                                                source=artifact.source), artifact.source)
        return TensorRTRunner(artifact.data, settings.batch, settings.options["cuda_graph"], source=artifact.source)

    def deploy(self, settings: BackendSettings, artifact: TorchModule, out: Path,
               batch_range: tuple[int, int, int] | None = None,
               quantized: OnnxModel | None = None) -> tuple[Artifact, dict[str, Any]]:
        """``model.engine`` (and its platform, ``model.engine.json``), built with a timing cache kept in
        the export folder, from an ONNX graph of the engine's precision (int8: ``quantized``)."""
        from nas2deploy.backends.onnx import export_onnx

        if settings.precision == "int8":
            assert quantized is not None, "export quantises the graph before an int8 engine is built"
            graph = quantized.data
        else:
            graph = export_onnx(artifact.module, (settings.batch, *artifact.input_shape), settings.precision,
                                batch_range is not None)
        engine = build_engine(graph, settings.precision, settings.options["workspace_mb"], SharedTimingCache(out / "timing.cache"),
                              batch_range, source="model.onnx")
        save_engine(out / "model.engine", engine)
        return EngineModel(engine, "model.engine"), {"file": "model.engine", "precision": settings.precision,
                                                     "bytes": len(engine),
                                                     "what": f"TensorRT engine ({settings.precision}); model.engine.json: its platform"}
