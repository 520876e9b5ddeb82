"""Backends: one module per runtime (loaders, runner, availability, version, what it records),
the registry of them, one settings value and one way to open a runner on any artifact.

``open_runner(settings, artifact)`` is what profiling, table validation, ``bench`` and the
export's checks call; the backend loads the artifact as far as it needs (a torch module is
exported to ONNX for ONNX Runtime, built into an engine for TensorRT). Heavy optional stacks
(onnxruntime, tensorrt, CUDA) are imported only inside their backend's functions, so the package
imports and works without them.
"""

from __future__ import annotations

from nas2deploy.backends.base import Artifact, EngineModel, ModelFile, OnnxModel, Runner, TorchModule
from nas2deploy.backends.registry import BACKENDS, INDEPENDENT_CHECKER, ONNX_CHECKER, REFERENCE
from nas2deploy.backends.settings import DEVICES, PRECISIONS, BackendSettings


def open_runner(settings: BackendSettings, artifact: Artifact) -> Runner:
    """A runner for ``artifact`` on the settings' backend, device, precision and batch."""
    return settings.open(artifact)


__all__ = ["BACKENDS", "DEVICES", "INDEPENDENT_CHECKER", "ONNX_CHECKER", "PRECISIONS", "REFERENCE", "Artifact", "BackendSettings",
           "EngineModel", "ModelFile", "OnnxModel", "Runner", "TorchModule", "open_runner"]
