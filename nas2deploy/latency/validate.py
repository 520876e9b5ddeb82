"""How well a table predicts whole networks, and the calibration that closes the gap.

``validate_table`` samples random architectures of the table's space, builds and exports each
whole, measures it end to end with the table's backend and harness, and compares with the
table's prediction. Drift cancels: before each network the table's reference op is measured
again and the prediction is scaled by (reference now / reference in the table). The factor uses
the median of the last few reference measurements (``DriftTracker``): machine drift is slow
(~10% over minutes), while a single re-measurement can catch a passing disturbance (seen here:
single factors of 1.14-1.18 while the networks measured next to them had not slowed down).

Calibration: measured / drift ~= scale * raw + offset_ms + per_op_ms * n_ops, fitted by least
squares on relative error (each row divided by its measured latency, so small and large networks
count alike). The calibrated figures reported are out of sample (5-fold cross-validation, or
leave-one-out below 10 samples), so they say what the fitted table will do on new networks;
the calibration stored in the table is then fitted on all samples.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from nas2deploy.nets import Network
from nas2deploy.backends import BackendSettings
from nas2deploy.backends.base import cpu_name
from nas2deploy.backends.timing import TimingSettings, measure
from nas2deploy.errors import UserError
from nas2deploy.latency.table import Calibration, LatencyTable, now_iso
from nas2deploy.ops import OpSpec

MIN_CALIBRATION_SAMPLES = 4


@dataclass(frozen=True)
class Sample:
    raw_ms: float  # table sum, in table time (no drift applied)
    n_ops: int
    drift: float
    measured_ms: float

    @property
    def predicted_ms(self) -> float:
        return self.raw_ms * self.drift


def settings_from_table(table: LatencyTable) -> BackendSettings:
    """The backend settings a table was measured with; refuses a table from another device."""
    m = table.measurement
    if not m:
        raise UserError(f"latency table {table.name}: no measurement metadata")
    keys = ("backend", "device", "precision", "batch", "threads", "ort_provider", "ort_graph_level", "workspace_mb", "cuda_graph")
    settings = BackendSettings(**{k: m[k] for k in keys if k in m})
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
        self.runner = settings.open(spec.build_standalone(), (spec.cin, spec.h, spec.w), source="reference op")
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
    return TimingSettings(**table.meta.get("timing", {}))


def measure_arch(settings: BackendSettings, arch: Network, timing: TimingSettings, source: str = "network") -> float:
    """Median latency (ms) of a whole network, built, exported and run on the settings' backend."""
    with settings.open(arch.build(), (3, arch.input_size, arch.input_size), source=source) as runner:
        return measure(runner, timing).stats.median_ms


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either variable handled), O(n^2): n is a few hundred at most."""
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else 0.0


def fidelity(predicted: list[float], measured: list[float]) -> dict[str, float]:
    """Percent errors and rank agreement between predictions and measurements."""
    p, m = np.asarray(predicted), np.asarray(measured)
    ape = np.abs(p - m) / m * 100
    pearson = float(np.corrcoef(p, m)[0, 1]) if len(p) > 1 and p.std() > 0 and m.std() > 0 else 0.0
    return {
        "mape": round(float(ape.mean()), 3),
        "median_ape": round(float(np.median(ape)), 3),
        "max_ape": round(float(ape.max()), 3),
        "within_5pct": round(float((ape <= 5).mean() * 100), 2),
        "within_10pct": round(float((ape <= 10).mean() * 100), 2),
        "kendall_tau": round(kendall_tau(list(p), list(m)), 4),
        "pearson_r": round(pearson, 4),
        "mean_signed_pct": round(float(((p - m) / m * 100).mean()), 3),
    }


#: Calibration models, richest first: (scale, offset, per-op), (scale, offset), (scale).
_TERMS = ((True, True), (True, False), (False, False))


def _least_squares(samples: list[Sample], offset: bool, per_op: bool) -> Calibration:
    """Least squares on relative error with the chosen terms."""
    y = np.array([s.measured_ms / s.drift for s in samples])
    columns = [np.array([s.raw_ms for s in samples])]
    columns += [np.ones(len(samples))] if offset else []
    columns += [np.array([s.n_ops for s in samples], float)] if per_op else []
    coef, *_ = np.linalg.lstsq(np.stack(columns, axis=1) / y[:, None], np.ones_like(y), rcond=None)
    values = [float(c) for c in coef]
    return Calibration(values[0], values[1] if offset else 0.0, values[-1] if per_op else 0.0, len(samples))


def fit_calibration(samples: list[Sample], cheapest_ms: float | None = None) -> Calibration:
    """The richest physical calibration the samples support: scale + offset + per-op term, else
    scale + offset, else scale alone (always physical: a positive scale). Physical means what
    ``unphysical`` checks; ``cheapest_ms`` is the table's fastest op, which the per-op term must
    not make free. Below ``MIN_CALIBRATION_SAMPLES`` networks only a scale is fitted."""
    terms = _TERMS if len(samples) >= MIN_CALIBRATION_SAMPLES else _TERMS[-1:]
    for offset, per_op in terms:
        cal = _least_squares(samples, offset, per_op)
        if unphysical(cal, cheapest_ms, samples) is None:
            return cal
    return cal


def unphysical(calibration: Calibration, cheapest_ms: float | None, samples: list[Sample]) -> str | None:
    """Why a calibration must not be stored, or None: it needs a positive scale (else a slower
    op predicts a faster network), a positive cost for the table's fastest op (scale x latency +
    per_op_ms), and positive predictions for the networks it was fitted on."""
    if not calibration.scale > 0:
        return f"its scale is {calibration.scale:.4g}: a slower op would predict a faster network"
    if cheapest_ms is not None and calibration.op_cost(cheapest_ms) <= 0:
        return (f"per_op_ms {calibration.per_op_ms:.4g} gives the table's fastest op ({cheapest_ms:.4g} ms) a cost of "
                f"{calibration.op_cost(cheapest_ms):.4g} ms")
    if any(calibration.apply(s.raw_ms, s.n_ops) <= 0 for s in samples):
        return "it predicts a non-positive latency for a measured network"
    return None


def cross_validated(samples: list[Sample], folds: int = 5, cheapest_ms: float | None = None) -> list[float]:
    """Calibrated predictions where each sample's calibration was fitted without it."""
    n = len(samples)
    folds = n if n < 10 else folds
    out = [0.0] * n
    for f in range(folds):
        held = [i for i in range(n) if i % folds == f]
        cal = fit_calibration([s for i, s in enumerate(samples) if i % folds != f], cheapest_ms)
        for i in held:
            out[i] = cal.apply(samples[i].raw_ms, samples[i].n_ops) * samples[i].drift
    return out


def validate_table(
    table: LatencyTable,
    samples: int = 100,
    seed: int = 0,
    timing: TimingSettings | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Measure ``samples`` random networks, report raw and calibrated fidelity, store the fit."""
    if samples < 2:
        raise UserError("--samples must be at least 2 to compare predictions with measurements")
    settings = settings_from_table(table)
    timing = timing or timing_from_table(table)
    space = table.space()
    rng = random.Random(seed)
    archs = [space.sample_arch(rng) for _ in range(samples)]
    table.require([s for a in archs for s in a.op_specs()], "the sampled architectures")
    start = time.perf_counter()
    records: list[Sample] = []
    with DriftTracker(table, settings, timing) as tracker:
        for i, arch in enumerate(archs):
            drift = tracker.update()  # interleaved with the networks: drift cancels
            measured = measure_arch(settings, arch, timing, f"sampled network {i}")
            pred = table.predict(arch)
            records.append(Sample(pred.raw_ms, pred.n_ops, drift, measured))
            if progress:
                progress(i + 1, samples, f"{measured:.3f} ms")
    measured_ms = [s.measured_ms for s in records]
    cheapest = min(e.stats.median_ms for e in table.entries.values())
    calibration = fit_calibration(records, cheapest)
    report = {
        "samples": samples,
        "seed": seed,
        "date": now_iso(),
        "machine": cpu_name() if settings.device == "cpu" else settings.device_name(),
        "wall_s": round(time.perf_counter() - start, 1),
        "raw": fidelity([s.predicted_ms for s in records], measured_ms),
        "calibrated": fidelity(cross_validated(records, cheapest_ms=cheapest), measured_ms),
        "calibration": calibration.to_dict(),
        "calibrated_is": "out-of-sample (cross-validated) predictions",
        "records": [
            {"raw_ms": round(s.raw_ms, 5), "n_ops": s.n_ops, "drift": round(s.drift, 4), "measured_ms": round(s.measured_ms, 5)}
            for s in records
        ],
    }
    refused = unphysical(calibration, cheapest, records)
    if refused:  # stored tables must stay loadable and physical: keep none rather than this fit
        report["calibration"] = None
        report["calibration_refused"] = refused
    table.calibration = None if refused else calibration
    table.validation = report
    table.save()
    return report
