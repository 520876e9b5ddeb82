"""Operators as OpSpecs: small frozen values that name, build and key one layer.

An OpSpec is the single source of truth for an operator. The module that is profiled into a
latency table, the candidate inside a supernet and the layer of a derived network are all built
by ``spec.build()``, and the table is keyed by ``spec.key``; so a table entry cannot describe a
different computation than the one that is deployed.

Keys are canonical and readable: type, hyper-parameters, input ``CxHxW`` and output channels,
e.g. ``mbconv_k3_e6_s2_i24x56x56_o32``. ``OpSpec.from_dict`` validates untrusted JSON.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from nas2deploy.errors import UserError

BN_EPS = 1e-3  # DenseNAS / TF MobileNet convention (reference.md section 1)
BN_MOMENTUM = 0.1


def _bn(channels: int, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, affine: bool, act: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        _bn(cout, affine),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class MBConvModule(nn.Module):
    """MobileNetV2 inverted residual: [1x1 expand] -> kxk depthwise (stride) -> 1x1 project.

    The residual add is present exactly when stride is 1 and Cin equals Cout; with expansion 1
    the expansion convolution is absent. All convolutions are bias-free.
    """

    def __init__(self, cin: int, cout: int, kernel: int, expansion: int, stride: int, affine: bool = True):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn(cin, hidden, 1, 1, 1, affine, act=True)
        layers += _conv_bn(hidden, hidden, kernel, stride, hidden, affine, act=True)
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

    def _shape(self) -> str:
        return f"i{self.cin}x{self.h}x{self.w}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, **asdict(self)}

    @staticmethod
    def from_dict(data: Any) -> OpSpec:
        """Rebuild a spec from JSON, rejecting unknown types, missing fields and bad values."""
        if not isinstance(data, dict) or data.get("type") not in OP_TYPES:
            kind = data.get("type") if isinstance(data, dict) else data
            raise UserError(f"unknown op type {kind!r}; known types: {', '.join(sorted(OP_TYPES))}")
        cls = OP_TYPES[data["type"]]
        names = [f.name for f in fields(cls)]
        values = {}
        for name in names:
            if name not in data:
                raise UserError(f"op {data['type']}: missing field {name!r}")
            values[name] = data[name]
        spec = cls(**values)
        spec.validate()
        return spec

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "bool" and not isinstance(v, bool):
                raise UserError(f"op {self.type_name}: field {f.name!r} must be true or false, got {v!r}")
            if f.type == "int" and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise UserError(f"op {self.type_name}: field {f.name!r} must be a positive integer, got {v!r}")


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


@dataclass(frozen=True)
class MBConv(OpSpec):
    """Mobile inverted bottleneck; expansion is relative to Cin (reference.md section 1)."""

    out: int
    kernel: int
    expansion: int
    stride: int

    type_name: ClassVar[str] = "mbconv"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        return f"mbconv_k{self.kernel}_e{self.expansion}_s{self.stride}_{self._shape()}_o{self.out}"

    def validate(self) -> None:
        super().validate()
        if self.kernel % 2 == 0:
            raise UserError(f"op {self.key}: kernel must be odd, got {self.kernel}")

    def build(self, affine: bool = True) -> nn.Module:
        return MBConvModule(self.cin, self.out, self.kernel, self.expansion, self.stride, affine)

    def macs(self) -> int:
        hidden = self.cin * self.expansion
        _, ho, wo = self.out_shape()
        expand = self.cin * hidden * self.h * self.w if self.expansion != 1 else 0
        return expand + hidden * ho * wo * self.kernel**2 + hidden * self.out * ho * wo


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


# -- segmentation ops (DCNAS, reference.md section 3) ---------------------------------------------
RESIZE_MODES = ("bilinear", "nearest")


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


class _Resizing(OpSpec):
    """Base of the ops that resize: each declares ``mode`` as a field; this checks it."""

    mode: str

    def validate(self) -> None:
        super().validate()
        if self.mode not in RESIZE_MODES:
            raise UserError(f"op {self.type_name}: mode must be one of {', '.join(RESIZE_MODES)}, got {self.mode!r}")


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

    def validate(self) -> None:
        super().validate()
        if self.kernel % 2 == 0:
            raise UserError(f"op {self.key}: kernel must be odd, got {self.kernel}")

    def build(self, affine: bool = True) -> nn.Module:
        pad = self.dilation * (self.kernel // 2)
        return nn.Sequential(
            nn.Conv2d(self.cin, self.cin, self.kernel, 1, pad, self.dilation, groups=self.cin, bias=False),
            _bn(self.cin, affine), nn.ReLU(inplace=True),
            nn.Conv2d(self.cin, self.out, 1, bias=False), _bn(self.out, affine), nn.ReLU(inplace=True),
        )

    def macs(self) -> int:
        return self.h * self.w * (self.cin * self.kernel**2 + self.cin * self.out)


@dataclass(frozen=True)
class UpConv(_Resizing):
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
        return nn.Sequential(nn.Conv2d(self.cin, self.out, 1, bias=False), _bn(self.out, affine), nn.ReLU(inplace=True),
                             ResizeModule(self.scale, self.mode, self.align_corners))

    def macs(self) -> int:
        return self.h * self.w * self.cin * self.out


@dataclass(frozen=True)
class Resize(_Resizing):
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


class AddNStandalone(nn.Module):
    """AddN profiled alone: one input plus n - 1 stored tensors of the same (C, H, W), so the
    timed graph reads n tensors and writes one, as the deployed fusion does (at batch B > 1 the
    stored tensors broadcast over the batch)."""

    def __init__(self, n: int, channels: int, h: int, w: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        for i in range(n - 1):
            self.register_buffer(f"other{i}", torch.randn(1, channels, h, w, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        return AddNStandalone(self.n, self.cin, self.h, self.w)

    def macs(self) -> int:
        return 0


class SegHeadModule(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int, scale: int, mode: str, align_corners: bool, affine: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1, bias=False), _bn(mid, affine), nn.ReLU(inplace=True),
                                  nn.Conv2d(mid, classes, 1))
        self.resize = ResizeModule(scale, mode, align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize(self.body(x))


@dataclass(frozen=True)
class SegHead(_Resizing):
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


OP_TYPES: dict[str, type[OpSpec]] = {
    c.type_name: c for c in (ConvBNAct, MBConv, Skip, Classifier, SepConv, UpConv, Resize, AddN, SegHead)
}

_CANDIDATE = re.compile(r"^k(\d+)e(\d+)$")


def candidate_layer(name: str, cin: int, h: int, w: int, cout: int, stride: int) -> OpSpec:
    """Turn a candidate name of a MBConv search space (``k5e3`` or ``skip``) into its OpSpec."""
    if name == "skip":
        if stride != 1 or cin != cout:
            raise UserError(f"op 'skip' needs stride 1 and equal widths, got {cin}->{cout} stride {stride}")
        return Skip(cin, h, w)
    m = _CANDIDATE.match(name)
    if not m:
        raise UserError(f"unknown op {name!r}: expected 'skip' or 'k<kernel>e<expansion>' such as 'k3e6'")
    spec = MBConv(cin, h, w, cout, int(m.group(1)), int(m.group(2)), stride)
    spec.validate()
    return spec
