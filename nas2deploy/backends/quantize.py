"""The INT8 loader: an fp32 ONNX graph becomes an explicitly quantised one (QDQ), calibrated on
real images, by ONNX Runtime's own quantisation tools (``quant_pre_process``, ``quantize_static``)
rather than a quantiser of ours.

The format is the one every INT8 backend reads: QuantizeLinear/DequantizeLinear pairs around
each quantised operator, weights int8 per output channel and symmetric (zero point 0, what
TensorRT requires of weights), activations uint8 (asymmetric: a ReLU6 output uses the whole
range) or int8 symmetric (``activations="int8"``, what TensorRT's explicit quantisation
requires). ONNX Runtime runs the QDQ graph with its integer kernels on the CPU; TensorRT 10
builds the same graph with its INT8 flag (explicit quantisation: no calibrator of TensorRT's,
whose implicit API is deprecated).

Calibration sets each activation's range from the calibration images: ``minmax`` (the observed
extremes), ``percentile`` (the 99.999th percentile of |x|, robust to a few outliers) or
``entropy`` (the range that minimises the KL divergence between the fp32 and the quantised
histograms, TensorRT's classic calibrator). Calibration images are the training split's, never
the images the export's accuracy check scores.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nas2deploy.backends.base import INPUT_NAME
from nas2deploy.errors import UserError, first_line

CALIBRATORS = ("minmax", "percentile", "entropy")
ACTIVATIONS = ("uint8", "int8")
#: Fewer calibration images than this set ranges from too little of the data.
MIN_CALIBRATION_IMAGES = 32


@dataclass(frozen=True)
class Quantized:
    """A QDQ model and how it was made (for the export report)."""

    data: bytes
    calibrator: str
    activations: str
    images: int
    seconds: float

    def describe(self) -> dict[str, Any]:
        return {"calibrator": self.calibrator, "activations": f"{self.activations} per tensor"
                + (" symmetric" if self.activations == "int8" else ""), "weights": "int8 per channel symmetric",
                "format": "QDQ (QuantizeLinear/DequantizeLinear)", "calibration_images": self.images,
                "seconds": round(self.seconds, 2)}


class _Batches:
    """ONNX Runtime's calibration reader over an array of images, ``batch`` at a time (the
    graph's fixed batch; a last partial batch is dropped)."""

    def __init__(self, images: np.ndarray, batch: int):
        self._chunks: Iterator[np.ndarray] = iter([images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {INPUT_NAME: np.ascontiguousarray(chunk, dtype=np.float32)}


def quantize_qdq(model: bytes, images: np.ndarray, batch: int = 1, calibrator: str = "minmax",
                 activations: str = "uint8") -> Quantized:
    """``model`` (fp32 ONNX bytes with a fixed batch ``batch``) quantised to QDQ, calibrated on
    ``images`` (N x C x H x W, preprocessed as the network sees them)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibrator not in CALIBRATORS:
        raise UserError(f"--calibrator {calibrator}: choose one of {', '.join(CALIBRATORS)}")
    if len(images) < max(MIN_CALIBRATION_IMAGES, batch):
        raise UserError(f"{len(images)} calibration images: quantisation needs at least "
                        f"{max(MIN_CALIBRATION_IMAGES, batch)} to set the activations' ranges")
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibrator]
    symmetric = activations == "int8"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nas2deploy-quantize-") as tmp:
        fp32, prepared, quantized = (Path(tmp) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32.write_bytes(model)
        quiet = contextlib.ExitStack()  # the calibrators print to stdout, where a command's result goes
        quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
        quiet.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        try:
            # shape inference and graph optimisation first, as ONNX Runtime's documentation asks
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(quantized), _Batches(images, batch), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                            calibrate_method=method,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric,
                                           "CalibTensorRangeSymmetric": symmetric})
        except UserError:
            raise
        except Exception as exc:  # ONNX Runtime's tools raise many types for a graph they cannot take
            raise UserError(f"ONNX Runtime could not quantise the model: {first_line(exc)}") from None
        finally:
            quiet.close()
        return Quantized(quantized.read_bytes(), calibrator, activations, len(images), time.perf_counter() - start)
