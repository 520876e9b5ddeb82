"""How well a table predicts whole networks (``lut validate``), and the calibration it then stores.

``validate_table`` draws random architectures of the table's space (the caller passes the
space's sampler), builds each whole, measures it end to end with the table's backend and harness
(``latency/measure.py``), and compares with the table's prediction. The shipped architectures
whose every op the table holds (DenseNAS-A/B/C in the 224 space) are measured too and reported
apart: they are what people deploy, and a random sample can validate while they miss (seen on an
H200: random networks within 10%, DenseNAS-A/C 25-28% off). Drift cancels: before each
network the table's reference op is measured again and the prediction is scaled by (reference
now / reference in the table). The calibrated figures reported are out of sample
(``latency/calibration.py``), so they say what the fitted table will do on new networks; the
calibration stored in the table is then fitted on all samples.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Callable

import numpy as np

from nas2deploy.backends.base import cpu_name
from nas2deploy.backends.timing import TimingSettings
from nas2deploy.errors import UserError
from nas2deploy.fileio import claim_file
from nas2deploy.latency.calibration import Sample, cross_validated, fit_calibration, unphysical
from nas2deploy.latency.measure import DriftTracker, measure_network, settings_from_table, timing_from_table
from nas2deploy.latency.table import Calibration, LatencyTable, now_iso
from nas2deploy.nets import Network, load_arch, named_archs


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either variable handled); 0 where either side is constant, which
    scipy leaves undefined."""
    from scipy.stats import kendalltau  # scipy's import costs the CLI's start-up: only when validating

    tau = float(kendalltau(x, y).statistic)
    return 0.0 if math.isnan(tau) else tau


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


def shipped_networks(table: LatencyTable) -> list[Network]:
    """The shipped architectures (``nas2deploy arch list``) whose every op the table holds."""
    archs = (load_arch(name) for name in named_archs())
    return [arch for arch in archs if not table.missing(arch.op_specs())]


def _shipped_row(arch: Network, drift: float, measured_ms: float, table: LatencyTable,
                 calibration: Calibration | None) -> dict[str, Any]:
    """A shipped network's measurement and the table's raw and calibrated errors (drift applied)."""
    specs = arch.op_specs()
    raw = sum(table.latency(s) for s in specs) * drift
    row = {"name": arch.name, "measured_ms": round(measured_ms, 5), "raw_ms": round(raw, 5),
           "raw_error_pct": round(100 * (raw / measured_ms - 1), 2)}
    if calibration is not None:
        calibrated = calibration.apply(raw / drift, len(specs)) * drift
        row.update(calibrated_ms=round(calibrated, 5), calibrated_error_pct=round(100 * (calibrated / measured_ms - 1), 2))
    return row


def across_range(sample: Callable[[random.Random], Network], table: LatencyTable, count: int, rng: random.Random,
                 pool_factor: int = 50) -> list[Network]:
    """``count`` distinct networks whose predicted latencies spread evenly over the range the
    sampler reaches: from a pool of ``pool_factor x count`` draws, the unused network nearest
    each of ``count`` evenly spaced latencies from the pool's fastest to its slowest. Draws that
    are uniform over choices pile up in the middle of the range (a network's latency is a sum of
    many independent choices), so the ends, where budgets often sit, would be barely validated."""
    pool: dict[Network, float] = {}
    for _ in range(pool_factor * count):
        arch = sample(rng)
        if arch not in pool:
            table.require(arch.op_specs(), "the sampled architectures")
            pool[arch] = table.predict(arch).raw_ms
    ordered = sorted(pool.items(), key=lambda item: item[1])
    low, high = ordered[0][1], ordered[-1][1]
    used: set[int] = set()
    for k in range(min(count, len(ordered))):
        target = low + (high - low) * k / max(count - 1, 1)
        nearest = min((i for i in range(len(ordered)) if i not in used), key=lambda i: abs(ordered[i][1] - target))
        used.add(nearest)
    return [ordered[i][0] for i in sorted(used)]


def validate_table(
    table: LatencyTable,
    sample: Callable[[random.Random], Network],
    samples: int = 100,
    seed: int = 0,
    timing: TimingSettings | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    spread: bool = False,
) -> dict[str, Any]:
    """Measure ``samples`` networks drawn by ``sample`` (the table's space's sampler; with
    ``spread``, spread over the latency range by ``across_range``), report raw and calibrated
    fidelity, store the fit."""
    if samples < 2:
        raise UserError("--samples must be at least 2 to compare predictions with measurements")
    if table.path is not None:  # the fit is stored in the table: fail now, not after the measurements
        claim_file(table.path, force=True, flag="table")
    settings = settings_from_table(table)
    timing = timing or timing_from_table(table)
    rng = random.Random(seed)
    archs = across_range(sample, table, samples, rng) if spread else [sample(rng) for _ in range(samples)]
    table.require([s for a in archs for s in a.op_specs()], "the sampled architectures")
    start = time.perf_counter()
    records: list[Sample] = []
    with DriftTracker(table, settings, timing) as tracker:
        for i, arch in enumerate(archs):
            drift = tracker.update()  # interleaved with the networks: drift cancels
            measured = measure_network(settings, arch, timing, f"sampled network {i}")
            pred = table.predict(arch)
            records.append(Sample(pred.raw_ms, pred.n_ops, drift, measured))
            if progress:
                progress(i + 1, len(archs), f"{measured:.3f} ms")
        shipped = [(arch, tracker.update(), measure_network(settings, arch, timing, f"shipped network {arch.name}"))
                   for arch in shipped_networks(table)]
    measured_ms = [s.measured_ms for s in records]
    cheapest = min(e.stats.median_ms for e in table.entries.values())
    calibration = fit_calibration(records, cheapest)
    raw, calibrated = fidelity([s.predicted_ms for s in records], measured_ms), \
        fidelity(cross_validated(records, cheapest_ms=cheapest), measured_ms)
    report: dict[str, Any] = {
        "samples": len(archs),
        "seed": seed,
        "sampler": "across the latency range" if spread else "uniform over choices",
        "date": now_iso(),
        "machine": cpu_name() if settings.device == "cpu" else settings.device_name(),
        "wall_s": round(time.perf_counter() - start, 1),
        "raw": raw,
        "calibrated": calibrated,
        "calibration": calibration.to_dict(),
        "calibrated_is": "out-of-sample (cross-validated) predictions",
        "records": [
            {"raw_ms": round(s.raw_ms, 5), "n_ops": s.n_ops, "drift": round(s.drift, 4), "measured_ms": round(s.measured_ms, 5)}
            for s in records
        ],
    }
    refused = unphysical(calibration, cheapest, records)
    if not refused and calibrated["mape"] > raw["mape"]:
        refused = (f"out of sample it errs more than the raw op sum (mean {calibrated['mape']:.2f}% against "
                   f"{raw['mape']:.2f}%)")
    if refused:  # stored tables must stay loadable and physical: keep none rather than this fit
        report["calibration"] = None
        report["calibration_refused"] = refused
    report["shipped"] = [_shipped_row(arch, drift, measured, table, None if refused else calibration)
                         for arch, drift, measured in shipped]
    table.calibration = None if refused else calibration
    table.validation = report
    table.save()
    return report
