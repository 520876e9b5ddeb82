"""The ONNX loaders: a torch module to ONNX bytes (pinned opset, fixed tensor names), and the
check of an ONNX model a runner is about to run.

Uses the TorchScript exporter (``dynamo=False``): on this machine it takes ~0.02 s per MBConv
op against 0.5-0.7 s for the dynamo exporter, runs at the same speed in ONNX Runtime and
matches PyTorch to <= 5e-7 (reference.md section 4); per-op profiling exports hundreds of
modules, so export time is profiling overhead. fp16 graphs are exported from a half-precision
copy of the module, which is how TensorRT 11.x (strongly typed) gets fp16 layers.

``check_onnx`` is what ``export`` runs on the file it writes: ``onnx.checker`` with
``full_check`` (which includes strict shape inference) and then shape inference whose result
is kept, so every intermediate tensor in the shipped file carries its shape. Weights stay inside
the file (the exporter embeds them below protobuf's 2 GB limit; DenseNAS networks are ~10 MB).
No simplifier runs (onnx-simplifier is not a dependency): the exporter folds constants and
folds BN into the convs of an eval-mode network, so the graph holds Conv, Clip, Add, GlobalAveragePool,
Flatten and Gemm plus a few Identity and Constant nodes, which ONNX Runtime and TensorRT
eliminate at load (``tests/test_export.py`` checks that op list).
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import torch
from torch import nn

from nas2deploy.backends.base import INPUT_NAME, OPSET, OUTPUT_NAME, ModelFile, OnnxModel, TorchModule
from nas2deploy.fileio import read_capped
from nas2deploy.errors import UserError


def export_onnx(
    module: nn.Module, input_shape: tuple[int, ...], precision: str = "fp32", dynamic_batch: bool = False
) -> bytes:
    """Trace ``module`` in eval mode on a random input of ``input_shape`` and return the ONNX bytes."""
    model = module.eval()
    dummy = torch.randn(*input_shape)
    if precision == "fp16":  # on a copy: the caller's module keeps its fp32 weights
        model, dummy = copy.deepcopy(model).half(), dummy.half()
    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter accepts file objects
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )
    return buf.getvalue()


#: Input and output element types a runner feeds and reads (ONNX TensorProto FLOAT, FLOAT16).
_FLOAT_TYPES = {1: "float32", 10: "float16"}
#: The most elements one input may hold: runners allocate it (2^28 floats, 1 GiB).
MAX_INPUT_ELEMENTS = 2**28
#: protobuf's limit on one message: no ONNX model file without external data is larger
MAX_ONNX_BYTES = 2**31 - 1


def onnx_from_module(artifact: TorchModule, batch: int, precision: str = "fp32") -> OnnxModel:
    """The loader from a torch module to the ONNX model that ONNX-running backends load."""
    return OnnxModel(export_onnx(artifact.module, (batch, *artifact.input_shape), precision), artifact.source)


def check_onnx(onnx_bytes: bytes, source: str = "model.onnx", input_shape: tuple[int, ...] | None = None) -> bytes:
    """Full ``onnx.checker`` check plus shape inference, then the interface a runner relies on:
    float inputs and outputs whose dimensions are positive integers (a symbolic batch dimension
    allowed), inputs small enough to allocate, and with ``input_shape`` (C, H, W) one input of
    that shape, as the network that was exported takes. Returns the model with inferred shapes."""
    import onnx

    try:
        model = onnx.load_from_string(onnx_bytes)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # DecodeError, ValidationError, InferenceError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{source}: not a valid ONNX model ({first})") from None
    graph = inferred.graph
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if not inputs or not graph.output:
        raise UserError(f"{source}: the graph has {len(inputs)} input(s) and {len(graph.output)} output(s); a runner needs both")
    for kind, values in (("input", inputs), ("output", graph.output)):
        for value in values:
            tensor = value.type.tensor_type
            if tensor.elem_type not in _FLOAT_TYPES:
                raise UserError(f"{source}: {kind} {value.name!r} has element type {tensor.elem_type}, not float32 or float16")
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if any(d is not None and d < 1 for d in dims) or None in dims[1:] or (kind == "input" and not dims):
                raise UserError(f"{source}: {kind} {value.name!r} has shape {dims}: expected positive sizes (a symbolic "
                                "batch dimension at most)")
            if kind == "input" and math.prod(d or 1 for d in dims) > MAX_INPUT_ELEMENTS:
                raise UserError(f"{source}: input {value.name!r} of shape {dims} is too large to feed")
    if input_shape is not None:
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
        if len(inputs) != 1 or tuple(dims) != tuple(input_shape):
            raise UserError(f"{source}: takes input(s) {[i.name for i in inputs]} of shape {dims}, but its network takes "
                            f"one input of {list(input_shape)}; the file was edited or belongs to another network")
    return inferred.SerializeToString()


def read_model(artifact: ModelFile) -> OnnxModel:
    """An ONNX model file read (a regular file, at most protobuf's 2 GiB) and checked."""
    data = read_capped(artifact.path, "ONNX model", MAX_ONNX_BYTES)
    return OnnxModel(check_onnx(data, artifact.source), artifact.source)
