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
import logging
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
#: Random inputs that calibrate a model quantised only to be timed (``for_timing``).
TIMING_CALIBRATION = 8


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


def float_ops(model: bytes) -> dict[str, int]:
    """The operators of a QDQ graph that run in float, by type. ONNX Runtime's quantiser puts a
    DequantizeLinear before and a QuantizeLinear after every operator between quantised ones, but
    only the operators it knows (its registries: those with an integer kernel, or that move 8-bit
    data unchanged) are fused into 8-bit kernels; any other (a ReduceMean, say) runs in float
    between the two, as does a known one the quantiser left without them. Either costs the time an
    int8 deployment is meant to save."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    known = {*QDQRegistry, *QLinearOpsRegistry}
    graph = onnx.load_from_string(model).graph
    constants = {t.name for t in graph.initializer}
    producers = {out: node.op_type for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    left: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        quantised_in = all(producers.get(i) in ("DequantizeLinear", "Constant") for i in node.input
                           if i and i not in constants)
        uses = [c for out in node.output for c in consumers.get(out, [])]
        if node.op_type not in known or not (quantised_in and uses and all(c == "QuantizeLinear" for c in uses)):
            left[node.op_type] = left.get(node.op_type, 0) + 1
    return left


class _Batches:
    """ONNX Runtime's calibration reader over an array of images, ``batch`` at a time (the
    graph's fixed batch; a last partial batch is dropped)."""

    def __init__(self, images: np.ndarray, batch: int):
        self._chunks: Iterator[np.ndarray] = iter([images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {INPUT_NAME: np.ascontiguousarray(chunk, dtype=np.float32)}


def quantize_qdq(model: bytes, images: np.ndarray, batch: int = 1, calibrator: str = "minmax",
                 activations: str = "uint8", minimum: int = MIN_CALIBRATION_IMAGES) -> Quantized:
    """``model`` (fp32 ONNX bytes with a fixed batch ``batch``) quantised to QDQ, calibrated on
    ``images`` (N x C x H x W, preprocessed as the network sees them; at least ``minimum``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibrator not in CALIBRATORS:
        raise UserError(f"--calibrator {calibrator}: choose one of {', '.join(CALIBRATORS)}")
    if len(images) < max(minimum, batch):
        raise UserError(f"{len(images)} calibration images: quantisation needs at least {max(minimum, batch)} to set "
                        "the activations' ranges")
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
        quiet.callback(logging.disable, logging.NOTSET)  # it also logs to the root logger (per-tensor fallbacks)
        logging.disable(logging.WARNING)
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


def interior(model: bytes) -> bytes:
    """A quantised op as it runs inside a quantised network: its input already quantised and its
    output left quantised. The QDQ graph of a lone op quantises its fp32 input and dequantises
    its output; inside a network neither happens (ONNX Runtime fuses DequantizeLinear, the op
    and QuantizeLinear into one integer kernel between int8 tensors), so the input's
    QuantizeLinear and the output's DequantizeLinear are removed and the graph takes and
    returns the 8-bit tensors. A network's own quantise at its input and dequantise at its
    output, the same for every network of a space, are left to the table's calibration offset."""
    import onnx

    proto = onnx.load_from_string(model)
    graph = proto.graph
    nodes = list(graph.node)
    first = next((n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name), None)
    last = next((n for n in nodes if n.op_type == "DequantizeLinear" and n.output[0] == graph.output[0].name), None)
    zero_points = {i.name: i.data_type for i in graph.initializer}
    for node, ends, side in ((first, graph.input, "output"), (last, graph.output, "input")):
        if node is not None and len(node.input) > 2 and node.input[2] in zero_points:  # the 8-bit type: its zero point's
            tensor = str(getattr(node, side)[0])  # the 8-bit tensor the graph now takes or gives
            shape = [d.dim_value for d in ends[0].type.tensor_type.shape.dim]
            graph.node.remove(node)
            ends.remove(ends[0])
            ends.insert(0, onnx.helper.make_tensor_value_info(tensor, zero_points[node.input[2]], shape))
    return bytes(proto.SerializeToString())


def for_timing(model: bytes, input_shape: tuple[int, ...], batch: int, inside: bool) -> bytes:
    """``model`` quantised only to be timed (a latency table's op or network, ``derive
    --measure``): calibrated on ``TIMING_CALIBRATION`` random inputs, since an 8-bit kernel's
    time does not depend on the ranges it was given, only on the graph; ``inside``: as the op
    runs inside a network (``interior``)."""
    images = np.random.default_rng(0).standard_normal((max(TIMING_CALIBRATION, batch), *input_shape)).astype(np.float32)
    quantized = quantize_qdq(model, images, batch, minimum=1).data
    return interior(quantized) if inside else quantized
