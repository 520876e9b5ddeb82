"""Operators as OpSpecs: small frozen values that name, build and key one layer.

An OpSpec is the single source of truth for an operator. The module that is profiled into a
latency table, the candidate inside a supernet and the layer of a derived network are all built
by ``spec.build()``, and the table is keyed by ``spec.key``; so a table entry cannot describe a
different computation than the one that is deployed.

Keys are canonical and readable: type, hyper-parameters, input ``CxHxW`` and output channels,
e.g. ``mbconv_k3_e6_s2_i24x56x56_o32``. ``OpSpec.from_field`` validates untrusted JSON with the
field rules of ``FIELD_RULES`` (``nas2deploy.validate``).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.validate import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, Field

#: The most elements any tensor of one op may hold (2^27: 512 MB in fp32); real ops stay far below.
MAX_TENSOR = 2**27
RESIZE_MODES = ("bilinear", "nearest")
BN_EPS = 1e-3  # DenseNAS / TF MobileNet convention (reference.md section 1)
BN_MOMENTUM = 0.1


def batch_norm(channels: int, affine: bool) -> nn.BatchNorm2d:
    """BN with the DenseNAS / TF MobileNet eps and momentum (affine-free in supernets)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine)


class UncountedBatchNorm(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that does not count its batches. With a fixed momentum the count is
    never read, yet training increments it: one more launch per BN per step, ~270 in a step of
    the DenseNAS-224 supernet, whose GPU steps are bound by launches. Same arithmetic otherwise;
    the (unused) counter stays in the state dict, so checkpoints load either way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum if self.momentum is not None else 0.0, self.eps)


def uncount_batch_norms(module: nn.Module) -> None:
    """Make the plain BatchNorm2d layers of ``module`` with a fixed momentum and running
    statistics ``UncountedBatchNorm`` (supernets call this once: OpSpec still builds each op)."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d and m.momentum is not None and m.track_running_stats:
            m.__class__ = UncountedBatchNorm


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, affine: bool, act: bool,
             dilation: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation, groups=groups, bias=False),
        batch_norm(cout, affine),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class MBConvModule(nn.Module):
    """MobileNetV2 inverted residual: [1x1 expand] -> kxk depthwise (stride) -> 1x1 project.

    The residual add is present exactly when stride is 1 and Cin equals Cout; with expansion 1
    the expansion convolution is absent. All convolutions are bias-free.
    """

    def __init__(self, cin: int, cout: int, kernel: int, expansion: int, stride: int, affine: bool = True, dilation: int = 1):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn(cin, hidden, 1, 1, 1, affine, act=True)
        layers += _conv_bn(hidden, hidden, kernel, stride, hidden, affine, act=True, dilation=dilation)
        layers += _conv_bn(hidden, cout, 1, 1, 1, affine, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class ClassifierModule(nn.Module):
    """Global average pool, flatten, linear layer with bias (no dropout at inference)."""

    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


@dataclass(frozen=True)
class OpSpec:
    """Base of all operator specs: the input tensor shape (C, H, W) for batch-agnostic keys."""

    cin: int
    h: int
    w: int

    type_name: ClassVar[str] = ""
    #: An op that disappears from a deployed network (skip) costs nothing and is never profiled.
    is_free: ClassVar[bool] = False

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def cout(self) -> int:
        raise NotImplementedError

    def out_shape(self) -> tuple[int, int, int]:
        """Output (C, H, W); strided ops use 'same' padding, so H_out = ceil(H / stride)."""
        s = getattr(self, "stride", 1)
        return self.cout, -(-self.h // s), -(-self.w // s)

    def build(self, affine: bool = True) -> nn.Module:
        raise NotImplementedError

    def build_standalone(self) -> nn.Module:
        """The module profiled alone, fed one input of (cin, h, w): ``build()`` except for ops
        that take several inputs in a network (AddN)."""
        return self.build()

    def macs(self) -> int:
        """Multiply-accumulates of convolutions and linear layers only (BN, activations, adds and
        pooling excluded): the convention of the published DenseNAS / MobileNetV2 numbers."""
        raise NotImplementedError

    def params(self) -> int:
        """Parameters of ``build(affine=True)``, BN scale and shift included, counted without
        building it (a test checks every type against the built module)."""
        return 0

    def norm_params(self) -> int:
        """The BN scales and shifts among ``params()``: the DPC paper counts a context module's
        parameters without them (``nets.dpc``). Given by the ops such a module is made of."""
        return 0

    def _shape(self) -> str:
        return f"i{self.cin}x{self.h}x{self.w}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, **asdict(self)}

    @staticmethod
    def from_field(doc: Field) -> OpSpec:
        """Rebuild a spec from JSON read from a file: the type must be known, every field present
        and within its rule (``FIELD_RULES``); errors name the file and the field path."""
        kind = doc["type"].str()
        if kind not in OP_TYPES:
            raise doc["type"].error(f"must be a known op type ({', '.join(sorted(OP_TYPES))})")
        cls = OP_TYPES[kind]
        # A field with a default may be absent (added later: files written before it load as before).
        spec = cls(**{f.name: FIELD_RULES[f.name](doc[f.name]) for f in fields(cls) if doc.has(f.name) or f.default is MISSING})
        spec.check_size(doc)
        return spec

    @staticmethod
    def from_dict(data: Any, source: str = "op") -> OpSpec:
        return OpSpec.from_field(Field(data, source, "give a valid op"))

    def validate(self) -> None:
        """Apply the field rules to a spec built in code (from a candidate name, say)."""
        here = Field(self.to_dict(), f"op {self.type_name}", "choose another op")
        for f in fields(self):
            FIELD_RULES[f.name](here[f.name])
        self.check_size(here)

    def check_size(self, where: Field) -> None:
        """The largest tensor the op touches stays below ``MAX_TENSOR`` elements: a hostile file
        must not make profiling allocate terabytes."""
        hidden = self.cin * getattr(self, "expansion", 1)
        c, h, w = self.out_shape()
        if max(hidden * self.h * self.w, c * h * w) > MAX_TENSOR:
            raise where.error(f"describes an op with tensors above {MAX_TENSOR} elements", shown=False)


def _odd_kernel(f: Field) -> int:
    k = f.int(1, 15)
    if k % 2 == 0:
        raise f.error("must be an odd kernel size")
    return k


#: The rule for each field of any OpSpec (by field name): one rule set for tables, archs and code.
FIELD_RULES: dict[str, Callable[[Field], Any]] = {
    "cin": lambda f: f.int(1, MAX_CHANNELS),
    "out": lambda f: f.int(1, MAX_CHANNELS),
    "mid": lambda f: f.int(1, MAX_CHANNELS),
    "h": lambda f: f.int(1, MAX_SIDE),
    "w": lambda f: f.int(1, MAX_SIDE),
    "kernel": _odd_kernel,
    "stride": lambda f: f.int(choices=(1, 2)),
    "expansion": lambda f: f.int(1, 8),
    "classes": lambda f: f.int(1, MAX_CLASSES),
    "dilation": lambda f: f.int(1, 64),
    "scale": lambda f: f.int(choices=(2, 4, 8, 16, 32)),
    "n": lambda f: f.int(2, 64),
    "relu6": lambda f: f.bool(),
    "align_corners": lambda f: f.bool(),
    "mode": lambda f: f.str(RESIZE_MODES),
    "rate_h": lambda f: f.int(1, 64),
    "rate_w": lambda f: f.int(1, 64),
    "grid_h": lambda f: f.int(1, 64),
    "grid_w": lambda f: f.int(1, 64),
    "out_h": lambda f: f.int(1, MAX_SIDE),
    "out_w": lambda f: f.int(1, MAX_SIDE),
}


@dataclass(frozen=True)
class ConvBNAct(OpSpec):
    """Plain convolution + BN (+ ReLU6): the stem conv3x3 and the tail conv1x1."""

    out: int
    kernel: int
    stride: int
    relu6: bool = True

    type_name: ClassVar[str] = "conv"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        act = "_relu6" if self.relu6 else ""
        return f"conv_k{self.kernel}_s{self.stride}_{self._shape()}_o{self.out}{act}"

    def build(self, affine: bool = True) -> nn.Module:
        return nn.Sequential(*_conv_bn(self.cin, self.out, self.kernel, self.stride, 1, affine, self.relu6))

    def macs(self) -> int:
        _, ho, wo = self.out_shape()
        return self.out * ho * wo * self.cin * self.kernel**2

    def params(self) -> int:
        return self.cin * self.out * self.kernel**2 + 2 * self.out


@dataclass(frozen=True)
class MBConv(OpSpec):
    """Mobile inverted bottleneck; expansion is relative to Cin (reference.md section 1).
    ``dilation`` > 1 is an atrous depthwise convolution: the layers of a backbone run at output
    stride 16 past the point where it would have downsampled (``nets.dpc``); the key names it
    only then, so keys of ordinary layers are as before."""

    out: int
    kernel: int
    expansion: int
    stride: int
    dilation: int = 1

    type_name: ClassVar[str] = "mbconv"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        rate = f"_d{self.dilation}" if self.dilation != 1 else ""
        return f"mbconv_k{self.kernel}_e{self.expansion}_s{self.stride}{rate}_{self._shape()}_o{self.out}"

    def build(self, affine: bool = True) -> nn.Module:
        return MBConvModule(self.cin, self.out, self.kernel, self.expansion, self.stride, affine, self.dilation)

    def macs(self) -> int:
        hidden = self.cin * self.expansion
        _, ho, wo = self.out_shape()
        expand = self.cin * hidden * self.h * self.w if self.expansion != 1 else 0
        return expand + hidden * ho * wo * self.kernel**2 + hidden * self.out * ho * wo

    def params(self) -> int:
        hidden = self.cin * self.expansion
        expand = self.cin * hidden + 2 * hidden if self.expansion != 1 else 0
        return expand + hidden * self.kernel**2 + 2 * hidden + hidden * self.out + 2 * self.out


@dataclass(frozen=True)
class Skip(OpSpec):
    """Identity candidate of a stacking layer: removed from derived networks, so it costs 0 ms."""

    type_name: ClassVar[str] = "skip"
    is_free: ClassVar[bool] = True

    @property
    def cout(self) -> int:
        return self.cin

    @property
    def key(self) -> str:
        return f"skip_{self._shape()}"

    def build(self, affine: bool = True) -> nn.Module:
        return nn.Identity()

    def macs(self) -> int:
        return 0


@dataclass(frozen=True)
class Classifier(OpSpec):
    """Global average pool + linear: the end of every classification network."""

    classes: int

    type_name: ClassVar[str] = "classifier"

    @property
    def cout(self) -> int:
        return self.classes

    def out_shape(self) -> tuple[int, int, int]:
        return self.classes, 1, 1

    @property
    def key(self) -> str:
        return f"classifier_{self._shape()}_o{self.classes}"

    def build(self, affine: bool = True) -> nn.Module:
        return ClassifierModule(self.cin, self.classes)

    def macs(self) -> int:
        return self.cin * self.classes

    def params(self) -> int:
        return self.cin * self.classes + self.classes


# -- segmentation ops (DCNAS, reference.md section 3) ---------------------------------------------


def _resize_key(scale: int, mode: str, align_corners: bool) -> str:
    return f"x{scale}_{mode}" + ("_ac1" if align_corners else "_ac0") * (mode == "bilinear")


class ResizeModule(nn.Module):
    """Upsample by an integer factor. align_corners is explicit everywhere: the same flag reaches
    PyTorch, the ONNX Resize node (coordinate_transformation_mode half_pixel or align_corners) and
    TensorRT, and the table key, so a table cannot time another resize than the deployed one."""

    def __init__(self, scale: int, mode: str, align_corners: bool):
        super().__init__()
        self.scale, self.mode = scale, mode
        self.align_corners = align_corners if mode == "bilinear" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return nn.functional.interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners)


class AtrousDepthwise(nn.Conv2d):
    """A depthwise kxk convolution with atrous rates and 'same' padding that skips the taps which
    can only read padding: along an axis whose rate is at least the input's extent, every tap
    but the middle one falls outside the input for every output pixel, so only the middle row
    (column) of the kernel is applied, undilated and unpadded. The result is exactly the full
    convolution's (the skipped taps multiply zeros, and receive zero gradient either way) and
    the parameter keeps its kxk shape, so weights and keys are unchanged (it is depthwise: one
    input channel per output channel). Why: DPC's rates reach
    21 while a proxy's features are 8-16 pixels wide, and PyTorch's dilated depthwise backward on
    the CPU takes about 10x the undilated one (25 against 2.4 ms for 8 x 320 x 8 x 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0] // 2
        keep = [self.dilation[a] * k < x.shape[2 + a] for a in (0, 1)]  # taps at +-rate*k reach the input
        if all(keep):
            return super().forward(x)
        if not any(keep):  # one tap per channel: a scale (PyTorch runs a 1x1 depthwise conv group by group)
            return x * self.weight[:, :, k, k].reshape(1, -1, 1, 1)
        rows = slice(None) if keep[0] else slice(k, k + 1)
        cols = slice(None) if keep[1] else slice(k, k + 1)
        return F.conv2d(x, self.weight[:, :, rows, cols], None, 1,
                        tuple(int(p) if kept else 0 for p, kept in zip(self.padding, keep)),  # type: ignore[call-overload]
                        tuple(d if kept else 1 for d, kept in zip(self.dilation, keep)), self.groups)


def separable(cin: int, out: int, kernel: int, dilation: tuple[int, int], affine: bool) -> nn.Sequential:
    """Depthwise kxk (atrous ``dilation`` = (rate_h, rate_w), 'same' padding; ``AtrousDepthwise``)
    + BN + ReLU, then pointwise 1x1 to ``out`` + BN + ReLU: one MobileNetV1 unit, DeepLab's
    separable convolution."""
    pad = (dilation[0] * (kernel // 2), dilation[1] * (kernel // 2))
    return nn.Sequential(
        AtrousDepthwise(cin, cin, kernel, 1, pad, dilation, groups=cin, bias=False), batch_norm(cin, affine), nn.ReLU(inplace=True),
        nn.Conv2d(cin, out, 1, bias=False), batch_norm(out, affine), nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class SepConv(OpSpec):
    """Separable convolution, the DCNAS mixture-layer candidate: depthwise kxk (dilation d) + BN +
    ReLU, then pointwise 1x1 + BN + ReLU (one MobileNetV1 unit; DARTS stacks two, DCNAS does not say)."""

    out: int
    kernel: int
    dilation: int = 1

    type_name: ClassVar[str] = "sepconv"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        return f"sepconv_k{self.kernel}_d{self.dilation}_{self._shape()}_o{self.out}"

    def build(self, affine: bool = True) -> nn.Module:
        return separable(self.cin, self.out, self.kernel, (self.dilation, self.dilation), affine)

    def macs(self) -> int:
        return self.h * self.w * (self.cin * self.kernel**2 + self.cin * self.out)

    def params(self) -> int:
        return self.cin * self.kernel**2 + 2 * self.cin + self.cin * self.out + 2 * self.out


@dataclass(frozen=True)
class UpConv(OpSpec):
    """The DCNAS *Up* transform: 1x1 conv + BN + ReLU to the finer scale's width at the coarse
    resolution (4x cheaper than after the resize), then upsample by ``scale``."""

    out: int
    scale: int = 2
    mode: str = "bilinear"
    align_corners: bool = False

    type_name: ClassVar[str] = "upconv"

    @property
    def cout(self) -> int:
        return self.out

    def out_shape(self) -> tuple[int, int, int]:
        return self.out, self.h * self.scale, self.w * self.scale

    @property
    def key(self) -> str:
        return f"upconv_{_resize_key(self.scale, self.mode, self.align_corners)}_{self._shape()}_o{self.out}"

    def build(self, affine: bool = True) -> nn.Module:
        return nn.Sequential(nn.Conv2d(self.cin, self.out, 1, bias=False), batch_norm(self.out, affine), nn.ReLU(inplace=True),
                             ResizeModule(self.scale, self.mode, self.align_corners))

    def macs(self) -> int:
        return self.h * self.w * self.cin * self.out

    def params(self) -> int:
        return self.cin * self.out + 2 * self.out


@dataclass(frozen=True)
class Resize(OpSpec):
    """Upsampling alone: the output block brings every scale of the last layer to 1/4."""

    scale: int
    mode: str = "bilinear"
    align_corners: bool = False

    type_name: ClassVar[str] = "resize"

    @property
    def cout(self) -> int:
        return self.cin

    def out_shape(self) -> tuple[int, int, int]:
        return self.cin, self.h * self.scale, self.w * self.scale

    @property
    def key(self) -> str:
        return f"resize_{_resize_key(self.scale, self.mode, self.align_corners)}_{self._shape()}"

    def build(self, affine: bool = True) -> nn.Module:
        return ResizeModule(self.scale, self.mode, self.align_corners)

    def macs(self) -> int:
        return 0


class AddNModule(nn.Module):
    """Sum of n tensors: the fusion of a derived cell."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class StoredInputs(nn.Module):
    """An op of ``n`` same-shaped inputs (AddN, Concat) profiled alone: one input plus n - 1
    stored tensors of the same (C, H, W), so the timed graph reads n tensors and writes one, as
    the deployed op does (at batch B > 1 the stored tensors broadcast over the batch)."""

    def __init__(self, n: int, channels: int, h: int, w: int, concat: bool):
        super().__init__()
        self.concat = concat
        g = torch.Generator().manual_seed(0)
        for i in range(n - 1):
            self.register_buffer(f"other{i}", torch.randn(1, channels, h, w, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.concat:
            return torch.cat([x, *(b.expand(x.shape[0], -1, -1, -1) for b in self.buffers())], 1)
        for other in self.buffers():
            x = x + other
        return x


@dataclass(frozen=True)
class AddN(OpSpec):
    """The fusion of a derived cell: the sum of its ``n`` transformed inputs (n - 1 adds). Profiled
    with n inputs of the key's shape, so a table prices fusion like any op."""

    n: int

    type_name: ClassVar[str] = "addn"

    @property
    def cout(self) -> int:
        return self.cin

    @property
    def key(self) -> str:
        return f"addn_n{self.n}_{self._shape()}"

    def build(self, affine: bool = True) -> nn.Module:
        return AddNModule()

    def build_standalone(self) -> nn.Module:
        return StoredInputs(self.n, self.cin, self.h, self.w, concat=False)

    def macs(self) -> int:
        return 0


class SegHeadModule(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int, scale: int, mode: str, align_corners: bool, affine: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1, bias=False), batch_norm(mid, affine), nn.ReLU(inplace=True),
                                  nn.Conv2d(mid, classes, 1))
        self.resize = ResizeModule(scale, mode, align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize(self.body(x))


@dataclass(frozen=True)
class SegHead(OpSpec):
    """The fixed DCNAS output block after the concatenation at 1/4: 3x3 conv + BN + ReLU, 1x1 conv
    (with bias) to the classes, bilinear upsample to the input size."""

    mid: int
    classes: int
    scale: int = 4
    mode: str = "bilinear"
    align_corners: bool = False

    type_name: ClassVar[str] = "seghead"

    @property
    def cout(self) -> int:
        return self.classes

    def out_shape(self) -> tuple[int, int, int]:
        return self.classes, self.h * self.scale, self.w * self.scale

    @property
    def key(self) -> str:
        return f"seghead_m{self.mid}_{_resize_key(self.scale, self.mode, self.align_corners)}_{self._shape()}_o{self.classes}"

    def build(self, affine: bool = True) -> nn.Module:
        return SegHeadModule(self.cin, self.mid, self.classes, self.scale, self.mode, self.align_corners, affine)

    def macs(self) -> int:
        return self.h * self.w * (self.cin * self.mid * 9 + self.mid * self.classes)

    def params(self) -> int:
        return self.cin * self.mid * 9 + 2 * self.mid + self.mid * self.classes + self.classes


# -- dense prediction cell ops (DPC, reference.md sections 3 and 6) -----------------------------


@dataclass(frozen=True)
class PointConv(OpSpec):
    """1x1 convolution + BN + ReLU, as DeepLab has it: a DPC branch's 1x1 op and the projection of
    the concatenated branches (ReLU, not the backbone's ReLU6)."""

    out: int

    type_name: ClassVar[str] = "pointconv"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        return f"pointconv_{self._shape()}_o{self.out}"

    def build(self, affine: bool = True) -> nn.Module:
        return nn.Sequential(nn.Conv2d(self.cin, self.out, 1, bias=False), batch_norm(self.out, affine), nn.ReLU(inplace=True))

    def macs(self) -> int:
        return self.h * self.w * self.cin * self.out

    def params(self) -> int:
        return self.cin * self.out + 2 * self.out

    def norm_params(self) -> int:
        return 2 * self.out


@dataclass(frozen=True)
class AtrousSep(OpSpec):
    """DPC's 3x3 op: a separable convolution whose depthwise part has the atrous rates
    ``rate_h`` x ``rate_w`` (each in {1, 3, 6, ..., 21} at output stride 16), then pointwise to
    ``out``, each followed by BN + ReLU (``separable``)."""

    out: int
    rate_h: int
    rate_w: int

    type_name: ClassVar[str] = "atrous_sep"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        return f"atrous_sep_r{self.rate_h}x{self.rate_w}_{self._shape()}_o{self.out}"

    def build(self, affine: bool = True) -> nn.Module:
        return separable(self.cin, self.out, 3, (self.rate_h, self.rate_w), affine)

    def macs(self) -> int:
        return self.h * self.w * (self.cin * 9 + self.cin * self.out)

    def params(self) -> int:
        return self.cin * 9 + 2 * self.cin + self.cin * self.out + 2 * self.out

    def norm_params(self) -> int:
        return 2 * self.cin + 2 * self.out


class PyramidPoolModule(nn.Module):
    """Average pooling over a grid, 1x1 conv + BN + ReLU, bilinear resize back to the input."""

    def __init__(self, cin: int, h: int, w: int, out: int, grid_h: int, grid_w: int, affine: bool):
        super().__init__()
        self.window, self.size = (h // grid_h, w // grid_w), (h, w)
        self.conv = nn.Sequential(nn.Conv2d(cin, out, 1, bias=False), batch_norm(out, affine), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.avg_pool2d(x, self.window, self.window))
        return F.interpolate(y, size=self.size, mode="bilinear", align_corners=True)


@dataclass(frozen=True)
class PyramidPool(OpSpec):
    """DPC's spatial pyramid pooling with a ``grid_h`` x ``grid_w`` grid (each in {1, 2, 4, 8}):
    average pooling with a VALID window of (h // grid_h, w // grid_w), so the pooled map is the
    grid (rows and columns left over when the side is not a multiple are not pooled, as with
    DeepLab's VALID window; a fixed window, unlike adaptive pooling, exports to ONNX for any
    size), a 1x1 conv + BN + ReLU at the grid's size, and a bilinear resize back to (h, w) with
    align_corners=True (DeepLab's). The grid 1x1 is ASPP's image pooling."""

    out: int
    grid_h: int
    grid_w: int

    type_name: ClassVar[str] = "pyramid_pool"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        return f"pyramid_pool_g{self.grid_h}x{self.grid_w}_{self._shape()}_o{self.out}"

    def build(self, affine: bool = True) -> nn.Module:
        return PyramidPoolModule(self.cin, self.h, self.w, self.out, self.grid_h, self.grid_w, affine)

    def macs(self) -> int:
        return self.grid_h * self.grid_w * self.cin * self.out

    def params(self) -> int:
        return self.cin * self.out + 2 * self.out

    def norm_params(self) -> int:
        return 2 * self.out

    def check_size(self, where: Field) -> None:
        super().check_size(where)
        if self.grid_h > self.h or self.grid_w > self.w:
            raise where.error(f"pools a {self.h}x{self.w} map into a {self.grid_h}x{self.grid_w} grid: the grid must fit the map",
                              shown=False)


class ConcatModule(nn.Module):
    """The concatenation of a cell's branches along the channels."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, 1)


@dataclass(frozen=True)
class Concat(OpSpec):
    """The concatenation of ``n`` branch outputs of (cin, h, w): a memory copy, priced like any op."""

    n: int

    type_name: ClassVar[str] = "concat"

    @property
    def cout(self) -> int:
        return self.cin * self.n

    @property
    def key(self) -> str:
        return f"concat_n{self.n}_{self._shape()}"

    def build(self, affine: bool = True) -> nn.Module:
        return ConcatModule()

    def build_standalone(self) -> nn.Module:
        return StoredInputs(self.n, self.cin, self.h, self.w, concat=True)

    def macs(self) -> int:
        return 0


class LogitsModule(nn.Module):
    def __init__(self, cin: int, classes: int, size: tuple[int, int]):
        super().__init__()
        self.conv, self.size = nn.Conv2d(cin, classes, 1), size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=self.size, mode="bilinear", align_corners=True)


@dataclass(frozen=True)
class Logits(OpSpec):
    """A DeepLab-style segmentation output: 1x1 conv (with bias) to the classes at the feature
    size, then a bilinear resize (align_corners=True) to the input size ``out_h`` x ``out_w``."""

    classes: int
    out_h: int
    out_w: int

    type_name: ClassVar[str] = "logits"

    @property
    def cout(self) -> int:
        return self.classes

    def out_shape(self) -> tuple[int, int, int]:
        return self.classes, self.out_h, self.out_w

    @property
    def key(self) -> str:
        return f"logits_{self._shape()}_o{self.classes}_to{self.out_h}x{self.out_w}"

    def build(self, affine: bool = True) -> nn.Module:
        return LogitsModule(self.cin, self.classes, (self.out_h, self.out_w))

    def macs(self) -> int:
        return self.h * self.w * self.cin * self.classes

    def params(self) -> int:
        return self.cin * self.classes + self.classes


OP_TYPES: dict[str, type[OpSpec]] = {
    c.type_name: c for c in (ConvBNAct, MBConv, Skip, Classifier, SepConv, UpConv, Resize, AddN, SegHead,
                             PointConv, AtrousSep, PyramidPool, Concat, Logits)
}

#: Layer names of MBConv chains: the kernels and expansions of the MobileNetV2 / DenseNAS family.
_CANDIDATE = re.compile(r"^k([357])e([1-8])$")


def candidate_layer(name: str, cin: int, h: int, w: int, cout: int, stride: int) -> OpSpec:
    """Turn a candidate name of a MBConv search space (``k5e3`` or ``skip``) into its OpSpec."""
    if name == "skip":
        if stride != 1 or cin != cout:
            raise UserError(f"op 'skip' needs stride 1 and equal widths, got {cin}->{cout} stride {stride}")
        return Skip(cin, h, w)
    m = _CANDIDATE.match(name)
    if not m:
        raise UserError(f"unknown op {name!r}: expected 'skip' or 'k<kernel>e<expansion>' with kernel 3, 5 or 7 "
                        "and expansion 1 to 8, such as 'k3e6'")
    spec = MBConv(cin, h, w, cout, int(m.group(1)), int(m.group(2)), stride)
    spec.validate()
    return spec
