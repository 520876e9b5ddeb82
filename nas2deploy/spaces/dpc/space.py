"""The DPC search space: dense prediction cells on a fixed backbone (reference.md sections 3, 6).

A cell is ``branches`` (B, 5) branches; branch i takes one input among the backbone's features F
and the outputs of branches before it, and applies one of 81 ops: a 1x1 convolution, a 3x3
atrous separable convolution with rates rh x rw (8 x 8 = 64), or pyramid pooling over a grid
gh x gw (4 x 4 = 16), each with ``filters`` (256) outputs (``nets.dpc``). Branch i has i inputs
to choose from, so the space holds prod_i (i x 81) = B! x 81^B cells (4.2e11 for B = 5).

The backbone (a shipped chain, ``backbone``) runs at output stride 16 on an ``input_size`` x
``input_width`` input and is fixed: profiled once, it prices every network alike. The ops to
profile are the backbone's layers, every branch op on F's channels and on ``filters`` channels
(what a branch reads), the concatenation of B branches, the projection and the logits.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import DPCNet, load_arch, named_archs
from nas2deploy.nets.chain import Arch
from nas2deploy.nets.dpc import GRIDS, MAX_BRANCHES, RATES, Branch
from nas2deploy.ops import AtrousSep, OpSpec
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.validate import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE

#: Every op a branch may apply, in a stable order: 1x1, then each rate pair, then each grid.
BRANCH_CHOICES: tuple[Branch, ...] = (
    (Branch("conv1x1", -1),)
    + tuple(Branch("sep3x3", -1, rate=(rh, rw)) for rh in RATES for rw in RATES)
    + tuple(Branch("pool", -1, grid=(gh, gw)) for gh in GRIDS for gw in GRIDS)
)


@dataclass(frozen=True)
class DPCConfig:
    backbone: str = "mobilenetv2"
    input_size: int = 513
    input_width: int = 1025
    branches: int = 5
    filters: int = 256
    num_classes: int = 19

    def __post_init__(self) -> None:
        if self.backbone not in named_archs() or not isinstance(load_arch(self.backbone), Arch):
            chains = [n for n in named_archs() if isinstance(load_arch(n), Arch)]
            raise UserError(f"--backbone must be a shipped classification chain ({', '.join(chains)}), got {self.backbone!r}")
        if not (128 <= self.input_size <= MAX_SIDE and 128 <= self.input_width <= MAX_SIDE):
            raise UserError(f"DPC input sides must lie in [128, {MAX_SIDE}] (the pooling grid of 8 must fit the features at "
                            f"output stride 16), got {self.input_size}x{self.input_width}")
        if not (1 <= self.branches <= MAX_BRANCHES and 1 <= self.filters <= MAX_CHANNELS and 1 <= self.num_classes <= MAX_CLASSES):
            raise UserError(f"DPC branches must lie in [1, {MAX_BRANCHES}], filters in [1, {MAX_CHANNELS}], classes in "
                            f"[1, {MAX_CLASSES}]")


class DPCSpace(SearchSpace):
    name = "dpc"

    def __init__(self, config: DPCConfig):
        self.config = config

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def network(self, cell: tuple[Branch, ...], name: str) -> DPCNet:
        c = self.config
        return DPCNet(c.input_size, c.input_width, c.num_classes, self.backbone, cell, c.filters, name)

    @cached_property
    def backbone(self) -> Arch:
        arch = load_arch(self.config.backbone)
        assert isinstance(arch, Arch)  # DPCConfig checked it
        return arch

    @cached_property
    def reference_net(self) -> DPCNet:
        """A network of this space (1x1 branches on the features) whose backbone, features and
        head are every network's: what the feature cache is built for."""
        return self.network(tuple(Branch("conv1x1", -1) for _ in range(self.config.branches)), "dpc-reference")

    def op_specs(self) -> list[OpSpec]:
        net = self.reference_net
        c, h, w = net.features()
        branch_ops = [b.spec(cin, h, w, self.config.filters) for cin in sorted({c, self.config.filters}) for b in BRANCH_CHOICES]
        unique = {s.key: s for s in net.backbone_specs() + branch_ops + net.head_specs()}
        return [unique[k] for k in sorted(unique)]

    def counts(self) -> dict[str, Any]:
        b = self.config.branches
        cells_log10 = sum(math.log10(i * len(BRANCH_CHOICES)) for i in range(1, b + 1))
        return {
            "branches": b,
            "ops_per_branch": len(BRANCH_CHOICES),
            "features": list(self.reference_net.features()),
            "cells": round(10**cells_log10) if cells_log10 < 15 else None,
            "cells_log10": round(cells_log10, 2),
            "unique_ops": len(self.op_specs()),
        }

    def sample_cell(self, rng: random.Random) -> tuple[Branch, ...]:
        """Each branch's input uniform over F and the branches before it, its op uniform over the 81."""
        return tuple(Branch(op.op, rng.randrange(-1, i), op.rate, op.grid)
                     for i, op in ((i, rng.choice(BRANCH_CHOICES)) for i in range(self.config.branches)))

    def sample_arch(self, rng: random.Random) -> DPCNet:
        return self.network(self.sample_cell(rng), f"dpc-sample-{rng.randrange(10**6)}")

    def latency_range(self, table: LatencyTable) -> tuple[float, float]:
        """Exact: a branch's cost depends only on its own input's width and its op, and every
        network has as many ops, so the fastest (slowest) network takes each branch's cheapest
        (dearest) input and op; its prediction is the table's, calibration included."""
        c, h, w = self.reference_net.features()
        ends = []
        for pick in (min, max):
            cell = []
            for i in range(self.config.branches):
                inputs = [-1] + ([0] if i else [])  # F, or any earlier branch (all ``filters`` wide)
                cin, choice = pick(((src, b) for src in inputs for b in BRANCH_CHOICES),
                                   key=lambda sb: table.latency(sb[1].spec(c if sb[0] < 0 else self.config.filters, h, w,
                                                                           self.config.filters)))
                cell.append(Branch(choice.op, cin, choice.rate, choice.grid))
            ends.append(table.predict(self.network(tuple(cell), "dpc-end")).best_ms)
        return ends[0], ends[1]

    def reference_op(self) -> OpSpec:
        _, h, w = self.reference_net.features()
        f = self.config.filters
        return AtrousSep(f, h, w, f, 6, 6)
