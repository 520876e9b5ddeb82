"""The ops of MBConv chains (MobileNetV2, DenseNAS and the DPC backbone): the stem and tail
convolution, the inverted residual, the skip candidate and the classifier; and
``candidate_layer``, which turns a candidate name (``k5e3``, ``skip``) into its op."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.ops.base import OpSpec, register_op
from nas2deploy.ops.layers import conv_bn


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
            layers += conv_bn(cin, hidden, 1, 1, 1, affine, act=True)
        layers += conv_bn(hidden, hidden, kernel, stride, hidden, affine, act=True, dilation=dilation)
        layers += conv_bn(hidden, cout, 1, 1, 1, affine, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class ClassifierModule(nn.Module):
    """Global average pool, flatten, linear layer with bias (no dropout at inference). The pool is
    ``adaptive_avg_pool2d``, exported as GlobalAveragePool, which int8 runtimes run on 8-bit data
    (a mean over the spatial axes exports as ReduceMean, which ONNX Runtime's quantiser leaves in
    float)."""

    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

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
        return nn.Sequential(*conv_bn(self.cin, self.out, self.kernel, self.stride, 1, affine, self.relu6))

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


register_op(ConvBNAct, relu6=lambda f: f.bool())
register_op(MBConv, expansion=lambda f: f.int(1, 8))
register_op(Skip)
register_op(Classifier)

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
