"""Torch layers that ops of several families are built from: batch norm with the DenseNAS / TF
MobileNet constants, conv + BN (+ ReLU6), resizing with an explicit ``align_corners``, the atrous
depthwise convolution, a separable unit, and the stand-in inputs of multi-input ops profiled alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, affine: bool, act: bool,
            dilation: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation, groups=groups, bias=False),
        batch_norm(cout, affine),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


def resize_key(scale: int, mode: str, align_corners: bool) -> str:
    """How a key names a resize: ``x2_bilinear_ac0``."""
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

