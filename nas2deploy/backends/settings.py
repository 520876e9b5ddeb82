"""One value that says where and how a model runs: backend, device, precision, batch, threads and
the backend's own options. It checks them against what the backend declares, checks the
environment, opens runners, and describes the measurement for a latency table's metadata; the
fields a table records and matches on, and how it reads them back, come from the same
declarations (``measurement_rules``, ``identity_fields``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from nas2deploy import __version__
from nas2deploy.backends.base import OPSET, Artifact, Backend, BackendOption, Runner
from nas2deploy.backends.registry import BACKENDS, declared_options, known_devices, known_precisions
from nas2deploy.errors import UserError
from nas2deploy.validate import Field

#: What every backend's settings hold (their command-line flags are declared once, in ``cli.common``).
COMMON_FIELDS = ("backend", "device", "precision", "batch", "threads")
#: Measurement fields that must agree, besides the backends' ``identity`` options, before two
#: tables may be merged or compared.
IDENTITY = ("backend", "backend_version", "device", "device_name", "precision", "batch", "threads", "onnx_opset")


@dataclass(frozen=True)
class BackendSettings:
    backend: str = "onnxruntime"
    device: str = "cpu"
    precision: str = "fp32"
    batch: int = 1
    #: CPU threads, pinned and recorded. One by default: on a small machine a run that uses every
    #: core competes with everything else there (``benchmarks/README.md``: 2 threads on 2 cores
    #: varied by up to 45% between repeats, 1 thread by under 2%); pass more to measure
    #: multi-threaded inference.
    threads: int = 1
    #: The backend's own options by name (``Backend.options``); those left out take their
    #: defaults. An option of another backend is refused unless it has that backend's default
    #: (a command passes every flag it declares).
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; valid backends: {', '.join(BACKENDS)}")
        impl = self.impl
        if self.device not in known_devices():
            raise UserError(f"unknown device {self.device!r}; valid devices: {', '.join(known_devices())}")
        if self.precision not in known_precisions():
            raise UserError(f"unknown precision {self.precision!r}; valid precisions: {', '.join(known_precisions())}")
        if self.device not in impl.devices:
            object.__setattr__(self, "device", impl.devices[0])  # TensorRT only runs on NVIDIA GPUs
        if type(self.batch) is not int or type(self.threads) is not int or self.batch < 1 or self.threads < 1:
            raise UserError("--batch and --threads must be whole numbers of at least 1")
        impl.check_precision(self)
        object.__setattr__(self, "options", own_options(impl, dict(self.options)))
        impl.check_options(self)

    @property
    def impl(self) -> Backend:
        """The backend's registered object (``nas2deploy.backends.registry``)."""
        return BACKENDS[self.backend]

    def option(self, name: str) -> Any:
        return self.options[name]

    def check_available(self) -> None:
        """Fail early, with the install hint, when the requested stack is missing (the
        backend's own stack first, then the device it would run on)."""
        self.impl.check_available(self)
        self.impl.check_device(self.device)

    def device_name(self) -> str:
        return self.impl.device_name(self.device)

    def backend_version(self) -> str:
        return self.impl.version()

    def describe(self) -> dict[str, Any]:
        """What identifies a measurement: tables measured under different values do not mix."""
        import torch

        return {
            "backend": self.backend, "device": self.device, "precision": self.precision, "batch": self.batch,
            "threads": self.threads, **self.impl.recorded(self), "backend_version": self.backend_version(),
            "device_name": self.device_name(), "torch_version": str(torch.__version__), "onnx_opset": OPSET,
            "nas2deploy_version": __version__,
        }

    def open(self, artifact: Artifact) -> Runner:
        """A runner for ``artifact`` on this backend, loading it as far as the backend needs."""
        return self.impl.open(self, artifact)

    @staticmethod
    def from_measurement(measurement: Mapping[str, Any]) -> BackendSettings:
        """The settings a table's measurement metadata describes (its backend's recorded options
        included), so a later measurement runs as the table's did."""
        impl = BACKENDS.get(str(measurement.get("backend")))
        options = {o.name: measurement[o.name] for o in (impl.options if impl else ()) if o.recorded and o.name in measurement}
        return BackendSettings(**{k: measurement[k] for k in COMMON_FIELDS if k in measurement}, options=options)


def own_options(impl: Backend, given: dict[str, Any]) -> dict[str, Any]:
    """``impl``'s options: those given, checked, and the rest at their defaults. An option that
    another backend declares is refused when it is set to anything but its default (an option
    must never be silently ignored); one that no backend declares is refused too."""
    declared = {o.name: o for o in impl.options}
    for name, value in given.items():
        if name in declared:
            continue
        others = [b for b in BACKENDS.values() if any(o.name == name for o in b.options)]
        if not others:
            raise UserError(f"no backend has an option {name!r}")
        option = next(o for o in others[0].options if o.name == name)
        if value != option.default:
            names = " or ".join(b.name for b in others)
            raise UserError(f"{option.flag} applies to --backend {names} only; --backend {impl.name} would ignore it: "
                            f"leave {option.flag} out")
    return {name: o.check(given[name], impl.name) if name in given else o.default for name, o in declared.items()}


def identity_fields() -> tuple[str, ...]:
    """Measurement fields that must agree before two tables may be merged or compared: the
    common ones and every registered backend's ``identity`` options."""
    return IDENTITY + tuple(name for name, o in declared_options().items() if o.identity)


def measurement_rules() -> dict[str, Callable[[Field], Any]]:
    """How each field of a table's measurement metadata is read: the common ones, and each
    registered backend's recorded options by their declaration."""
    text: Callable[[Field], Any] = lambda f: f.str(max_len=1024)  # noqa: E731
    rules: dict[str, Callable[[Field], Any]] = {
        "backend": lambda f: f.str(tuple(BACKENDS)), "device": lambda f: f.str(known_devices()),
        "precision": lambda f: f.str(known_precisions()), "batch": lambda f: f.int(1, 65536),
        "threads": lambda f: f.int(1, 4096), "device_name": text, "backend_version": text, "torch_version": text,
        "onnx_opset": lambda f: f.int(1, 1000), "nas2deploy_version": text,
    }
    for name, option in declared_options().items():
        rules[name] = option.read
    return rules


__all__ = ["BackendOption", "BackendSettings", "identity_fields", "measurement_rules"]
