"""Compare runtimes' outputs with a reference's, as Polygraphy's comparator does: ``run_all``
feeds the same inputs to every runner, ``compare_outputs`` only measures how far apart two
outputs are and whether that passes.

Thresholds by precision:

- fp32: element-wise ``|candidate - reference| <= t * (scale + |reference|)``, t = 1e-4, where
  ``scale`` is the sample's largest ``|reference|``: numpy's ``allclose`` rule with the absolute
  term in units of the sample's output. Float32 rounding grows with the activations a network
  carries, so a fixed atol fails trained networks whose logits run to tens (a DenseNAS network
  off by 1.4e-4 at logits of 5: 3e-5 of its scale) while a tiny network's near-zero outputs would
  pass anything; per sample, so one sample's large logits never loosen another's. Every top-1
  class the same.
- fp16: the mean absolute error at most 1e-2 and top-1 agreement at least 99%; element-wise
  bounds are meaningless at fp16's 3 significant digits.
- int8: quantisation changes outputs by design, so what is judged is what a user loses: with
  ground truth, the accuracy drop (top-1, or mIoU, of the int8 model below the fp32 reference's)
  at most ``max_drop`` points; without it, top-1 (pixel) agreement at least 1 - max_drop/100.
- Segmentation outputs (N, classes, H, W): agreement is per pixel (the argmax over classes), at
  least 99.9% in fp32; with the ground-truth masks, each runtime's mIoU is computed and the two
  may differ by at most 0.1 points (fp32) or 1 point (fp16).

Besides pass or fail the report gives the smallest tolerance that would have passed
(``min_tolerance``: the smallest t that rule passes), so a user can see how much room is left,
and the largest error relative to the output scale (the largest ``|reference|``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nas2deploy.backends import Runner
from nas2deploy.backends.onnx import INPUT_NAME

FP32_TOLERANCE = 1e-4
FP16_MEAN_ERROR = 1e-2
FP16_TOP1 = 0.99
FP32_PIXELS = 0.999
MIOU_POINTS = {"fp32": 0.1, "fp16": 1.0}


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
    top1_agreement: float  # per pixel for segmentation outputs
    min_tolerance: float
    threshold: str
    passed: bool
    miou_difference: float | None = None  # points, segmentation with ground truth only
    agreement: str = "top-1"  # or "pixel"
    #: points of top-1 (mIoU) the candidate loses against the reference on the ground truth (int8)
    accuracy_drop: float | None = None
    precision: str = "fp32"  # the candidate's, which chose the threshold

    @property
    def lossy(self) -> bool:
        """Whether the candidate is judged by what it loses (int8), not by its error."""
        return self.precision == "int8"

    @property
    def max_abs_of_scale(self) -> float:
        return self.max_abs / self.output_scale if self.output_scale > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_abs_of_scale": self.max_abs_of_scale}

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        miou = f", mIoU difference {self.miou_difference:.3f} points" if self.miou_difference is not None else ""
        if self.accuracy_drop is not None:
            miou += f", accuracy drop {self.accuracy_drop:.2f} points"
        return (
            f"{verdict} {self.candidate} vs {self.reference} on {self.samples} inputs: max abs {self.max_abs:.2e} "
            f"({self.max_abs_of_scale:.1e} of the output scale {self.output_scale:.3g}), max rel {self.max_rel:.2e}, "
            f"mean abs {self.mean_abs:.2e}, cosine {self.cosine:.7f}, {self.agreement} agreement {self.top1_agreement:.3%}{miou}, "
            f"passes at tolerance >= {self.min_tolerance:.1e} [{self.threshold}]"
        )


def run_batched(runner: Runner, x: np.ndarray) -> np.ndarray:
    """Infer ``x`` through a runner of fixed batch B in chunks of B (the last one padded)."""
    batch = next(iter(runner.input_shapes().values()))[0]
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
        out = next(iter(runner.infer({INPUT_NAME: chunk}).values()))
        outs.append(out[: batch - pad])
    return np.concatenate(outs)


def run_all(runners: dict[str, tuple[Runner, int]], x: np.ndarray) -> dict[str, np.ndarray]:
    """Every runner's outputs on the first ``n`` inputs of ``x`` (``runners``: name -> (runner, n))."""
    return {name: run_batched(runner, x[:n]) for name, (runner, n) in runners.items()}


def compare_outputs(
    reference: np.ndarray, candidate: np.ndarray, precision: str = "fp32",
    reference_name: str = "reference", candidate_name: str = "candidate", labels: np.ndarray | None = None,
    max_drop: float = 1.0,
) -> Comparison:
    """Compare logits of shape (samples, classes) or (samples, classes, H, W) (segmentation; then
    ``labels``, the (samples, H, W) masks, add the mIoU difference); ``max_drop``: the points an
    int8 candidate may lose."""
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
    dense = reference.ndim == 4
    ref_cls, cand_cls = (reference.argmax(1), candidate.argmax(1)) if dense else (ref.argmax(1), cand.argmax(1))
    top1 = float(np.mean(ref_cls == cand_cls))
    scale = np.abs(ref).max(axis=1, keepdims=True)
    min_tolerance = float((diff / np.maximum(scale + np.abs(ref), 1e-30)).max()) if finite else float("inf")
    miou_diff = drop = None
    if labels is not None:
        scores = [_miou(c, labels, reference.shape[1]) if dense else float(np.mean(c == labels)) for c in (ref_cls, cand_cls)]
        drop = (scores[0] - scores[1]) * 100
        miou_diff = abs(drop) if dense else None
    need = FP32_PIXELS if dense else 1.0
    if precision == "int8":
        judged = "accuracy drop" if drop is not None else f"{'pixel' if dense else 'top-1'} disagreement"
        threshold = f"int8: {judged} <= {max_drop:g} points"
        lost = drop if drop is not None else (1 - top1) * 100
        passed = finite and lost <= max_drop
        return Comparison(reference_name, candidate_name, len(reference), max_abs, max_rel, mean_abs,
                          float(np.abs(ref).max()), cosine, top1, min_tolerance, threshold, passed, miou_diff,
                          "pixel" if dense else "top-1", drop, precision)
    if precision == "fp32":
        threshold = (f"fp32: |error| <= {FP32_TOLERANCE:g} x (sample's output scale + |output|), "
                     f"{'pixel' if dense else 'top-1'} agreement >= {need:.1%}")
        passed = finite and min_tolerance <= FP32_TOLERANCE and top1 >= need
    else:
        threshold = f"fp16: mean abs <= {FP16_MEAN_ERROR:g}, agreement >= {FP16_TOP1:.0%}"
        passed = finite and mean_abs <= FP16_MEAN_ERROR and top1 >= FP16_TOP1
    if miou_diff is not None:
        threshold += f", mIoU within {MIOU_POINTS[precision]:g} points"
        passed = passed and miou_diff <= MIOU_POINTS[precision]
    return Comparison(reference_name, candidate_name, len(reference), max_abs, max_rel, mean_abs,
                      float(np.abs(ref).max()), cosine, top1, min_tolerance, threshold, passed, miou_diff,
                      "pixel" if dense else "top-1", precision=precision)


def _miou(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    import torch

    from nas2deploy.objective import confusion, miou

    return miou(confusion(torch.from_numpy(pred).long(), torch.from_numpy(labels).long(), classes))
