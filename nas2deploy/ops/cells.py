"""The ops of DCNAS cell networks (reference.md section 3): the separable candidate of a
mixture layer, the *Up* transform, resizing, the fusion of a cell's inputs, and the fixed
output block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nas2deploy.ops.base import OpSpec, register_op
from nas2deploy.ops.layers import RESIZE_MODES, ResizeModule, StoredInputs, batch_norm, resize_key, separable
from nas2deploy.validate import MAX_CHANNELS


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
        return f"upconv_{resize_key(self.scale, self.mode, self.align_corners)}_{self._shape()}_o{self.out}"

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
        return f"resize_{resize_key(self.scale, self.mode, self.align_corners)}_{self._shape()}"

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
        return f"seghead_m{self.mid}_{resize_key(self.scale, self.mode, self.align_corners)}_{self._shape()}_o{self.classes}"

    def build(self, affine: bool = True) -> nn.Module:
        return SegHeadModule(self.cin, self.mid, self.classes, self.scale, self.mode, self.align_corners, affine)

    def macs(self) -> int:
        return self.h * self.w * (self.cin * self.mid * 9 + self.mid * self.classes)

    def params(self) -> int:
        return self.cin * self.mid * 9 + 2 * self.mid + self.mid * self.classes + self.classes


#: How a resize is read from a file (``UpConv``, ``Resize``, ``SegHead``).
RESIZE_RULES = {"scale": lambda f: f.int(choices=(2, 4, 8, 16, 32)), "mode": lambda f: f.str(RESIZE_MODES),
                "align_corners": lambda f: f.bool()}
register_op(SepConv)
register_op(UpConv, **RESIZE_RULES)
register_op(Resize, **RESIZE_RULES)
register_op(AddN)
register_op(SegHead, mid=lambda f: f.int(1, MAX_CHANNELS), **RESIZE_RULES)
