"""Differentiable expected latency of the DCNAS supernet, from a LatencyTable.

The derived network keeps, per cell, the ``k = min(derive_inputs, n)`` strongest of its n
inputs and the argmax op, then prunes the cells that do not reach the output block. The
relaxation, per cell c with input weights w = softmax(beta_c):

- connection i is kept with probability ``q_ci = min(1, k * w_i)`` (k equal weights give 1 on
  each kept input and 0 elsewhere);
- c is alive with probability ``a_c = 1`` in the last layer, else
  ``1 - prod_d (1 - a_d * q_dc)`` over the cells d that may take c as input;
- ``cost(c) = a_c * (sum_i q_ci * transform_ci + fusion(k) + sum_o softmax(alpha_c)_o * op_co)``.

Expected latency = stem + sum_c cost(c) + output block (+ the calibration's offset; each
non-free op's cost is ``scale * latency + per_op_ms`` when the table is calibrated, as for
DenseNAS). When every cell's weights are one-hot in this sense (k equal weights, one op), the
relaxation is exact: it equals ``LatencyTable.predict`` of the derived SegArch (a test).
"""

from __future__ import annotations

import torch

from nas2deploy.latency.table import LatencyTable
from nas2deploy.ops import AddN
from nas2deploy.spaces.dcnas.supernet import DCNASSupernet


class DCNASLatencyModel:
    def __init__(self, net: DCNASSupernet, table: LatencyTable):
        space = net.space
        self.net, self.table, self.calibration = net, table, table.calibration
        table.require(space.op_specs(), f"the {space.name} space")
        cost = table.cost

        self.k = {c: min(space.config.derive_inputs, len(space.inputs[c])) for c in net.cells}
        # float64: derivation sums these exactly as the table does; expected() uses copies cast to
        # the weights' device and dtype (``costs_like``)
        self.transform = {c: torch.tensor([cost(space.transform_spec(src, c)) for src in space.inputs[c]], dtype=torch.float64)
                          for c in net.cells}
        self._on: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, dict[tuple[int, int], torch.Tensor]]] = {}
        self.fusion = {}
        for c in net.cells:
            w, h = space.config.scale_widths[c[1]], space.side(c[1])
            self.fusion[c] = cost(AddN(w, h, h, self.k[c])) if self.k[c] > 1 else 0.0
        self.ops = torch.tensor([[cost(s) for s in space.candidates(c)] for c in net.cells], dtype=torch.float64)
        whole = space.dense_arch
        self.stem = sum(cost(s) for s in whole.stem_specs())
        self.head = sum(cost(s) for s in whole.head_specs())  # every cell of the last layer (top-k decode)
        self.fixed = self.stem + self.head + table.offset_ms
        # consumers: for each cell, (consumer cell, index of this cell among the consumer's inputs)
        self.consumers: dict[tuple[int, int], list[tuple[tuple[int, int], int]]] = {c: [] for c in net.cells}
        for d in net.cells:
            for i, src in enumerate(space.inputs[d]):
                if src in self.consumers:
                    self.consumers[src].append((d, i))
        self.last = space.config.layers - 1

    def costs_like(self, ref: torch.Tensor) -> tuple[torch.Tensor, dict[tuple[int, int], torch.Tensor]]:
        """(op costs, transform costs per cell) on ``ref``'s device and dtype, copied once per device."""
        key = (ref.device, ref.dtype)
        if key not in self._on:
            self._on[key] = (self.ops.to(ref), {c: t.to(ref) for c, t in self.transform.items()})
        return self._on[key]

    def expected(self, alpha_w: torch.Tensor, input_w: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
        keep = {c: torch.clamp(self.k[c] * input_w[c], max=1.0) for c in self.net.cells}
        alive: dict[tuple[int, int], torch.Tensor] = {}
        total = alpha_w.new_tensor(self.fixed)
        ops, transform = self.costs_like(alpha_w)
        one = alpha_w.new_ones(())
        for i in range(len(self.net.cells) - 1, -1, -1):
            c = self.net.cells[i]
            if c[0] == self.last:
                alive[c] = one
            else:
                dead = one
                for d, j in self.consumers[c]:
                    dead = dead * (1 - alive[d] * keep[d][j])
                alive[c] = 1 - dead
            cell_cost = (keep[c] * transform[c]).sum() + self.fusion[c] + (alpha_w[i] * ops[i]).sum()
            total = total + alive[c] * cell_cost
        return total

    def __call__(self) -> torch.Tensor:
        """The supernet's current expected latency, differentiable in alpha and beta."""
        net = self.net
        return self.expected(torch.softmax(net.alpha, -1), {c: net.input_weights(c) for c in net.cells})
