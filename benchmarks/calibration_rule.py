"""How the calibration's choice of terms changes out-of-sample fidelity, on the validation records
stored in latency tables (no measurement: the same records, two rules).

- ``richest``: the earlier rule (the richest physical term set: scale + offset +
  per-op, else scale + offset, else scale), reconstructed here as the baseline;
- ``held-out``: ``calibration.fit_calibration`` (the physical term set with the lowest held-out
  error; a richer set only where it is strictly better).

Both are scored by the same 5-fold cross-validation, as ``lut validate`` reports them.

    .venv/bin/python benchmarks/calibration_rule.py latency_tables/*.json
"""

from __future__ import annotations

import argparse
from typing import Callable

from nas2deploy.latency.calibration import _TERMS, MIN_CALIBRATION_SAMPLES, Sample, _least_squares, fit_calibration, unphysical
from nas2deploy.latency.table import Calibration, LatencyTable
from nas2deploy.latency.fidelity import fidelity

Fit = Callable[[list[Sample], float | None], Calibration]


def richest(samples: list[Sample], cheapest_ms: float | None) -> Calibration:
    terms = _TERMS if len(samples) >= MIN_CALIBRATION_SAMPLES else _TERMS[-1:]
    for offset, per_op in terms:
        cal = _least_squares(samples, offset, per_op)
        if unphysical(cal, cheapest_ms, samples) is None:
            return cal
    return cal


def held_out(samples: list[Sample], fit: Fit, cheapest_ms: float | None, folds: int = 5) -> list[float]:
    n = len(samples)
    folds = n if n < 10 else folds
    out = [0.0] * n
    for f in range(folds):
        cal = fit([s for i, s in enumerate(samples) if i % folds != f], cheapest_ms)
        for i in range(f, n, folds):
            out[i] = cal.apply(samples[i].raw_ms, samples[i].n_ops) * samples[i].drift
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+")
    args = ap.parse_args()
    for path in args.tables:
        table = LatencyTable.load(path)
        records = (table.validation or {}).get("records") or []
        if not records:
            print(f"{path}: no validation records")
            continue
        samples = [Sample(r["raw_ms"], r["n_ops"], r["drift"], r["measured_ms"]) for r in records]
        cheapest = min(e.stats.median_ms for e in table.entries.values())
        measured = [s.measured_ms for s in samples]
        rows = {"raw sum": fidelity([s.predicted_ms for s in samples], measured),
                "richest": fidelity(held_out(samples, richest, cheapest), measured),
                "held-out": fidelity(held_out(samples, fit_calibration, cheapest), measured)}
        print(f"{path} ({len(samples)} networks, {table.validation.get('machine') if table.validation else '?'})")
        for name, f in rows.items():
            print(f"  {name:<9} MAPE {f['mape']:5.2f}%  within 10% {f['within_10pct']:5.1f}%  within 5% {f['within_5pct']:5.1f}%"
                  f"  tau {f['kendall_tau']:.3f}")
        for name, fit in (("richest", richest), ("held-out", fit_calibration)):
            c = fit(samples, cheapest)
            print(f"  {name} fit on all: scale {c.scale:.3f}, offset {c.offset_ms:+.4f} ms, per op {c.per_op_ms:+.5f} ms")


if __name__ == "__main__":
    main()
