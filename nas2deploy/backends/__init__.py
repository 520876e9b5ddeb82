"""Backends: one module per runtime (loaders, runner, availability, version, its declared devices,
precisions and options), the registry of them, one settings value and one way to open a runner
on any artifact.

``open_runner(settings, artifact)`` is what profiling, table validation, ``bench`` and the
export's checks call; the backend loads the artifact as far as it needs (a torch module is
exported to ONNX for ONNX Runtime, built into an engine for TensorRT). Heavy stacks (torch,
onnxruntime, tensorrt, CUDA) are imported only inside the backends' functions, so the package
imports quickly and works without the optional ones.
"""

from __future__ import annotations

from nas2deploy.backends.base import (
    Artifact,
    Backend,
    BackendOption,
    EngineModel,
    ModelFile,
    OnnxModel,
    Runner,
    TorchModule,
)
from nas2deploy.backends.registry import (
    BACKENDS,
    INDEPENDENT_CHECKER,
    ONNX_CHECKER,
    REFERENCE,
    declared_options,
    known_devices,
    known_precisions,
    register_backend,
)
from nas2deploy.backends.settings import BackendSettings


def open_runner(settings: BackendSettings, artifact: Artifact) -> Runner:
    """A runner for ``artifact`` on the settings' backend, device, precision and batch."""
    return settings.open(artifact)


__all__ = ["BACKENDS", "INDEPENDENT_CHECKER", "ONNX_CHECKER", "REFERENCE", "Artifact", "Backend", "BackendOption",
           "BackendSettings", "EngineModel", "ModelFile", "OnnxModel", "Runner", "TorchModule", "declared_options",
           "known_devices", "known_precisions", "open_runner", "register_backend"]
