"""Derivation of a DCNAS network.

``derive_topk`` (the default): per cell the ``derive_inputs`` strongest connections (largest
softmax(beta); ties to the earlier input) and the argmax op (ties to the first in ``ops``
order); then the cells that do not reach the output block are pruned (``DCNASSpace.arch_from``).

``derive_viterbi`` (Auto-DeepLab's decode, as an option): the single best scale path, one cell
per layer from the stem, each cell fed only by the path's cell of the previous layer. The path
and its ops are chosen jointly: the path maximises the sum, over its cells, of log softmax(beta)
of the transition taken plus the best log softmax(alpha) of the cell's op (ties to the finer
scale). Auto-DeepLab decodes its path by beta alone because its cell structure is decoded
separately; here a path's cells carry their op choice, so path and ops are one decision, and the
unconstrained decode is then the most probable network of the budget derivation below.

``derive_under_budget``: the most probable network whose predicted latency lies in
``[fill * budget, budget]``, as for DenseNAS, found exactly. A network's log p is that of the
decisions that made it: log softmax(beta) of every kept connection plus log softmax(alpha) of
every op, summed over all cells, also those pruned afterwards (they are counted at their best:
summing over the survivors only would favour networks with fewer cells, whatever their
weights), so the unconstrained derivation is the most probable of all. For the Viterbi decode,
log p sums the path's transitions and ops. Because a cell's cost counts only when some later
cell keeps it, costs do not decompose along one path and DenseNAS's dynamic program does not
apply; the choice is written instead as a 0-1 integer program (``binary_program.py``):

- variables: y (keep connection i of cell c), z (cell c runs op o), a (cell c is alive);
- each alive cell keeps exactly k = min(derive_inputs, n) inputs and one op
  (sum_i y_ci = k a_c, sum_o z_co = a_c); a kept input's source is alive (y_ci <= a_src); a cell
  of an earlier layer is alive only if an alive cell keeps it (a_c <= sum of its consumers' y);
  the last layer's cells are alive (the output block reads them all);
- latency: stem + output block + calibration offset + sum of y transform costs, z op costs and
  a fusion costs; log p: sum of y and z log-probabilities plus (1 - a_c) x the best choice of c.

The Viterbi program keeps one input per alive cell from the previous layer, one consumer per
alive cell before the last layer, and exactly one alive cell in the last layer, whose output
block (one scale resized to 1/4, the head) it pays. HiGHS solves either to a zero gap in well
under a second for the default 12-layer grid (609 connections); the result is priced with the
table, so it fits by the table's own sum (``Window``'s rule, the solver's tolerance). A budget that the
window cannot reach gets the most probable network that fits; a budget below the fastest network
is refused with that network's latency to seven digits (a rounded figure could read as fitting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nas2deploy.errors import UserError
from nas2deploy.search.binary_program import BinaryProgram
from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel
from nas2deploy.spaces.dcnas.supernet import DCNASSupernet, strongest
from nas2deploy.search.budget import DEFAULT_FILL, Window, check_budget
from nas2deploy.nets.cells import STEM, Cell, SegArch

Node = tuple[int, int]


def log_probs(net: DCNASSupernet) -> tuple[np.ndarray, dict[Node, np.ndarray]]:
    """log softmax(alpha) per cell and log softmax(beta) per cell's inputs, in float64 (a float32
    log of a softmax turns a gap of ~100 into -inf)."""
    with torch.no_grad():
        ops = torch.log_softmax(net.alpha.detach().double(), -1).cpu().numpy()
        inputs = {cell: torch.log_softmax(net.beta[net.slices[cell]].detach().double(), 0).cpu().numpy() for cell in net.cells}
    return ops, inputs


def derive_topk(net: DCNASSupernet, name: str = "derived") -> SegArch:
    space = net.space
    log_ops, log_ins = log_probs(net)
    chosen = {cell: tuple(space.inputs[cell][j] for j in strongest(log_ins[cell].tolist(), space.config.derive_inputs))
              for cell in net.cells}
    ops = {cell: space.config.ops[int(np.argmax(log_ops[i]))] for i, cell in enumerate(net.cells)}
    return space.arch_from(chosen, ops, name)


def _path_inputs(net: DCNASSupernet, cell: Node) -> list[int]:
    """Indices of the inputs a Viterbi path may take into ``cell``: the previous layer's cells."""
    return [i for i, src in enumerate(net.space.inputs[cell]) if src[0] == cell[0] - 1]


def derive_viterbi(net: DCNASSupernet, name: str = "derived") -> SegArch:
    """The jointly most probable scale path and ops (dynamic program over the layers)."""
    space = net.space
    log_ops, log_ins = log_probs(net)
    index = {cell: i for i, cell in enumerate(net.cells)}
    score: dict[Node, float] = {STEM: 0.0}
    back: dict[Node, Node] = {}
    for cell in net.cells:  # layer by layer: sources are final first
        options = [(score[space.inputs[cell][i]] + float(log_ins[cell][i]), space.inputs[cell][i])
                   for i in _path_inputs(net, cell) if space.inputs[cell][i] in score]
        if options:  # best score; ties to the finer source scale
            best, src = max(options, key=lambda o: (o[0], -o[1][1]))
            score[cell], back[cell] = best + float(log_ops[index[cell]].max()), src
    last = [c for c in net.cells if c[0] == space.config.layers - 1 and c in score]
    node = max(last, key=lambda c: (score[c], -c[1]))
    path = []
    while node != STEM:
        path.append(node)
        node = back[node]
    cells = tuple(Cell(c[0], c[1], space.config.ops[int(np.argmax(log_ops[index[c]]))], (back[c],)) for c in reversed(path))
    return space.make_arch(cells, name)


def derive(net: DCNASSupernet, name: str = "derived", viterbi: bool = False) -> SegArch:
    return derive_viterbi(net, name) if viterbi else derive_topk(net, name)


@dataclass
class _Layout:
    """Where each decision sits in the program's variable vector."""

    conn: dict[tuple[Node, int], int]  # (cell, input index) -> y
    op: dict[tuple[Node, int], int]  # (cell, op index) -> z
    alive: dict[Node, int]  # cell -> a


class BudgetProgram:
    """The 0-1 program of a DCNAS supernet's networks (top-k or Viterbi decode), priced by its
    latency model and scored by its log-probabilities."""

    def __init__(self, net: DCNASSupernet, model: DCNASLatencyModel, viterbi: bool = False):
        self.net, self.model, self.viterbi = net, model, viterbi
        space, cells = net.space, net.cells
        log_ops, log_ins = log_probs(net)
        last = space.config.layers - 1
        n_ops = len(space.config.ops)
        conns = [(c, i) for c in cells for i in (_path_inputs(net, c) if viterbi else range(len(space.inputs[c])))]
        layout = _Layout({key: j for j, key in enumerate(conns)},
                         {(c, o): len(conns) + ci * n_ops + o for ci, c in enumerate(cells) for o in range(n_ops)},
                         {c: len(conns) + len(cells) * n_ops + ci for ci, c in enumerate(cells)})
        n = len(conns) + len(cells) * (n_ops + 1)
        latency, score = np.zeros(n), np.zeros(n)
        lower, upper = np.zeros(n), np.ones(n)
        rows: list[tuple[dict[int, float], float, float]] = []
        consumers: dict[Node, list[int]] = {c: [] for c in cells}
        fixed_score = 0.0
        for ci, c in enumerate(cells):
            ins = [i for cc, i in conns if cc == c]
            k = 1 if viterbi else model.k[c]
            for i in ins:
                j = layout.conn[(c, i)]
                latency[j], score[j] = float(model.transform[c][i]), float(log_ins[c][i])
                src = space.inputs[c][i]
                if src != STEM:
                    consumers[src].append(j)
                    rows.append(({j: 1.0, layout.alive[src]: -1.0}, -np.inf, 0.0))  # a kept input's source is alive
            for o in range(n_ops):
                latency[layout.op[(c, o)]], score[layout.op[(c, o)]] = float(model.ops[ci, o]), float(log_ops[ci, o])
            a = layout.alive[c]
            rows.append(({**{layout.conn[(c, i)]: 1.0 for i in ins}, a: -float(k)}, 0.0, 0.0))
            rows.append(({**{layout.op[(c, o)]: 1.0 for o in range(n_ops)}, a: -1.0}, 0.0, 0.0))
            if viterbi:
                latency[a] = self._path_head_cost(c) if c[0] == last else 0.0
            else:
                latency[a] = model.fusion[c]
                best = float(np.sort(log_ins[c])[::-1][:k].sum() + log_ops[ci].max())
                score[a], fixed_score = -best, fixed_score + best  # a dead cell counts at its best
                if c[0] == last:
                    lower[a] = 1.0
        for c in cells:
            if c[0] != last:  # alive only if kept (top-k), or kept exactly once on a path (Viterbi)
                rows.append(({**{j: 1.0 for j in consumers[c]}, layout.alive[c]: -1.0}, 0.0, 0.0 if viterbi else np.inf))
        if viterbi:
            rows.append(({layout.alive[c]: 1.0 for c in cells if c[0] == last}, 1.0, 1.0))
        fixed = model.stem + model.table.offset_ms if viterbi else model.fixed  # a path pays its own output block
        self.layout = layout
        self.program = BinaryProgram(latency, score, rows, lower, upper, fixed, fixed_score)

    def _path_head_cost(self, cell: Node) -> float:
        """The output block of a path ending in ``cell``: its scale resized to 1/4, the head."""
        space = self.net.space
        arch = space.make_arch((Cell(cell[0], cell[1], space.config.ops[0], (STEM,)),), "head")
        return sum(self.model.table.cost(s) for s in arch.head_specs())

    def decode(self, x: np.ndarray, name: str) -> SegArch:
        net, space, layout = self.net, self.net.space, self.layout
        log_ops, log_ins = log_probs(net)
        chosen, ops = {}, {}
        for ci, cell in enumerate(net.cells):
            kept = [i for (c, i), j in layout.conn.items() if c == cell and x[j]]
            if not x[layout.alive[cell]]:  # dead: any choice, pruned below (top-k) or unused (path)
                kept = strongest(log_ins[cell].tolist(), 1 if self.viterbi else self.model.k[cell])
            chosen[cell] = tuple(space.inputs[cell][i] for i in kept)
            op = next((o for o in range(len(space.config.ops)) if x[layout.op[(cell, o)]]), int(np.argmax(log_ops[ci])))
            ops[cell] = space.config.ops[op]
        if not self.viterbi:
            return space.arch_from(chosen, ops, name)
        path = [c for c in net.cells if x[layout.alive[c]]]
        return space.make_arch(tuple(Cell(c[0], c[1], ops[c], chosen[c]) for c in path), name)

    def price(self, arch: SegArch) -> float:
        return self.model.table.predict(arch).best_ms

    def extreme(self, fastest: bool, name: str = "range") -> tuple[SegArch, float]:
        """The fastest (or slowest) network of this decode and its predicted latency."""
        arch = self.decode(self.program.extreme(fastest), name)
        return arch, self.price(arch)

    def latency_range(self) -> tuple[float, float]:
        """The predicted latencies of the fastest and the slowest network of this decode."""
        return self.extreme(True)[1], self.extreme(False)[1]

    def most_probable(self, lo_ms: float, hi_ms: float, tolerance_ms: float, name: str) -> SegArch | None:
        return self.program.solve_priced(lo_ms, hi_ms, tolerance_ms, lambda x: self.decode(x, name), self.price)


def log_prob(net: DCNASSupernet, arch: SegArch, viterbi: bool = False) -> float:
    """The log p that budget derivation maximises, of a network ``arch`` of ``net``'s space:
    its cells' kept connections and ops, plus every pruned cell at its best (top-k); or its
    path's transitions and ops (Viterbi)."""
    space = net.space
    log_ops, log_ins = log_probs(net)
    index = {cell: i for i, cell in enumerate(net.cells)}
    kept = {c.node: c for c in arch.cells}
    total = 0.0
    for cell in net.cells:
        i = index[cell]
        if cell in kept:
            total += sum(float(log_ins[cell][space.inputs[cell].index(src)]) for src in kept[cell].inputs)
            total += float(log_ops[i, space.config.ops.index(kept[cell].op)])
        elif not viterbi:
            k = min(space.config.derive_inputs, len(space.inputs[cell]))
            total += float(np.sort(log_ins[cell])[::-1][:k].sum() + log_ops[i].max())
    return total


def fastest_latency(net: DCNASSupernet, model: DCNASLatencyModel, viterbi: bool = False) -> float:
    """The predicted latency of the fastest network the derivation can return (exact)."""
    return latency_range(net, model, viterbi)[0]


def latency_range(net: DCNASSupernet, model: DCNASLatencyModel, viterbi: bool = False) -> tuple[float, float]:
    """The predicted latencies of the fastest and the slowest network (exact): the budgets the
    derivation can fill."""
    return BudgetProgram(net, model, viterbi).latency_range()


def derive_under_budget(net: DCNASSupernet, model: DCNASLatencyModel, budget_ms: float, name: str = "derived",
                        fill: float = DEFAULT_FILL, viterbi: bool = False) -> SegArch:
    """The most probable network whose predicted latency lies in ``[fill * budget, budget]``, or
    the most probable that fits when no network reaches the window (``Window``'s rule)."""
    check_budget(budget_ms, fill)
    window = Window(budget_ms, fill)
    program = BudgetProgram(net, model, viterbi)
    arch = program.most_probable(window.lo_ms, budget_ms, window.tolerance_ms, name) if fill > 0 else None
    arch = arch or program.most_probable(-np.inf, budget_ms, window.tolerance_ms, name)
    if arch is None:
        _, fastest_ms = program.extreme(True, name)
        raise UserError(f"no network of the space fits {budget_ms:g} ms: the fastest is {fastest_ms:.7g} ms with this table")
    return arch
