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


OP_TYPES: dict[str, type[OpSpec]] = {c.type_name: c for c in (ConvBNAct, MBConv, Skip, Classifier)}

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
