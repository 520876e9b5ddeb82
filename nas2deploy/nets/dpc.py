"""``DPCNet``: a classification backbone run at output stride 16, a dense prediction cell and a
segmentation head (kind ``dpc``; Chen et al. 2018, reference.md sections 3 and 6).

The backbone is any chain ``Arch`` (MobileNetV2, DenseNAS-A/B/C, a derived one) without its
tail: its last features F. Past output stride 16, a layer that would downsample runs at stride 1
and every later layer's depthwise convolution becomes atrous with the rate the stride would have
had (DeepLab's rule: the layer that stops downsampling keeps the current rate, the ones after it
double it). The cell is B branches; branch i reads F or the output of an earlier branch and
applies one op with ``filters`` (256) outputs:

- ``conv1x1``: 1x1 convolution + BN + ReLU (``PointConv``);
- ``sep3x3``: separable 3x3 convolution with atrous rates ``rate`` = [rh, rw], each in
  ``RATES`` (``AtrousSep``);
- ``pool``: spatial pyramid pooling over a ``grid`` = [gh, gw], each in ``GRIDS``
  (``PyramidPool``; the grid 1x1 is ASPP's image pooling).

The branches' outputs are concatenated, projected by a 1x1 convolution to ``filters`` and turned
into logits resized to the input (``Concat``, ``PointConv``, ``Logits``). ``op_specs()`` lists
all of them, so a latency table prices the cell and the whole network like any other.

JSON (``format`` nas2deploy.arch, ``kind`` dpc)::

    {"kind": "dpc", "name", "input_size": H, "input_width": W (default H), "num_classes",
     "backbone": "mobilenetv2" (a shipped chain) or an inline chain document,
     "filters": 256, "cell": [{"op": "sep3x3", "rate": [1, 6], "input": -1}, ...], "meta"}

**The context module's size** (``figures``), as the paper's Table 1 counts it, found by
reproducing its rows: parameters are the branches' convolution weights, without BN and without
the projection after the concatenation; multiply-adds are the branches' convolutions at the
feature size, for the 1025 x 2049 Cityscapes input (65 x 129 features at output stride 16).
``dpc-mnv2`` then has 356,160 parameters and 2.986 B multiply-adds (Table 1: 0.36 M, 3.00 B;
Xception's 2048-channel DPC row, 0.81 M / 6.84 B, is matched the same way). ``aspp-mnv2``
(the image pooling, a 1x1 branch and separable branches of rates 6, 12, 18) has 2.82 B
multiply-adds as in the table, but 418,240 parameters where the table gives 0.25 M: the table's
ASPP parameters equal the pooling's and the 1x1 branch's convolutions plus one separable
branch (3 x 320 x 256 + 320 x 9 = 248,640; for Xception 3 x 2048 x 256 + 2048 x 9 = 1.59 M, its
row), while its multiply-adds count all three separable branches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.nets.base import Network
from nas2deploy.nets.chain import ARCH_FORMAT, ARCH_VERSION, Arch, stem_specs
from nas2deploy.ops import AtrousSep, Concat, Logits, LogitsModule, MBConv, OpSpec, PointConv, PyramidPool, candidate_layer
from nas2deploy.validate import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, NETWORK_FIX, Field, network_meta, network_size

#: The output stride the backbone runs at, and the stride the rates below are given for.
OUTPUT_STRIDE = 16
#: Atrous rates of a separable branch, per axis (the paper's {1, 3, 6, 9, ..., 21}).
RATES = (1, 3, 6, 9, 12, 15, 18, 21)
#: Pyramid pooling grid sides, per axis.
GRIDS = (1, 2, 4, 8)
BRANCH_OPS = ("conv1x1", "sep3x3", "pool")
MAX_BRANCHES = 16


@dataclass(frozen=True)
class Branch:
    """One branch of a cell: ``op`` on ``input`` (-1: the backbone's features, i: branch i's
    output), with ``rate`` (sep3x3) or ``grid`` (pool) as [h, w]."""

    op: str
    input: int
    rate: tuple[int, int] = (1, 1)
    grid: tuple[int, int] = (1, 1)

    def to_dict(self) -> dict[str, Any]:
        extra = {"rate": list(self.rate)} if self.op == "sep3x3" else {"grid": list(self.grid)} if self.op == "pool" else {}
        return {"op": self.op, **extra, "input": self.input}

    @staticmethod
    def from_field(f: Field, index: int) -> Branch:
        op = f["op"].str(BRANCH_OPS)
        source = f["input"].int(-1, index - 1)

        def pair(name: str, choices: tuple[int, ...]) -> tuple[int, int]:
            values = f[name].list(max_len=2)
            if len(values) != 2:
                raise f[name].error("must be two numbers [h, w]")
            return values[0].int(choices=choices), values[1].int(choices=choices)

        if op == "sep3x3":
            return Branch(op, source, rate=pair("rate", RATES))
        if op == "pool":
            return Branch(op, source, grid=pair("grid", GRIDS))
        return Branch(op, source)

    def spec(self, cin: int, h: int, w: int, filters: int) -> OpSpec:
        if self.op == "sep3x3":
            return AtrousSep(cin, h, w, filters, *self.rate)
        if self.op == "pool":
            return PyramidPool(cin, h, w, filters, *self.grid)
        return PointConv(cin, h, w, filters)


def backbone_specs(backbone: Arch, h: int, w: int) -> list[OpSpec]:
    """The backbone's stem and blocks (no tail; skip layers included) for an h x w input at
    ``OUTPUT_STRIDE``."""
    specs = stem_specs(h, backbone.stem_conv, backbone.stem_out, backbone.stem_stride, width=w)
    c, fh, fw = specs[-1].out_shape()
    stride, rate = backbone.stem_stride, 1
    for block in backbone.blocks:
        for j, name in enumerate((block.head, *block.stack)):
            layer_stride, layer_rate = (block.stride if j == 0 else 1), rate
            if layer_stride > 1 and stride * layer_stride > OUTPUT_STRIDE:
                rate *= layer_stride  # this layer stops downsampling; the ones after it are atrous
                layer_stride = 1
            else:
                stride *= layer_stride
            spec = candidate_layer(name, c, fh, fw, block.out, layer_stride)
            if layer_rate > 1 and isinstance(spec, MBConv):
                spec = dataclasses.replace(spec, dilation=layer_rate)
            specs.append(spec)
            c, fh, fw = spec.out_shape()
    if stride < OUTPUT_STRIDE:
        raise UserError(f"backbone {backbone.name or '<unnamed>'} downsamples by {stride} only: it cannot run at output "
                        f"stride {OUTPUT_STRIDE}; choose a backbone that reaches it (mobilenetv2, densenas-a/b/c)")
    return specs


class DPCModule(nn.Module):
    def __init__(self, net: DPCNet, affine: bool):
        super().__init__()
        self.backbone = nn.Sequential(*[s.build(affine) for s in net.backbone_specs()])
        self.branches = nn.ModuleList(s.build(affine) for s in net.context_specs())
        self.inputs = [b.input for b in net.cell]
        head = net.head_specs()
        self.concat = head[0].build(affine) if len(net.cell) > 1 else None
        self.project, logits = head[-2].build(affine), head[-1].build(affine)
        assert isinstance(logits, LogitsModule)
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def head(self, features: torch.Tensor, resize: bool = True) -> torch.Tensor:
        """The cell and the head on the backbone's features; ``resize=False`` leaves the logits
        at the features' resolution (the DPC proxy trains there)."""
        outputs: list[torch.Tensor] = []
        for branch, source in zip(self.branches, self.inputs):
            outputs.append(branch(features if source < 0 else outputs[source]))
        y = self.project(self.concat(*outputs) if self.concat is not None else outputs[0])
        return self.logits(y) if resize else self.logits.conv(y)


@dataclass(frozen=True)
class DPCNet(Network):
    input_size: int
    input_width: int
    num_classes: int
    backbone: Arch
    cell: tuple[Branch, ...]
    filters: int = 256
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind: ClassVar[str] = "dpc"
    task: ClassVar[str] = "segmentation"
    unit: ClassVar[str] = "branches"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return 3, self.input_size, self.input_width

    def units(self) -> int:
        return len(self.cell)

    @cached_property
    def _backbone_layers(self) -> tuple[OpSpec, ...]:
        """The backbone's specs, skips included: computed once (the network is frozen; every
        prediction, summary and module of it reads them)."""
        return tuple(backbone_specs(self.backbone, self.input_size, self.input_width))

    def backbone_specs(self, include_free: bool = False) -> list[OpSpec]:
        return [s for s in self._backbone_layers if include_free or not s.is_free]

    def features(self) -> tuple[int, int, int]:
        """The backbone's output F: (channels, h, w)."""
        return self.backbone_specs()[-1].out_shape()

    def context_specs(self) -> list[OpSpec]:
        """The cell's branches in order: the multi-scale context module."""
        c, h, w = self.features()
        return [b.spec(c if b.input < 0 else self.filters, h, w, self.filters) for b in self.cell]

    def head_specs(self) -> list[OpSpec]:
        """Concatenation (with two or more branches), projection and logits."""
        _, h, w = self.features()
        n = len(self.cell)
        concat: list[OpSpec] = [Concat(self.filters, h, w, n)] if n > 1 else []
        return concat + [PointConv(self.filters * n, h, w, self.filters),
                         Logits(self.filters, h, w, self.num_classes, self.input_size, self.input_width)]

    def op_specs(self, include_free: bool = False) -> list[OpSpec]:
        return self.backbone_specs(include_free) + self.context_specs() + self.head_specs()

    def groups(self) -> list[tuple[str, list[OpSpec]]]:
        """Stem, the backbone's blocks, each branch of the cell (the context module), the head."""
        specs = self.backbone_specs(include_free=True)
        groups, i = [("stem", specs[:2])], 2
        for n, block in enumerate(self.backbone.blocks, 1):
            size = 1 + len(block.stack)
            groups.append((f"block {n}", specs[i:i + size]))
            i += size
        return groups + [(f"branch {i}", [spec]) for i, spec in enumerate(self.context_specs())] + [("head", self.head_specs())]

    def layout(self) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str]]]:
        """The backbone left to right, then one node per branch (a branch fed by another sits to
        its right), then the head."""
        names = [name for name, _ in self.groups()]
        backbone, head = names[:-len(self.cell) - 1], names[-1]
        where = {name: (float(i), 0.0) for i, name in enumerate(backbone)}
        edges = list(zip(backbone, backbone[1:]))
        depth: list[int] = []
        for i, b in enumerate(self.cell):
            depth.append(0 if b.input < 0 else depth[b.input] + 1)
            where[f"branch {i}"] = (float(len(backbone) + depth[-1]), float(i) - (len(self.cell) - 1) / 2)
            edges.append((backbone[-1] if b.input < 0 else f"branch {b.input}", f"branch {i}"))
            edges.append((f"branch {i}", head))
        where[head] = (float(len(backbone) + max(depth) + 1), 0.0)
        return where, edges

    def figures(self) -> dict[str, Any]:
        """The context module's size as the DPC paper's Table 1 counts it (module docstring):
        convolution weights without BN, multiply-adds at this network's input size."""
        specs = self.context_specs()
        return {"context_module": {"params": sum(s.params() - s.norm_params() for s in specs), "multiply_adds": sum(s.macs() for s in specs),
                "features": list(self.features()),
                "convention": "as the DPC paper's Table 1 counts: branch convolutions only, no BN, no projection"}}

    def at_input(self, height: int, width: int) -> DPCNet:
        """The same network for an input of height x width (rectangular inputs allowed)."""
        net = DPCNet.from_dict({**self.to_dict(), "input_size": height, "input_width": width}, self.name)
        assert isinstance(net, DPCNet)
        return net

    def to_dict(self) -> dict[str, Any]:
        return {"format": ARCH_FORMAT, "version": ARCH_VERSION, "kind": self.kind, "name": self.name,
                "input_size": self.input_size, "input_width": self.input_width, "num_classes": self.num_classes,
                "backbone": self.backbone.to_dict(), "filters": self.filters,
                "cell": [b.to_dict() for b in self.cell], "meta": self.meta}

    @classmethod
    def from_field(cls, doc: Field) -> DPCNet:
        """Validate a DPC document field by field; the backbone is a shipped chain's name or an
        inline chain document."""
        from nas2deploy.nets import load_arch, named_archs, network_from_field

        source = doc["backbone"]
        if isinstance(source.value, str):
            backbone = load_arch(source.str(named_archs()))
        else:
            backbone = network_from_field(source)
        if not isinstance(backbone, Arch):
            raise source.error(f"must be a classification chain (kind chain), not a {backbone.kind} network")
        height = doc["input_size"].int(32, MAX_SIDE)
        width = doc["input_width"].int(32, MAX_SIDE) if doc.has("input_width") else height
        branches = doc["cell"].list(max_len=MAX_BRANCHES)
        if not branches:
            raise doc["cell"].error("must hold at least one branch")
        name = doc.get("name")
        net = DPCNet(input_size=height, input_width=width, num_classes=doc["num_classes"].int(1, MAX_CLASSES),
                     backbone=backbone, cell=tuple(Branch.from_field(b, i) for i, b in enumerate(branches)),
                     filters=doc["filters"].int(1, MAX_CHANNELS) if doc.has("filters") else 256,
                     name=(name.str() if name else "") or doc.source.removeprefix("arch "), meta=network_meta(doc))
        try:
            specs = net.op_specs()
        except UserError as exc:
            raise UserError(f"{exc}; {NETWORK_FIX}") from None
        for branch, spec in zip(branches, net.context_specs()):
            spec.check_size(branch)  # a grid larger than the features, say
        network_size(doc, sum(s.macs() for s in specs), sum(s.params() for s in specs))
        return net

    def build(self, affine: bool = True) -> nn.Module:
        return DPCModule(self, affine)
