"""``SegArch``: a segmentation network of cells on a grid of scales (kind ``cells``), and its module.

The network (reference.md section 3): a fixed stem to 1/4 resolution (conv3x3 s2 to half the
first width, conv3x3 s2 to the first width); cells on a grid of layers x scales (1/4 .. 1/32),
each summing its transformed inputs (Keep: identity; Down: conv3x3 s2; Up: conv1x1 then 2x
resize) and applying one op (``sep3``, ``sep5``, ``sep7``: separable convolutions, ``sepKdD``
dilated); the fixed output block resizes the last layer's cells to 1/4, concatenates them and
applies the segmentation head (conv3x3, conv1x1 to the classes, resize to the input).

JSON (``format`` nas2deploy.arch, ``task`` segmentation): ``widths`` per scale, ``cells`` as
``{"layer", "scale", "op", "inputs": [[layer, scale], ...]}`` where ``[-1, 0]`` is the stem.
``op_specs()`` lists the deployed ops in execution order; the latency table prices exactly those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.nets.base import Network
from nas2deploy.validate import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, NETWORK_FIX, Field, network_meta, network_size
from nas2deploy.ops import (
    RESIZE_MODES,
    AddN,
    ConvBNAct,
    OpSpec,
    Resize,
    SegHead,
    SepConv,
    Skip,
    UpConv,
)

STEM = (-1, 0)
MAX_LAYERS = 64
#: Cell ops: separable convolutions of kernel 3, 5 or 7, optionally dilated (1 to 16).
_SEP = re.compile(r"^sep([357])(?:d([1-9]|1[0-6]))?$")


def cell_op(name: str, channels: int, h: int, w: int) -> SepConv:
    """``sep5`` -> SepConv k5; ``sep3d2`` -> SepConv k3 with dilation 2."""
    m = _SEP.match(name)
    if not m:
        raise UserError(f"unknown cell op {name!r}: expected 'sep<kernel>' or 'sep<kernel>d<dilation>' (kernel 3, 5 or 7, "
                        "dilation 1 to 16) such as 'sep5'")
    spec = SepConv(channels, h, w, channels, int(m.group(1)), int(m.group(2) or 1))
    spec.validate()
    return spec


def transform(src_scale: int, dst_scale: int, widths: tuple[int, ...], size: int, mode: str, align_corners: bool) -> OpSpec:
    """The Keep / Down / Up transform from a node at ``src_scale`` to a cell at ``dst_scale``."""
    hs = size // (4 * 2**src_scale)
    cin, cout = widths[src_scale], widths[dst_scale]
    if dst_scale == src_scale:
        return Skip(cin, hs, hs)
    if dst_scale == src_scale + 1:
        return ConvBNAct(cin, hs, hs, cout, 3, 2)
    if dst_scale == src_scale - 1:
        return UpConv(cin, hs, hs, cout, 2, mode, align_corners)
    raise UserError(f"no transform from scale {src_scale} to scale {dst_scale}: inputs must come from the same or a neighbouring scale")


@dataclass(frozen=True)
class Cell:
    layer: int
    scale: int
    op: str
    inputs: tuple[tuple[int, int], ...]

    @property
    def node(self) -> tuple[int, int]:
        return (self.layer, self.scale)


@dataclass(frozen=True)
class SegArch(Network):
    input_size: int
    num_classes: int
    widths: tuple[int, ...]
    cells: tuple[Cell, ...]
    head_width: int
    resize_mode: str = "bilinear"
    align_corners: bool = False
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind: ClassVar[str] = "cells"
    task: ClassVar[str] = "segmentation"
    unit: ClassVar[str] = "cells"

    def units(self) -> int:
        return len(self.cells)

    def build(self, affine: bool = True) -> nn.Module:
        return SegNet(self)

    def side(self, scale: int) -> int:
        return self.input_size // (4 * 2**scale)

    def output_cells(self) -> list[Cell]:
        last = max(c.layer for c in self.cells)
        return sorted((c for c in self.cells if c.layer == last), key=lambda c: c.scale)

    def stem_specs(self) -> list[OpSpec]:
        half = max(8, self.widths[0] // 2)
        n = self.input_size
        return [ConvBNAct(3, n, n, half, 3, 2), ConvBNAct(half, n // 2, n // 2, self.widths[0], 3, 2)]

    def cell_specs(self, cell: Cell) -> tuple[list[OpSpec], AddN | None, SepConv]:
        """(transforms in input order, the fusion add or None for one input, the op)."""
        h = self.side(cell.scale)
        transforms = [transform(s, cell.scale, self.widths, self.input_size, self.resize_mode, self.align_corners)
                      for _, s in cell.inputs]
        fusion = AddN(self.widths[cell.scale], h, h, len(cell.inputs)) if len(cell.inputs) > 1 else None
        return transforms, fusion, cell_op(cell.op, self.widths[cell.scale], h, h)

    def head_specs(self) -> list[OpSpec]:
        outs = self.output_cells()
        resizes: list[OpSpec] = [Resize(self.widths[c.scale], self.side(c.scale), self.side(c.scale), 2**c.scale,
                                        self.resize_mode, self.align_corners) for c in outs if c.scale > 0]
        quarter = self.side(0)
        cin = sum(self.widths[c.scale] for c in outs)
        return [*resizes, SegHead(cin, quarter, quarter, self.head_width, self.num_classes, 4, self.resize_mode, self.align_corners)]

    def op_specs(self, include_free: bool = False) -> list[OpSpec]:
        specs = self.stem_specs()
        for cell in self.cells:
            transforms, fusion, op = self.cell_specs(cell)
            specs += [t for t in transforms if include_free or not t.is_free]
            specs += [fusion] if fusion else []
            specs.append(op)
        return specs + self.head_specs()

    def layout(self) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str]]]:
        """Cells on a grid, layers left to right and scales top (1/4) to bottom (1/32), each fed by
        its inputs; the stem before the first layer and the head after the last, both at 1/4."""
        def name(node: tuple[int, int]) -> str:
            return "stem" if node == STEM else f"cell {node[0]},{node[1]}"

        last = max(c.layer for c in self.cells)
        places = {"stem": (0.0, 0.0), **{name(c.node): (c.layer + 1.0, -float(c.scale)) for c in self.cells},
                  "head": (last + 2.0, 0.0)}
        edges = [(name(src), name(c.node)) for c in self.cells for src in c.inputs]
        return places, edges + [(name(c.node), "head") for c in self.output_cells()]

    def groups(self) -> list[tuple[str, list[OpSpec]]]:
        """The deployed ops grouped as stem, one group per cell (transforms, fusion, op), head."""
        groups: list[tuple[str, list[OpSpec]]] = [("stem", self.stem_specs())]
        for cell in self.cells:
            transforms, fusion, op = self.cell_specs(cell)
            groups.append((f"cell {cell.layer},{cell.scale}", [*transforms, *([fusion] if fusion else []), op]))
        return groups + [("head", self.head_specs())]

    def validate(self, source: str = "<arch>") -> None:
        if len(self.widths) != 4:
            raise UserError(f"arch {source}: field widths must list 4 widths (scales 1/4, 1/8, 1/16, 1/32)")
        if self.input_size % 32:
            raise UserError(f"arch {source}: field input_size must be a multiple of 32, got {self.input_size}")
        if self.resize_mode not in RESIZE_MODES:
            raise UserError(f"arch {source}: field resize_mode must be one of {', '.join(RESIZE_MODES)}")
        if not self.cells:
            raise UserError(f"arch {source}: field cells is empty")
        seen = {STEM}
        for i, c in enumerate(self.cells):
            where = f"cells[{i}]"
            if not 0 <= c.scale < 4:
                raise UserError(f"arch {source}: field {where}.scale must be 0..3, got {c.scale}")
            if c.node in seen:
                raise UserError(f"arch {source}: field {where}: cell ({c.layer}, {c.scale}) appears twice")
            if not c.inputs:
                raise UserError(f"arch {source}: field {where}.inputs is empty")
            for src in c.inputs:
                if src not in seen or src[0] >= c.layer:
                    raise UserError(f"arch {source}: field {where}.inputs: {list(src)} is not an earlier cell or the stem [-1, 0]")
            seen.add(c.node)
            try:
                self.cell_specs(c)
            except UserError as exc:
                raise UserError(f"arch {source}: field {where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "nas2deploy.arch", "version": 1, "kind": self.kind, "task": self.task, "name": self.name,
            "input_size": self.input_size, "num_classes": self.num_classes, "widths": list(self.widths),
            "head_width": self.head_width, "resize_mode": self.resize_mode, "align_corners": self.align_corners,
            "cells": [{"layer": c.layer, "scale": c.scale, "op": c.op, "inputs": [list(i) for i in c.inputs]} for c in self.cells],
            "meta": self.meta,
        }

    @classmethod
    def from_field(cls, doc: Field) -> SegArch:
        """Validate a segmentation arch field by field; errors name the file, the field and the rule."""
        cells = []
        for c in doc["cells"].list(max_len=4 * MAX_LAYERS, min_len=1):
            inputs = []
            for pair in c["inputs"].list(max_len=4 * MAX_LAYERS + 1, min_len=1):
                layer, scale = pair.list(min_len=2, max_len=2)
                inputs.append((layer.int(-1, MAX_LAYERS), scale.int(0, 3)))
            cells.append(Cell(c["layer"].int(0, MAX_LAYERS - 1), c["scale"].int(0, 3), c["op"].str(), tuple(inputs)))
        mode, corners, name = doc.get("resize_mode"), doc.get("align_corners"), doc.get("name")
        arch = SegArch(
            doc["input_size"].int(64, MAX_SIDE), doc["num_classes"].int(1, MAX_CLASSES),
            tuple(w.int(1, MAX_CHANNELS) for w in doc["widths"].list(min_len=4, max_len=4)),
            tuple(cells), doc["head_width"].int(1, MAX_CHANNELS),
            mode.str(RESIZE_MODES) if mode else "bilinear", corners.bool() if corners else False,
            (name.str() if name else "") or doc.source.removeprefix("arch "), network_meta(doc),
        )
        try:
            arch.validate(doc.source.removeprefix("arch "))
        except UserError as exc:
            raise UserError(f"{exc}; {NETWORK_FIX}") from None
        specs = arch.op_specs()
        network_size(doc, sum(s.macs() for s in specs), sum(s.params() for s in specs))
        return arch


class SegNet(nn.Module):
    """The deployable segmentation network of a SegArch; every layer is ``spec.build()``."""

    def __init__(self, arch: SegArch):
        super().__init__()
        self.arch = arch
        self.stem = nn.Sequential(*[s.build() for s in arch.stem_specs()])
        self.transforms = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self.ops = nn.ModuleDict()
        for cell in arch.cells:
            transforms, fusion, op = arch.cell_specs(cell)
            key = f"{cell.layer}_{cell.scale}"
            self.transforms[key] = nn.ModuleList([t.build() for t in transforms])
            if fusion is not None:
                self.fusions[key] = fusion.build()
            self.ops[key] = op.build()
        head = arch.head_specs()
        self.resizes = nn.ModuleList([s.build() for s in head[:-1]])
        self.head = head[-1].build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {STEM: self.stem(x)}
        for cell in self.arch.cells:
            key = f"{cell.layer}_{cell.scale}"
            transforms: nn.ModuleList = self.transforms[key]  # type: ignore[assignment]
            inputs = [t(nodes[src]) for t, src in zip(transforms, cell.inputs)]
            fused = self.fusions[key](*inputs) if key in self.fusions else inputs[0]
            nodes[cell.node] = self.ops[key](fused)
        outs = self.arch.output_cells()
        feats = [nodes[outs[0].node]] if outs[0].scale == 0 else []
        feats += [r(nodes[c.node]) for r, c in zip(self.resizes, [c for c in outs if c.scale > 0])]
        return self.head(torch.cat(feats, 1))
