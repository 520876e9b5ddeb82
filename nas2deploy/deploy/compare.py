"""Compare one runtime's outputs with a reference's, as Polygraphy's comparator does: the runners
produce outputs, this module only measures how far apart they are and whether that passes.

Thresholds by precision (issue 4):

- fp32: element-wise ``|candidate - reference| <= atol + rtol * |reference|`` with
  atol = rtol = 1e-4 (numpy's ``allclose`` rule), and every top-1 class the same.
- fp16: the mean absolute error at most 1e-2 and top-1 agreement at least 99%; element-wise
  bounds are meaningless at fp16's 3 significant digits.

Besides pass or fail the report gives the smallest tolerance that would have passed
(``min_tolerance``: the smallest t with ``|d| <= t + t * |reference|`` everywhere), so a user can
see how much room is left, and the error relative to the output scale (the largest
``|reference|``), which is what the issue's fidelity target reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FP32_TOLERANCE = 1e-4
FP16_MEAN_ERROR = 1e-2
FP16_TOP1 = 0.99


@dataclass(frozen=True)
class Comparison:
    reference: str
    candidate: str
    samples: int
    max_abs: float
    max_rel: float
    mean_abs: float
    output_scale: float
    cosine: float
    top1_agreement: float
    min_tolerance: float
    threshold: str
    passed: bool

    @property
    def max_abs_of_scale(self) -> float:
        return self.max_abs / self.output_scale if self.output_scale > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_abs_of_scale": self.max_abs_of_scale}

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict} {self.candidate} vs {self.reference} on {self.samples} inputs: max abs {self.max_abs:.2e} "
            f"({self.max_abs_of_scale:.1e} of the output scale {self.output_scale:.3g}), max rel {self.max_rel:.2e}, "
            f"mean abs {self.mean_abs:.2e}, cosine {self.cosine:.7f}, top-1 agreement {self.top1_agreement:.1%}, "
            f"passes at tolerance >= {self.min_tolerance:.1e} [{self.threshold}]"
        )


def compare_outputs(
    reference: np.ndarray, candidate: np.ndarray, precision: str = "fp32",
    reference_name: str = "torch", candidate_name: str = "onnxruntime",
) -> Comparison:
    """Compare logits of shape (samples, classes) (or any (samples, ...) shape)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"{candidate_name} output shape {candidate.shape} differs from {reference_name}'s {reference.shape}")
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    cand = candidate.astype(np.float64).reshape(len(candidate), -1)
    diff = np.abs(cand - ref)
    finite = bool(np.isfinite(cand).all())
    max_abs = float(diff.max()) if finite else float("inf")
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-12)).max()) if finite else float("inf")
    mean_abs = float(diff.mean()) if finite else float("inf")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = float(np.min(np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-30))) if finite else float("nan")
    top1 = float(np.mean(ref.argmax(1) == cand.argmax(1)))
    min_tolerance = float((diff / (1 + np.abs(ref))).max()) if finite else float("inf")
    if precision == "fp32":
        threshold = f"fp32: atol = rtol = {FP32_TOLERANCE:g}, top-1 100%"
        passed = finite and min_tolerance <= FP32_TOLERANCE and top1 == 1.0
    else:
        threshold = f"fp16: mean abs <= {FP16_MEAN_ERROR:g}, top-1 >= {FP16_TOP1:.0%}"
        passed = finite and mean_abs <= FP16_MEAN_ERROR and top1 >= FP16_TOP1
    return Comparison(reference_name, candidate_name, len(reference), max_abs, max_rel, mean_abs,
                      float(np.abs(ref).max()), cosine, top1, min_tolerance, threshold, passed)
