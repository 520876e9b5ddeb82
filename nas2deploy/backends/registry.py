"""The backends nas2deploy knows, by name: one module each, one line here."""

from __future__ import annotations

from nas2deploy.backends.aoti import AOTIBackend
from nas2deploy.backends.base import Backend
from nas2deploy.backends.onnx_reference import OnnxReferenceBackend
from nas2deploy.backends.onnxruntime import OnnxRuntimeBackend
from nas2deploy.backends.pytorch import TorchBackend
from nas2deploy.backends.tensorrt import TensorRTBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (OnnxRuntimeBackend(), TorchBackend(), TensorRTBackend(),
                                                     OnnxReferenceBackend(), AOTIBackend())}
#: The implementation whose fp32 CPU outputs are the accuracy reference of every export.
REFERENCE = TorchBackend.name
#: The backend every exported ONNX file is checked with, on the CPU when it is not deployed.
ONNX_CHECKER = OnnxRuntimeBackend.name
#: The implementation that shares no kernel with PyTorch or ONNX Runtime (export checks a few inputs).
INDEPENDENT_CHECKER = OnnxReferenceBackend.name
