"""The DCNAS supernet: every cell of the grid, its fusion module and its mixture layer.

- **Fusion module** (path-level sampling): one weight ``beta`` per incoming connection. A step
  samples ``path_samples`` of a cell's n connections (all when n is smaller) without
  replacement, with probabilities softmax(beta), and sums the sampled transformed inputs weighted
  by softmax(beta) renormalised over the sample, so unsampled connections cost neither memory nor
  time and the weights of the sampled ones still get gradients. ``path_samples`` = 0 runs every
  connection.
  Cells that no sampled connection leads from to the output block are skipped for the step.
- **Mixture layer** (channel-level sampling, PC-DARTS style): the fused input's first C / k
  channels (``k = 1 / channel_fraction``) go through every candidate op, weighted by
  softmax(alpha), the rest bypass; the two parts are concatenated and the channels shuffled in k
  groups, so that the next layer's processed slice holds other channels. Candidates are built at
  C / k channels, which is where memory and time fall; the derived network uses the chosen op at
  full width (the latency model prices that one).

The paper publishes neither portion. Chosen defaults, measured by ``benchmarks/dcnas_memory.py``:
``path_samples`` 2, the number of inputs a derived cell keeps (``derive_inputs``), so every step
trains a network shaped like the ones derivation returns; a fixed fraction instead (half the
connections) saved only 27% of the activations, because late cells of a dense grid have 10-35
candidate inputs and their transforms hold most of the memory. ``channel_fraction`` 0.25
(PC-DARTS's 1/4). Every rank samples the same
connections at a step: the sample comes from a generator seeded by (seed, step).

BN is affine-free during the search, as in DenseNAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.nets.cells import STEM, Cell, cell_op
from nas2deploy.ops import uncount_batch_norms
from nas2deploy.spaces.dcnas import CHANNEL_FRACTION, PATH_SAMPLES
from nas2deploy.spaces.dcnas.space import DCNASSpace

ALPHA_INIT = 1e-3


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MixtureLayer(nn.Module):
    def __init__(self, space: DCNASSpace, cell: tuple[int, int], channel_fraction: float):
        super().__init__()
        width, side = space.config.scale_widths[cell[1]], space.side(cell[1])
        self.groups = max(1, round(1 / channel_fraction))
        if width % self.groups:
            raise ValueError(f"width {width} at scale {cell[1]} is not divisible into {self.groups} channel groups")
        self.part = width // self.groups
        self.candidates = nn.ModuleList([cell_op(name, self.part, side, side).build(affine=False)
                                         for name in space.config.ops])

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # A contiguous copy of the processed slice: the candidates' convolutions then save this
        # quarter for backward instead of keeping the whole fused input alive through a view.
        head, rest = x[:, : self.part].contiguous(), x[:, self.part:]
        out = weights[0] * self.candidates[0](head)
        for k in range(1, len(self.candidates)):
            out = out + weights[k] * self.candidates[k](head)
        if self.groups == 1:
            return out
        return channel_shuffle(torch.cat([out, rest], 1), self.groups)


def strongest(scores: list[float], k: int) -> list[int]:
    """Indices of the ``k`` largest scores (ties to the earlier index), in index order."""
    return sorted(sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:k])


@dataclass(frozen=True)
class PathSample:
    """The connections each cell runs this step: ``kept[cell]`` holds input indices."""

    kept: dict[tuple[int, int], list[int]]


class DCNASSupernet(nn.Module):
    def __init__(self, space: DCNASSpace, path_samples: int = PATH_SAMPLES, channel_fraction: float = CHANNEL_FRACTION):
        super().__init__()
        if path_samples < 0 or not 0 < channel_fraction <= 1:
            raise ValueError("path_samples must be >= 0 (0: all) and channel_fraction must lie in (0, 1]")
        self.space, self.path_samples = space, path_samples
        arch = space.dense_arch
        self.stem = nn.Sequential(*[s.build(affine=False) for s in arch.stem_specs()])
        self.cells = list(space.cells)
        self.slices: dict[tuple[int, int], slice] = {}
        transforms, start = [], 0
        for cell in self.cells:
            ins = space.inputs[cell]
            transforms += [space.transform_spec(src, cell).build(affine=False) for src in ins]
            self.slices[cell] = slice(start, start + len(ins))
            start += len(ins)
        self.transforms = nn.ModuleList(transforms)
        self.mixtures = nn.ModuleList([MixtureLayer(space, cell, channel_fraction) for cell in self.cells])
        self.index = {cell: i for i, cell in enumerate(self.cells)}
        head = arch.head_specs()
        self.resizes = nn.ModuleList([s.build(affine=False) for s in head[:-1]])
        self.head = head[-1].build(affine=False)
        self.output_cells = [(c.layer, c.scale) for c in arch.output_cells()]
        self.alpha = nn.Parameter(ALPHA_INIT * torch.randn(len(self.cells), len(space.config.ops)))
        self.beta = nn.Parameter(ALPHA_INIT * torch.randn(start))
        uncount_batch_norms(self)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def input_weights(self, cell: tuple[int, int]) -> torch.Tensor:
        """softmax(beta) over the cell's incoming connections."""
        return torch.softmax(self.beta[self.slices[cell]], 0)

    def _cpu_weights(self) -> dict[tuple[int, int], torch.Tensor]:
        """softmax(beta) per cell from one CPU copy of beta (the host decides which connections
        run; one copy per step instead of one wait per cell)."""
        beta = self.beta.detach().float().cpu()
        return {cell: torch.softmax(beta[self.slices[cell]], 0) for cell in self.cells}

    def sample_paths(self, generator: torch.Generator | None = None, uniform: bool = False) -> PathSample:
        """``path_samples`` connections per cell, drawn by softmax(beta) (or uniformly: warm-up)."""
        kept = {}
        weights = self._cpu_weights()
        for cell in self.cells:
            probs = torch.ones_like(weights[cell]) if uniform else weights[cell]
            k = self.path_samples or len(probs)
            if k >= len(probs):
                kept[cell] = list(range(len(probs)))
            else:
                kept[cell] = sorted(torch.multinomial(probs, k, replacement=False, generator=generator).tolist())
        return PathSample(kept)

    def top_paths(self) -> PathSample:
        """The connections derivation keeps: each cell's ``derive_inputs`` strongest (ties to the
        earlier input)."""
        weights = self._cpu_weights()
        return PathSample({cell: strongest(weights[cell].tolist(), self.space.config.derive_inputs) for cell in self.cells})

    def alive(self, paths: PathSample) -> set[tuple[int, int]]:
        """The cells whose output reaches the output block through the sampled connections."""
        alive = set(self.output_cells)
        for cell in reversed(self.cells):
            if cell in alive:
                alive.update(self.space.inputs[cell][k] for k in paths.kept[cell])
        return alive

    def full_width(self) -> bool:
        """Whether the candidates are built at the cells' full width (``channel_fraction`` 1): only
        then is a candidate the op a derived network deploys, and a route a network."""
        return all(cast(MixtureLayer, m).groups == 1 for m in self.mixtures)

    def forward_route(self, x: torch.Tensor, route: tuple[Cell, ...]) -> torch.Tensor:
        """The one network whose cells are ``route``, run with the supernet's weights: each cell
        sums its inputs' transforms (the deployed fusion) and runs the candidate it chose at full
        width (no architecture weights: a single path is exactly one network)."""
        if not self.full_width():
            raise UserError("the supernet's candidates see a share of each cell's channels (channel_fraction < 1): "
                            "it runs no single networks; search with channel_fraction 1")
        nodes = {STEM: self.stem(x)}
        for cell in route:
            ins, start = self.space.inputs[cell.node], self.slices[cell.node].start
            fused = sum(self.transforms[start + ins.index(src)](nodes[src]) for src in cell.inputs)
            assert isinstance(fused, torch.Tensor)
            mixture = cast(MixtureLayer, self.mixtures[self.index[cell.node]])
            nodes[cell.node] = mixture.candidates[self.space.config.ops.index(cell.op)](fused)
        return self._output(nodes)

    def _output(self, nodes: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
        """The fixed output block over the last layer's cells."""
        feats = [nodes[c] for c in self.output_cells if c[1] == 0]
        feats += [r(nodes[c]) for r, c in zip(self.resizes, [c for c in self.output_cells if c[1] > 0])]
        return self.head(torch.cat(feats, 1))

    def forward(self, x: torch.Tensor, paths: PathSample | tuple[Cell, ...]) -> torch.Tensor:
        """Runs only the cells that reach the output block: a cell no sampled connection reads
        would cost time and memory and contribute nothing to the loss or any gradient. Given a
        route (a network's cells), runs that network alone (``forward_route``)."""
        if not isinstance(paths, PathSample):
            return self.forward_route(x, paths)
        nodes = {STEM: self.stem(x)}
        alpha_w = torch.softmax(self.alpha, -1)
        alive = self.alive(paths)
        for i, cell in enumerate(self.cells):
            if cell not in alive:
                continue
            ins, sl = self.space.inputs[cell], self.slices[cell]
            kept = paths.kept[cell]
            weights = self.input_weights(cell)
            w = [weights[k] for k in kept]  # views: a host index list would be copied to the GPU and wait
            total = sum(w)
            fused = sum(w[j] / total * self.transforms[sl.start + k](nodes[ins[k]]) for j, k in enumerate(kept))
            assert isinstance(fused, torch.Tensor)
            nodes[cell] = self.mixtures[i](fused, alpha_w[i])
        return self._output(nodes)
