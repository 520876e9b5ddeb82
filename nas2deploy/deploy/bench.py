"""``nas2deploy bench``: a trtexec-style latency summary of any model file (an ONNX model, a
TensorRT engine) on any backend that runs it, through the same runners and timing harness as
profiling and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas2deploy.backends import BACKENDS, BackendSettings, ModelFile, Runner, open_runner
from nas2deploy.backends.timing import TimingSettings, measure
from nas2deploy.errors import UserError
from nas2deploy.fileio import require_file


def open_model(path: Path, settings: BackendSettings) -> Runner:
    from nas2deploy.deploy.export import verify_artifact

    require_file(path, "model")
    verify_artifact(path)
    runs_it = [name for name, backend in BACKENDS.items() if path.suffix in backend.suffixes]
    if not runs_it:
        suffixes = sorted({s for b in BACKENDS.values() for s in b.suffixes})
        raise UserError(f"model {path}: expected a model file ({', '.join(suffixes)})")
    if settings.backend not in runs_it:
        raise UserError(f"model {path}: {path.suffix} files run with --backend {' or '.join(runs_it)}, not {settings.backend}")
    return open_runner(settings, ModelFile(path))


def bench_model(model: str, settings: BackendSettings, timing: TimingSettings, batch_given: bool = False) -> dict[str, Any]:
    """Time ``model``; with ``batch_given`` the settings' batch was asked for, and a model built
    for another batch is refused rather than timed at its own."""
    settings.check_available()
    with open_model(Path(model), settings) as runner:
        batch = next(iter(runner.input_shapes().values()))[0]
        if batch_given and batch != settings.batch:
            raise UserError(f"model {model} was built for batch {batch}: --batch {settings.batch} needs a model exported "
                            f"with --dynamic-batch (or at --batch {settings.batch}); leave --batch out to time batch {batch}")
        stats = measure(runner, timing).stats
    return {"model": model, "settings": settings.describe(), "batch": batch, "timing": stats.to_dict(),
            "throughput_per_s": stats.throughput_per_s(batch)}
