"""The DenseNAS MobileNetV2-based search space, as published (reference.md section 1).

Eighteen nodes of growing width: node 0 is the fixed stem output (conv3x3 s2 then MBConv k3 e1),
nodes 1..16 are searchable blocks (head layers, one per incoming edge, then stacking layers),
node 17 is the fixed tail (one conv1x1 -> 1984 branch per incoming edge, global pool, linear).

Connection rule (published code): block i feeds i+1 .. i+4, stopping at the first target whose
connection group is more than one group ahead of i's, or whose resolution ratio H_i / H_j is
neither 1 nor 2; ratio 2 makes that edge's head layer stride 2.

Variants are configurations of the same class, not copies: ``input_size`` picks the resolution
schedule (224: ImageNet strides; below 128: CIFAR strides, where the stem and the first block
keep the resolution), ``width_mult`` scales every width to a multiple of 8 (MobileNet's rule),
``max_stack_layers`` caps the three stacking layers per block (small spaces for tests and the
demo), ``num_classes`` sizes the classifier.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.nets import Network
from nas2deploy.nets.chain import Arch, Block, stem_specs, tail_specs
from nas2deploy.ops import MBConv, OpSpec, candidate_layer
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.validate import MAX_CLASSES, MAX_SIDE

WIDTHS = (16, 24, 32, 40, 48, 56, 64, 72, 96, 112, 128, 160, 176, 192, 320, 352, 384, 1984)
GROUPS = (0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7)
STACK_LAYERS = (0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 0)
# Downsampling factor of each node relative to the input.
IMAGENET_REDUCTIONS = (2, 4, 8, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32, 32, 32)
CIFAR_REDUCTIONS = (1, 1, 2, 2, 2, 4, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8)
HEAD_OPS = ("k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6")
STACK_OPS = (*HEAD_OPS, "skip")
MAX_FANOUT = 4


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of ``divisor``, never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class DenseNASConfig:
    input_size: int = 224
    width_mult: float = 1.0
    num_classes: int = 1000
    max_stack_layers: int = 3

    def __post_init__(self) -> None:
        if not 32 <= self.input_size <= MAX_SIDE or self.input_size % 32:
            raise UserError(f"--input-size must be a multiple of 32 in [32, {MAX_SIDE}], got {self.input_size}")
        if not 0 < self.width_mult <= 4:
            raise UserError(f"--width-mult must be in (0, 4], got {self.width_mult}")
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise UserError(f"--num-classes must be in [1, {MAX_CLASSES}], got {self.num_classes}")
        if not 0 <= self.max_stack_layers <= 3:
            raise UserError(f"--max-stack-layers must be between 0 and 3, got {self.max_stack_layers}")

    @property
    def reductions(self) -> tuple[int, ...]:
        return IMAGENET_REDUCTIONS if self.input_size >= 128 else CIFAR_REDUCTIONS


@dataclass(frozen=True)
class Edge:
    src: int
    dst: int
    stride: int


@dataclass(frozen=True)
class Route:
    """One network of the space as its choices: the block path (its edges, the tail's included),
    each visited block's head op and its stacking ops. What ``sample_route`` draws, what the
    supernet runs alone (a single-path step, the inherited weights of one network), what
    ``make_arch`` turns into an Arch, and, as ``to_dict``, what a one-shot search records of a
    network it found (an Arch alone does not say which supernet blocks it came from: widths
    rounded to multiples of 8 can repeat)."""

    edges: tuple[Edge, ...]
    heads: tuple[str, ...]
    stacks: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [e.dst for e in self.edges], "heads": list(self.heads), "stacks": [list(s) for s in self.stacks]}


class DenseNASSpace(SearchSpace):
    name = "densenas"

    def __init__(self, config: DenseNASConfig | None = None):
        self.config = config or DenseNASConfig()
        cfg = self.config
        self.widths = tuple(make_divisible(w * cfg.width_mult) for w in WIDTHS)
        self.sizes = tuple(cfg.input_size // r for r in cfg.reductions)
        self.stack_layers = tuple(min(n, cfg.max_stack_layers) for n in STACK_LAYERS)
        self.tail_node = len(WIDTHS) - 1
        self.edges = self._connect()

    def _connect(self) -> tuple[Edge, ...]:
        edges = []
        for i in range(self.tail_node):
            for j in range(i + 1, min(i + MAX_FANOUT, self.tail_node) + 1):
                ratio = self.sizes[i] / self.sizes[j]
                if GROUPS[j] - GROUPS[i] > 1 or ratio not in (1, 2):
                    break
                edges.append(Edge(i, j, int(ratio)))
        return tuple(edges)

    def out_edges(self, node: int) -> list[Edge]:
        return [e for e in self.edges if e.src == node]

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    # -- the layers of the graph ---------------------------------------------------------------
    def stem_specs(self) -> list[OpSpec]:
        """The chain's stem (``nets.chain``): conv3x3 then MBConv k3 e1, both at the first width."""
        return stem_specs(self.config.input_size, self.widths[0], self.widths[0], self.config.reductions[0])

    def _tail(self, node: int) -> list[OpSpec]:
        """The chain's tail (``nets.chain``) after ``node``: its conv1x1 branch and the classifier."""
        c, h = self.widths[node], self.sizes[node]
        return tail_specs(c, h, h, self.widths[self.tail_node], self.config.num_classes)

    def head_candidates(self, edge: Edge) -> list[OpSpec]:
        """Head mixed op of ``edge``; edges into the tail are the fixed conv1x1 branch."""
        c, h = self.widths[edge.src], self.sizes[edge.src]
        if edge.dst == self.tail_node:
            return self._tail(edge.src)[:1]
        return [candidate_layer(n, c, h, h, self.widths[edge.dst], edge.stride) for n in HEAD_OPS]

    def stack_candidates(self, node: int) -> list[OpSpec]:
        c, h = self.widths[node], self.sizes[node]
        return [candidate_layer(n, c, h, h, c, 1) for n in STACK_OPS]

    def classifier_spec(self) -> OpSpec:
        return self._tail(self.tail_node)[-1]

    @cached_property
    def _unique_specs(self) -> list[OpSpec]:
        specs: dict[str, OpSpec] = {}
        candidates = [*self.stem_specs(), self.classifier_spec()]
        for edge in self.edges:
            candidates += self.head_candidates(edge)
        for node, layers in enumerate(self.stack_layers):
            if layers:
                candidates += self.stack_candidates(node)
        for spec in candidates:
            if not spec.is_free:
                specs.setdefault(spec.key, spec)
        return sorted(specs.values(), key=lambda s: s.key)

    def op_specs(self) -> list[OpSpec]:
        return list(self._unique_specs)

    def reference_op(self) -> OpSpec:
        """k5 e6 stacking op of node 1: ~1 ms on one CPU core at 224, long enough to time stably."""
        c, h = self.widths[1], self.sizes[1]
        return MBConv(c, h, h, c, 5, 6, 1)

    # -- counting ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        paths = [0] * (self.tail_node + 1)
        archs = [0] * (self.tail_node + 1)
        paths[self.tail_node] = archs[self.tail_node] = 1
        for node in range(self.tail_node - 1, -1, -1):
            for e in self.out_edges(node):
                if e.dst == self.tail_node:
                    choices = 1
                else:
                    choices = len(HEAD_OPS) * len(STACK_OPS) ** self.stack_layers[e.dst]
                paths[node] += paths[e.dst]
                archs[node] += choices * archs[e.dst]
        head_edges = [e for e in self.edges if e.dst != self.tail_node]
        return {
            "nodes": self.tail_node + 1,
            "edges": len(self.edges),
            "head_mixed_ops": len(head_edges),
            "stacking_mixed_ops": sum(self.stack_layers),
            "block_paths": paths[0],
            "unique_ops": len(self._unique_specs),
            "architectures": archs[0],
        }

    # -- sampling ------------------------------------------------------------------------------
    def make_arch(self, path: tuple[Edge, ...], heads: list[str], stacks: list[tuple[str, ...]], name: str) -> Arch:
        """The Arch of a block path (its edges, the tail's included), each block's head op and
        stacking ops (``skip`` vanishes): the one place DenseNAS networks are made."""
        blocks = [Block(self.widths[e.dst], e.stride, head, tuple(op for op in stack if op != "skip"))
                  for e, head, stack in zip([e for e in path if e.dst != self.tail_node], heads, stacks)]
        cfg = self.config
        return Arch(cfg.input_size, cfg.num_classes, self.widths[0], self.widths[0], cfg.reductions[0], tuple(blocks),
                    self.widths[self.tail_node], name)

    def sample_route(self, rng: random.Random) -> Route:
        """Path uniform over out-edges, ops uniform per layer."""
        path, heads, stacks = [], [], []
        node = 0
        while node != self.tail_node:
            edge = rng.choice(self.out_edges(node))
            path.append(edge)
            node = edge.dst
            if node != self.tail_node:
                stacks.append(tuple(rng.choice(STACK_OPS) for _ in range(self.stack_layers[node])))
                heads.append(rng.choice(HEAD_OPS))
        return Route(tuple(path), tuple(heads), tuple(stacks))

    def sample_arch(self, rng: random.Random) -> Arch:
        return self.route_arch(self.sample_route(rng), "sampled")

    def route_arch(self, route: Route, name: str) -> Arch:
        return self.make_arch(route.edges, list(route.heads), list(route.stacks), name)

    def routes_of_arch(self, arch: Network) -> list[Route]:
        """The routes that make ``arch`` (``make_arch``'s inverse), for scoring a network that
        records none (derived by the gradient strategy, drawn by ``space sample``) with a one-shot
        supernet's weights. Widths that repeat after rounding can give several paths to one
        network, each through other supernet blocks; a block's stacking ops take its first
        layers and ``skip`` the rest. Empty when ``arch`` is not a network of the space."""
        if not isinstance(arch, Arch):
            return []
        blocks = list(arch.blocks)
        if (arch.input_size, arch.num_classes, arch.tail) != (self.config.input_size, self.config.num_classes,
                                                                 self.widths[self.tail_node]):
            return []

        def paths(node: int, i: int) -> list[list[Edge]]:
            if i == len(blocks):
                return [[e] for e in self.out_edges(node) if e.dst == self.tail_node]
            return [[e, *rest] for e in self.out_edges(node)
                    if e.dst != self.tail_node and (self.widths[e.dst], e.stride) == (blocks[i].out, blocks[i].stride)
                    and len(blocks[i].stack) <= self.stack_layers[e.dst] for rest in paths(e.dst, i + 1)]

        stacks = [(*b.stack, *["skip"] * 3) for b in blocks]
        return [Route(tuple(path), tuple(b.head for b in blocks),
                      tuple(stack[:self.stack_layers[e.dst]] for stack, e in zip(stacks, path)))
                for path in paths(0, 0)]

    def route_from_dict(self, doc: Any, source: str = "a route") -> Route:
        """A ``Route.to_dict`` read back, every choice checked against the space."""
        from nas2deploy.validate import Field

        f = Field(doc, source, "search again")
        nodes = [n.int(1, self.tail_node) for n in f["nodes"].list(min_len=1, max_len=self.tail_node)]
        heads = [h.str(HEAD_OPS) for h in f["heads"].list(max_len=self.tail_node)]
        stacks = [tuple(op.str(STACK_OPS) for op in layer.list(max_len=3)) for layer in f["stacks"].list(max_len=self.tail_node)]
        edges, node = [], 0
        for dst in nodes:
            edge = next((e for e in self.out_edges(node) if e.dst == dst), None)
            if edge is None:
                raise f["nodes"].error(f"holds no edge {node} -> {dst} of the space", shown=False)
            edges.append(edge)
            node = dst
        visited = [e.dst for e in edges if e.dst != self.tail_node]
        if node != self.tail_node or len(heads) != len(visited) or \
                [len(s) for s in stacks] != [self.stack_layers[n] for n in visited]:
            raise f.error("is not a route of the space (its path must reach the tail, with a head op and the stacking ops "
                          "of every block it visits)", shown=False)
        return Route(tuple(edges), tuple(heads), tuple(stacks))
