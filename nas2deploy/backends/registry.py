"""The backends nas2deploy knows, by name: each module's backend, registered here, and any that
an installed package names under the entry-point group ``nas2deploy.backends`` (a ``Backend``, or
a class or factory that makes one); ``register_backend`` adds one at run time (a test, a script)."""

from __future__ import annotations

from nas2deploy.backends.aoti import AOTIBackend
from nas2deploy.backends.base import Backend, BackendOption
from nas2deploy.backends.onnx_reference import OnnxReferenceBackend
from nas2deploy.backends.onnxruntime import OnnxRuntimeBackend
from nas2deploy.backends.pytorch import TorchBackend
from nas2deploy.backends.tensorrt import TensorRTBackend
from nas2deploy.plugins import load_entry_points

BACKENDS: dict[str, Backend] = {}
#: The implementation whose fp32 CPU outputs are the accuracy reference of every export.
REFERENCE = TorchBackend.name
#: The backend every exported ONNX file is checked with, on the CPU when it is not deployed.
ONNX_CHECKER = OnnxRuntimeBackend.name
#: The implementation that shares no kernel with PyTorch or ONNX Runtime (export checks a few inputs).
INDEPENDENT_CHECKER = OnnxReferenceBackend.name
#: The entry-point group under which installed packages name their backends.
ENTRY_POINTS = "nas2deploy.backends"


def register_backend(backend: Backend) -> Backend:
    """Make ``backend`` known by its name: its options become flags of ``profile``, ``export`` and
    ``bench``, its devices and precisions valid choices, its identity options part of what a
    table must match. An option it shares by name with another backend must be declared alike."""
    for option in backend.options:
        other = declared_options().get(option.name)
        if other is not None and other != option:
            raise ValueError(f"backend {backend.name}: option {option.name} differs from the one another backend declares")
    BACKENDS[backend.name] = backend
    return backend


def declared_options() -> dict[str, BackendOption]:
    """Every registered backend's options by name (backends that share one declare it alike)."""
    return {o.name: o for b in BACKENDS.values() for o in b.options}


def known_devices() -> tuple[str, ...]:
    """Every device some registered backend runs on, in registration order."""
    return tuple(dict.fromkeys(d for b in BACKENDS.values() for d in b.devices))


def known_precisions() -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for b in BACKENDS.values() for p in b.precisions))


for _backend in (OnnxRuntimeBackend(), TorchBackend(), TensorRTBackend(), OnnxReferenceBackend(), AOTIBackend()):
    register_backend(_backend)
load_entry_points(ENTRY_POINTS, Backend, register_backend)
