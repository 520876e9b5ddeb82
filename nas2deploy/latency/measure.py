"""Measuring on a table's own device: the settings and harness a table was measured with, the
drift of the machine since (its reference op re-timed), and whole networks timed like its ops.
Used by ``lut validate``, ``export`` (prediction against measurement) and ``derive --measure``.

The drift factor uses the median of the last few reference measurements (``DriftTracker``):
machine drift is slow (~10% over minutes), while a single re-measurement can catch a passing
disturbance (seen here: single factors of 1.14-1.18 while the networks measured next to them had
not slowed down).
"""

from __future__ import annotations

import numpy as np

from nas2deploy.backends import BackendSettings, TorchModule, open_runner
from nas2deploy.backends.timing import TimingSettings, measure
from nas2deploy.errors import UserError
from nas2deploy.latency.prefetch import module_of
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.ops import OpSpec


def settings_from_table(table: LatencyTable) -> BackendSettings:
    """The backend settings a table was measured with; refuses a table from another device."""
    m = table.measurement
    if not m:
        raise UserError(f"latency table {table.name}: no measurement metadata")
    if m.get("device_name") is None:
        raise UserError(f"latency table {table.name} records no device (a synthetic or hand-made table): "
                        "no measurement can be compared with it; profile the device")
    settings = BackendSettings.from_measurement(m)
    settings.check_available()  # before naming the device: a CUDA table on a machine without one
    here = settings.device_name()
    if m.get("device_name") != here:
        raise UserError(
            f"latency table {table.name} was measured on {m.get('device_name')!r}, this machine is {here!r}: "
            "validate it on the device it describes, or profile this one"
        )
    return settings


class DriftTracker:
    """Re-measures a table's reference op and reports the smoothed drift factor."""

    def __init__(self, table: LatencyTable, settings: BackendSettings, timing: TimingSettings, window: int = 5):
        if table.reference is None:
            raise UserError(f"latency table {table.name} has no reference-op measurement; profile it again")
        self.table, self.timing, self.window = table, timing, window
        spec = OpSpec.from_dict(table.reference["spec"])
        self.runner = open_runner(settings, module_of(spec))  # as it was profiled
        self.history: list[float] = []

    def update(self) -> float:
        self.history.append(measure(self.runner, self.timing).stats.median_ms)
        return self.table.drift(float(np.median(self.history[-self.window:])))

    def __enter__(self) -> DriftTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.close()


def timing_from_table(table: LatencyTable) -> TimingSettings:
    """The harness settings a table was measured with, so later measurements are comparable."""
    return TimingSettings(**table.meta.get("timing", {}))  # validated when the table was loaded


def measure_network(settings: BackendSettings, arch: Network, timing: TimingSettings, source: str = "network") -> float:
    """Median latency (ms) of a whole network, built and run on the settings' backend."""
    with open_runner(settings, TorchModule(arch.build(), arch.input_shape, source)) as runner:
        return measure(runner, timing).stats.median_ms
