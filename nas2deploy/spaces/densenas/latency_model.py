"""Differentiable expected latency of the DenseNAS supernet, from a LatencyTable.

Chained backwards over the DAG (reference.md section 2):
``cost(b) = stack(b) + sum_j p_bj * (head_{b->j} + cost(j))``, total = stem + cost(0) +
classifier, where a layer's cost is ``sum_o w_o * cost_o`` with w = softmax(alpha) over all of
its candidates (the paper's form; the published code's softmax over the sampled ops only is a
quirk not copied).

Per-op costs are the table's medians, or, when the table is calibrated, each non-free op's
``scale * latency + per_op_ms`` with ``offset_ms`` added once: the calibration is affine in the
ops, so the same chain yields the calibrated expectation. For one-hot alpha and beta the result
equals ``LatencyTable.predict`` of the derived architecture (raw or calibrated).
"""

from __future__ import annotations

import torch

from nas2deploy.latency.table import LatencyTable
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet


class LatencyModel:
    def __init__(self, net: DenseNASSupernet, table: LatencyTable):
        space = net.space
        self.net = net
        self.calibration = table.calibration
        specs = [*space.stem_specs(), space.classifier_spec()]
        for e in space.edges:
            specs += space.head_candidates(e)
        for n, _ in net.stack_layers:
            specs += space.stack_candidates(n)
        table.require(specs, f"the {space.name} supernet")
        self.table = table
        cost = table.cost
        n_stack_ops = len(space.stack_candidates(1))
        # float64: derivation sums these exactly as the table does; expected() casts to the weights
        self.head = torch.tensor([[cost(s) for s in space.head_candidates(e)] for e in net.head_edges], dtype=torch.float64)
        self.stack = torch.tensor([[cost(s) for s in space.stack_candidates(n)] for n, _ in net.stack_layers],
                                  dtype=torch.float64).reshape(
            len(net.stack_layers), n_stack_ops)  # (0, 7) when the space has no stacking layers
        self.stack_node = torch.tensor([n for n, _ in net.stack_layers], dtype=torch.long)
        self.tail = torch.tensor([cost(space.head_candidates(e)[0]) for e in net.tail_edges], dtype=torch.float64)
        self.fixed = sum(cost(s) for s in space.stem_specs()) + cost(space.classifier_spec()) + table.offset_ms
        self._on: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def costs_like(self, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(head, stack, tail, stack node) on ``ref``'s device and dtype, copied once per device."""
        key = (ref.device, ref.dtype)
        if key not in self._on:
            self._on[key] = (self.head.to(ref), self.stack.to(ref), self.tail.to(ref), self.stack_node.to(ref.device))
        return self._on[key]

    def expected(self, head_w: torch.Tensor, stack_w: torch.Tensor, path_p: torch.Tensor) -> torch.Tensor:
        """Expected latency (ms) for op probabilities per mixed op and path probabilities per edge."""
        net, space = self.net, self.net.space
        n_nodes = space.tail_node + 1
        head, stack, tail, stack_node = self.costs_like(head_w)
        zero = head_w.new_zeros(())
        stack_cost = head_w.new_zeros(n_nodes).index_add(0, stack_node, (stack_w * stack).sum(-1))
        head_cost = (head_w * head).sum(-1)
        cost: list[torch.Tensor] = [zero] * n_nodes
        for b in range(space.tail_node - 1, -1, -1):
            total = stack_cost[b]
            for ei in range(net.out_slices[b].start, net.out_slices[b].stop):
                e = space.edges[ei]
                edge_cost = head_cost[net.head_row[e]] if e in net.head_row else tail[net.tail_row[e]]
                total = total + path_p[ei] * (edge_cost + cost[e.dst])
            cost[b] = total
        return self.fixed + cost[0]

    def __call__(self) -> torch.Tensor:
        """The supernet's current expected latency, differentiable in alpha and beta."""
        net = self.net
        return self.expected(torch.softmax(net.alpha_head, -1), torch.softmax(net.alpha_stack, -1), net.path_probs())
