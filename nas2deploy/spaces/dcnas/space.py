"""The DCNAS densely connected search space for segmentation (reference.md section 3).

A fixed stem to 1/4 resolution, then a grid of ``layers`` layers by four scales (1/4, 1/8,
1/16, 1/32; widths ``base_width x 2^scale`` unless ``widths`` is given). Cell (l, s) exists when
the stem can reach it one scale step per layer (s <= l + 1, the Auto-DeepLab grid). Its candidate
inputs are every node of the ``max_back`` previous layers (0: all, the default, as in the paper)
at scales s - 1, s, s + 1, the stem counting as layer -1 at scale 0; each arrives through its
transform (Down: conv3x3 s2, Keep: identity, Up: conv1x1 + 2x resize). A cell's fusion module
weighs the inputs, its mixture layer chooses an op among ``ops`` (separable 3x3, 5x5, 7x7 by
default). The output block is fixed: the last layer's cells resized to 1/4, concatenated, the
segmentation head.

What the paper leaves open and this space fixes (documented choices, measured by the
benchmarks under ``benchmarks/``): the transforms above, a single separable unit per op, ``head_width``
128, bilinear resizing with align_corners False everywhere (the key says so; FasterSeg's table
timed nearest while its network used bilinear), and derivation keeping the ``derive_inputs``
(2) strongest inputs per cell, so ``architectures`` counts the networks that rule can return.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.ops import RESIZE_MODES, AddN, OpSpec, SepConv
from nas2deploy.nets import Network
from nas2deploy.nets.cells import STEM, Cell, SegArch, cell_op, transform
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.validate import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE

SCALES = 4


@dataclass(frozen=True)
class DCNASConfig:
    input_size: int = 512
    layers: int = 12
    base_width: int = 32
    widths: tuple[int, ...] | None = None
    num_classes: int = 19
    max_back: int = 0
    ops: tuple[str, ...] = ("sep3", "sep5", "sep7")
    head_width: int = 128
    derive_inputs: int = 2
    resize_mode: str = "bilinear"
    align_corners: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.widths, list):  # from JSON
            object.__setattr__(self, "widths", tuple(self.widths))
        if isinstance(self.ops, list):
            object.__setattr__(self, "ops", tuple(self.ops))
        if not 64 <= self.input_size <= MAX_SIDE or self.input_size % 32:
            raise UserError(f"--input-size must be a multiple of 32 in [64, {MAX_SIDE}] for DCNAS, got {self.input_size}")
        if not 1 <= self.layers <= 32:
            raise UserError(f"--layers must be between 1 and 32, got {self.layers}")
        if self.widths is not None and (len(self.widths) != SCALES or not all(1 <= w <= MAX_CHANNELS for w in self.widths)):
            raise UserError(f"--widths must give 4 widths in [1, {MAX_CHANNELS}] (scales 1/4, 1/8, 1/16, 1/32)")
        if not (1 <= self.base_width <= MAX_CHANNELS // 8 and 1 <= self.num_classes <= MAX_CLASSES
                and 1 <= self.head_width <= MAX_CHANNELS and 1 <= self.derive_inputs <= 16 and 0 <= self.max_back <= 32):
            raise UserError(f"DCNAS base width must lie in [1, {MAX_CHANNELS // 8}], classes in [1, {MAX_CLASSES}], head width "
                            f"in [1, {MAX_CHANNELS}], derive inputs in [1, 16] and max_back in [0, 32]")
        if self.resize_mode not in RESIZE_MODES:
            raise UserError(f"DCNAS resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        if not self.ops:
            raise UserError("DCNAS needs at least one candidate op")
        for name in self.ops:
            cell_op(name, 8, 8, 8)  # names the bad op

    @property
    def scale_widths(self) -> tuple[int, ...]:
        return self.widths or tuple(self.base_width * 2**s for s in range(SCALES))


class DCNASSpace(SearchSpace):
    name = "dcnas"

    def __init__(self, config: DCNASConfig | None = None):
        self.config = config or DCNASConfig()

    def config_dict(self) -> dict[str, Any]:
        d = asdict(self.config)
        d["widths"] = list(self.config.widths) if self.config.widths else None
        d["ops"] = list(self.config.ops)
        return d

    # -- the grid ---------------------------------------------------------------------------------
    @cached_property
    def cells(self) -> list[tuple[int, int]]:
        """(layer, scale) of every cell, layer by layer, finest scale first."""
        return [(l, s) for l in range(self.config.layers) for s in range(SCALES) if s <= l + 1]

    @cached_property
    def inputs(self) -> dict[tuple[int, int], list[tuple[int, int]]]:
        """Candidate inputs of each cell (the fusion module's connections), oldest first."""
        nodes = [STEM, *self.cells]
        back = self.config.max_back or self.config.layers + 1
        return {
            (l, s): [(l2, s2) for l2, s2 in nodes if l - back <= l2 < l and abs(s2 - s) <= 1]
            for l, s in self.cells
        }

    def side(self, scale: int) -> int:
        return self.config.input_size // (4 * 2**scale)

    def make_arch(self, cells: tuple[Cell, ...], name: str) -> SegArch:
        """A SegArch of this space's input, widths and output block over ``cells``."""
        c = self.config
        return SegArch(c.input_size, c.num_classes, c.scale_widths, cells, c.head_width, c.resize_mode, c.align_corners, name)

    @cached_property
    def dense_arch(self) -> SegArch:
        """Every cell with every candidate input (first op): the stem and output block all
        derived networks share, and every transform the supernet holds."""
        first = self.config.ops[0]
        return self.make_arch(tuple(Cell(l, s, first, tuple(self.inputs[(l, s)])) for l, s in self.cells), "dense")

    def transform_spec(self, src: tuple[int, int], dst: tuple[int, int]) -> OpSpec:
        c = self.config
        return transform(src[1], dst[1], c.scale_widths, c.input_size, c.resize_mode, c.align_corners)

    def candidates(self, cell: tuple[int, int]) -> list[SepConv]:
        w, h = self.config.scale_widths[cell[1]], self.side(cell[1])
        return [cell_op(name, w, h, h) for name in self.config.ops]

    # -- SearchSpace ------------------------------------------------------------------------------
    def op_specs(self) -> list[OpSpec]:
        """Stem, every transform, every fusion size a derivation can produce (2 ..
        ``derive_inputs`` inputs), every candidate, and the output block over all of the last
        layer's scales or over one of them (a Viterbi path)."""
        whole = self.dense_arch
        specs: list[OpSpec] = whole.stem_specs()
        for cell in self.cells:
            specs += [self.transform_spec(src, cell) for src in self.inputs[cell]]
            w, h = self.config.scale_widths[cell[1]], self.side(cell[1])
            specs += [AddN(w, h, h, n) for n in range(2, min(self.config.derive_inputs, len(self.inputs[cell])) + 1)]
            specs += self.candidates(cell)
        specs += whole.head_specs()  # top-k derivation keeps every cell of the last layer
        last = self.config.layers - 1
        for scale in {s for l, s in self.cells if l == last}:  # a Viterbi path ends in one of them
            specs += self.make_arch((Cell(last, scale, self.config.ops[0], (STEM,)),), "head").head_specs()
        unique: dict[str, OpSpec] = {}
        for spec in specs:
            if not spec.is_free:
                unique.setdefault(spec.key, spec)
        return list(unique.values())

    def counts(self) -> dict[str, Any]:
        n_ops = len(self.config.ops)
        k = self.config.derive_inputs
        log10 = sum(math.log10(math.comb(len(ins), min(k, len(ins))) * n_ops) for ins in self.inputs.values())
        kinds = {"keep": 0, "down": 0, "up": 0}
        for cell, ins in self.inputs.items():
            for src in ins:
                kinds["keep" if src[1] == cell[1] else "down" if src[1] < cell[1] else "up"] += 1
        return {
            "layers": self.config.layers,
            "cells": len(self.cells),
            "connections": sum(len(v) for v in self.inputs.values()),
            **{f"{kind}_transforms": v for kind, v in kinds.items()},
            "mixed_ops": len(self.cells),
            "candidates_per_mixed_op": n_ops,
            "unique_ops": len(self.op_specs()),
            "architectures_log10": round(log10, 1),
        }

    def sample_arch(self, rng: random.Random) -> SegArch:
        """Each cell keeps up to ``derive_inputs`` random inputs and a random op; cells that do
        not reach the last layer are pruned (as derivation prunes them)."""
        chosen = {cell: tuple(sorted(rng.sample(self.inputs[cell], min(self.config.derive_inputs, len(self.inputs[cell])))))
                  for cell in self.cells}
        ops = {cell: rng.choice(self.config.ops) for cell in self.cells}
        return self.arch_from(chosen, ops, f"dcnas-sample-{rng.randrange(10**6)}")

    def arch_from(self, chosen: dict[tuple[int, int], tuple[tuple[int, int], ...]], ops: dict[tuple[int, int], str],
                  name: str) -> SegArch:
        """The SegArch of per-cell inputs and ops, keeping only cells that feed the output block."""
        last = self.config.layers - 1
        alive = {cell for cell in self.cells if cell[0] == last}
        for cell in reversed(self.cells):
            if cell in alive:
                alive.update(src for src in chosen[cell] if src != STEM)
        cells = tuple(Cell(l, s, ops[(l, s)], chosen[(l, s)]) for l, s in self.cells if (l, s) in alive)
        return self.make_arch(cells, name)

    def sample_route(self, rng: random.Random) -> tuple[Cell, ...]:
        """The cells of a network drawn as ``sample_arch`` draws it: a route of the supernet."""
        return self.sample_arch(rng).cells

    def route_from_dict(self, doc: Any, source: str = "a route") -> tuple[Cell, ...]:
        """A route (``[[layer, scale, op, [[layer, scale], ...]], ...]``, the cells of a network in
        order) read back, every choice checked against the space: cells of its grid, its ops, 1 to
        ``derive_inputs`` distinct candidate inputs each, and exactly the cells that feed the
        output block (what ``arch_from`` keeps)."""
        from nas2deploy.validate import Field

        f = Field(doc, source, "search again")
        chosen, ops = {}, {}
        for item in f.list(min_len=1, max_len=len(self.cells)):
            layer, scale, op, inputs = item.list(min_len=4, max_len=4)
            cell = (layer.int(0, self.config.layers - 1), scale.int(0, SCALES - 1))
            if cell not in self.inputs:
                raise item.error(f"names cell {list(cell)}, which is not in the {self.config.layers}-layer grid", shown=False)
            pairs: list[tuple[int, int]] = []
            for pair in inputs.list(min_len=1, max_len=self.config.derive_inputs):
                src_layer, src_scale = pair.list(min_len=2, max_len=2)
                pairs.append((src_layer.int(-1, self.config.layers), src_scale.int(0, SCALES - 1)))
            if len(set(pairs)) != len(pairs) or any(p not in self.inputs[cell] for p in pairs):
                raise inputs.error(f"must be distinct candidate inputs of cell {list(cell)}", shown=False)
            chosen[cell], ops[cell] = tuple(sorted(pairs)), op.str(self.config.ops)
        try:
            cells = self.arch_from(chosen, ops, "route").cells
        except KeyError:
            cells = ()
        if {c.node for c in cells} != set(chosen):
            raise f.error("is not a route of the space (its cells must be exactly those that feed the output block, "
                          "each with its inputs)", shown=False)
        return cells

    def routes_of_arch(self, arch: Network) -> list[tuple[Cell, ...]]:
        """The routes that make ``arch`` (``make_arch``'s inverse), for scoring a network that
        records none with a one-shot supernet's weights: its cells, the only route (the supernet
        holds one op per cell and choice, one transform per connection). Empty when ``arch`` is
        not a network of the space."""
        if not isinstance(arch, SegArch) or arch != self.make_arch(arch.cells, arch.name):
            return []
        try:
            return [self.route_from_dict(self.route_to_dict(arch.cells))]
        except UserError:
            return []

    @staticmethod
    def route_to_dict(route: tuple[Cell, ...]) -> list[Any]:
        return [[c.layer, c.scale, c.op, [list(i) for i in c.inputs]] for c in route]

    def reference_op(self) -> OpSpec:
        w, h = self.config.scale_widths[1], self.side(1)
        return SepConv(w, h, h, w, 5)
