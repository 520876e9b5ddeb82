"""``nas2deploy bench``: a trtexec-style latency summary of any ONNX model or TensorRT engine,
through the same runners and timing harness as profiling and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas2deploy.backends import BackendSettings, Runner
from nas2deploy.backends.timing import TimingSettings, measure
from nas2deploy.errors import UserError


def open_model(path: Path, settings: BackendSettings) -> Runner:
    from nas2deploy.deploy.export import verify_artifact

    if not path.is_file():
        raise UserError(f"model {path}: no such file")
    verify_artifact(path)
    if path.suffix == ".engine":
        if settings.backend != "tensorrt":
            raise UserError(f"model {path}: a TensorRT engine runs only with --backend tensorrt")
        from nas2deploy.backends.tensorrt_runner import TensorRTRunner, load_engine

        return TensorRTRunner(load_engine(path), settings.batch, settings.cuda_graph, source=str(path))
    if path.suffix != ".onnx":
        raise UserError(f"model {path}: expected an .onnx model or a TensorRT .engine")
    if settings.backend == "torch":
        raise UserError(f"model {path}: --backend torch runs PyTorch modules, not ONNX files; use onnxruntime or tensorrt")
    from nas2deploy.deploy.onnx_export import check_onnx

    return settings.open_onnx(check_onnx(path.read_bytes(), str(path)), str(path))


def bench_model(model: str, settings: BackendSettings, timing: TimingSettings) -> dict[str, Any]:
    settings.check_available()
    with open_model(Path(model), settings) as runner:
        stats = measure(runner, timing).stats
        batch = next(iter(runner.input_shapes().values()))[0]
    return {"model": model, "settings": settings.describe(), "batch": batch, "timing": stats.to_dict(),
            "throughput_per_s": batch * 1000 / stats.median_ms}
