"""The calibration that closes the gap between a table's op sum and whole networks.

measured / drift ~= scale * raw + offset_ms + per_op_ms * n_ops, fitted by least squares on
relative error (each row divided by its measured latency, so small and large networks count
alike). Which terms are used is chosen by out-of-sample error among the sets that stay physical
(``unphysical``): a richer fit only where it predicts new networks better, since a per-op or
offset term fitted to a narrow sample can extrapolate badly (an offset of -0.58 ms with a
negative scale was once stored for a GPU table). The calibrated figures that ``lut validate``
reports are out of sample too (``cross_validated``: 5-fold, or leave-one-out below 10 samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas2deploy.latency.table import Calibration

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
    """The calibration whose terms predict held-out networks best: scale alone, scale + offset,
    or scale + offset + per-op term, each fitted on all samples; a term set that is unphysical on
    all samples or in any fold is not a candidate, and a richer set must be strictly better out of
    sample. Scale alone (a positive scale) is always physical. ``cheapest_ms`` is the table's
    fastest op, which the per-op term must not make free. Below ``MIN_CALIBRATION_SAMPLES``
    networks only a scale is fitted."""
    if len(samples) < MIN_CALIBRATION_SAMPLES:
        return _least_squares(samples, *_TERMS[-1])
    best, best_error = _least_squares(samples, *_TERMS[-1]), _held_out_error(samples, _TERMS[-1], cheapest_ms)
    for terms in reversed(_TERMS[:-1]):  # simplest first: a richer set must beat the simpler one
        cal = _least_squares(samples, *terms)
        if unphysical(cal, cheapest_ms, samples) is not None:
            continue
        error = _held_out_error(samples, terms, cheapest_ms)
        if error < best_error:
            best, best_error = cal, error
    return best


def _held_out_error(samples: list[Sample], terms: tuple[bool, bool], cheapest_ms: float | None) -> float:
    """Mean relative error of ``terms`` fitted without each fold; infinite when a fold's fit is
    unphysical (5-fold, or leave-one-out below 10 samples)."""
    n = len(samples)
    folds = n if n < 10 else 5
    errors = []
    for f in range(folds):
        train = [s for i, s in enumerate(samples) if i % folds != f]
        cal = _least_squares(train, *terms)
        if unphysical(cal, cheapest_ms, train) is not None:
            return float("inf")
        errors += [abs(cal.apply(s.raw_ms, s.n_ops) * s.drift / s.measured_ms - 1)
                   for i, s in enumerate(samples) if i % folds == f]
    return float(np.mean(errors))


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
