"""The ops of dense prediction cells (DPC, reference.md sections 3 and 6): a branch's 1x1
convolution, atrous separable convolution and pyramid pooling, the concatenation of the
branches, and the logits resized to the input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nas2deploy.ops.base import OpSpec, register_op
from nas2deploy.ops.layers import StoredInputs, batch_norm, separable
from nas2deploy.validate import MAX_SIDE, Field



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


register_op(PointConv)
register_op(AtrousSep, rate_h=lambda f: f.int(1, 64), rate_w=lambda f: f.int(1, 64))
register_op(PyramidPool, grid_h=lambda f: f.int(1, 64), grid_w=lambda f: f.int(1, 64))
register_op(Concat)
register_op(Logits, out_h=lambda f: f.int(1, MAX_SIDE), out_w=lambda f: f.int(1, MAX_SIDE))
