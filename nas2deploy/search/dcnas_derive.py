"""Derivation of a DCNAS network.

``derive_topk`` (the default): per cell the ``derive_inputs`` strongest connections (largest
softmax(beta); ties to the earlier input) and the argmax op (ties to the first in ``ops``
order); then the cells that do not reach the output block are pruned (``DCNASSpace.arch_from``).

``derive_viterbi`` (Auto-DeepLab's decode, as an option): the single best scale path, one cell
per layer from the stem, each cell fed only by the path's cell of the previous layer, maximising
the sum of log softmax(beta) of the transitions taken (ties to the finer scale). The output block
then reads that one cell of the last layer. Under a latency penalty (the budget sweep below) each
cell's best penalised op score joins the path score, so that cheaper scales can win.

``derive_under_budget``: the most probable network whose predicted latency lies in
``[fill * budget, budget]``, as for DenseNAS. A network's log p is that of the decisions that
made it: log softmax(beta) of every kept connection plus log softmax(alpha) of every op, summed
over all cells (also those pruned afterwards: summing over the survivors only would favour
networks with fewer cells, whatever their weights), so the unconstrained derivation is the most
probable of all. DenseNAS's exact dynamic
program does not carry over: a cell's cost counts only when some later cell keeps it, so the
costs do not decompose along one path. The choice here is a Lagrangian sweep: for a penalty
lambda, each decision takes the option maximising ``log p - lambda * latency`` (op latency per
op, transform latency per connection), which is the rule above for lambda = 0; lambda runs over
a geometric grid of both signs (a negative one buys latency to reach the window), every distinct
network is priced exactly by the table, and the most probable one in the window wins (else the
most probable that fits). It finds the networks on the convex hull of (latency, log p), which is
the usual approximation of a constrained choice; the table's exact price, not the penalty,
decides what fits.
"""

from __future__ import annotations

import numpy as np
import torch

from nas2deploy.errors import UserError
from nas2deploy.search.dcnas_latency import DCNASLatencyModel
from nas2deploy.search.dcnas_supernet import DCNASSupernet, strongest
from nas2deploy.search.derive import DEFAULT_FILL
from nas2deploy.seg_arch import STEM, Cell, SegArch

#: Penalties of the budget sweep, in nats per ms of the network's mean op latency: 10^-4 .. 10^4.
LAMBDA_GRID = np.logspace(-4, 4, 81)

Node = tuple[int, int]


def _scores(net: DCNASSupernet, model: DCNASLatencyModel | None, lam: float) -> tuple[torch.Tensor, dict[Node, torch.Tensor]]:
    """Per cell: ``log p - lam * latency`` of each op and of each incoming connection."""
    with torch.no_grad():
        ops = torch.log_softmax(net.alpha, -1)
        inputs = {cell: torch.log(net.input_weights(cell)) for cell in net.cells}
        if lam and model is not None:
            ops = ops - lam * model.ops
            inputs = {cell: w - lam * model.transform[cell] for cell, w in inputs.items()}
    return ops, inputs


def _topk(net: DCNASSupernet, name: str, model: DCNASLatencyModel | None, lam: float) -> tuple[SegArch, float]:
    """Top-k inputs and best op per cell under penalty ``lam``; with the log p of the decisions.

    Cells are decided from the last layer back, so an input is priced with what keeping it
    costs: its transform, plus, when no cell decided so far keeps its source alive, the
    source's own op and fusion. Without that, a negative penalty could not buy a larger network
    (more cells kept alive), only costlier ops in the same cells. Cells that end up pruned keep
    their unconstrained choice (it is irrelevant to the network; the log p counts it at its best,
    so that the unconstrained derivation is the most probable of all).
    """
    space = net.space
    op_scores, in_scores = _scores(net, model, lam)
    log_ops, log_ins = _scores(net, None, 0.0)
    index = {cell: i for i, cell in enumerate(net.cells)}
    best_op = {cell: int(torch.argmax(op_scores[index[cell]])) for cell in net.cells}

    def own_cost(cell: Node) -> float:
        if model is None or cell == STEM:
            return 0.0
        return float(model.ops[index[cell], best_op[cell]]) + model.fusion[cell]

    alive = {cell for cell in net.cells if cell[0] == space.config.layers - 1}
    chosen, ops, logp = {}, {}, 0.0
    for cell in reversed(net.cells):
        i = index[cell]
        if cell not in alive:  # pruned: its unconstrained choice, counted at its best
            keep = strongest(log_ins[cell].tolist(), space.config.derive_inputs)
            op = int(torch.argmax(log_ops[i]))
        else:
            scores = [float(v) - (lam * own_cost(src) if src not in alive else 0.0)
                      for v, src in zip(in_scores[cell], space.inputs[cell])]
            keep = strongest(scores, space.config.derive_inputs)
            op = best_op[cell]
            alive.update(space.inputs[cell][j] for j in keep)
        chosen[cell] = tuple(space.inputs[cell][j] for j in keep)
        ops[cell] = space.config.ops[op]
        logp += float(log_ops[i, op]) + float(log_ins[cell][keep].sum())
    return space.arch_from(chosen, ops, name), logp


def _viterbi(net: DCNASSupernet, name: str, model: DCNASLatencyModel | None, lam: float) -> tuple[SegArch, float]:
    """The best scale path under penalty ``lam``; with the log p of its transitions and ops."""
    space = net.space
    op_scores, in_scores = _scores(net, model, lam)
    log_ops, log_ins = _scores(net, None, 0.0)
    best_op = {cell: int(torch.argmax(op_scores[i])) for i, cell in enumerate(net.cells)}
    op_score = {cell: float(op_scores[i, best_op[cell]]) if lam else 0.0 for i, cell in enumerate(net.cells)}
    score: dict[Node, float] = {STEM: 0.0}
    back: dict[Node, tuple[Node, int]] = {}
    for layer in range(space.config.layers):
        for cell in [c for c in net.cells if c[0] == layer]:
            options = [(score[src] + float(in_scores[cell][i]) + op_score[cell], src, i)
                       for i, src in enumerate(space.inputs[cell]) if src in score and src[0] == layer - 1]
            if options:  # best score; ties to the finer source scale (max keeps the first seen)
                best = max(options, key=lambda o: (o[0], -o[1][1]))
                score[cell], back[cell] = best[0], (best[1], best[2])
    last = [c for c in net.cells if c[0] == space.config.layers - 1 and c in score]
    node = max(last, key=lambda c: (score[c], -c[1]))
    path = []
    while node != STEM:
        path.append(node)
        node = back[node][0]
    index = {cell: i for i, cell in enumerate(net.cells)}
    logp = sum(float(log_ins[c][back[c][1]]) + float(log_ops[index[c], best_op[c]]) for c in path)
    cells = tuple(Cell(c[0], c[1], space.config.ops[best_op[c]], (back[c][0],)) for c in reversed(path))
    return space.make_arch(cells, name), logp


def derive_topk(net: DCNASSupernet, name: str = "derived") -> SegArch:
    return _topk(net, name, None, 0.0)[0]


def derive_viterbi(net: DCNASSupernet, name: str = "derived") -> SegArch:
    return _viterbi(net, name, None, 0.0)[0]


def derive(net: DCNASSupernet, name: str = "derived", viterbi: bool = False) -> SegArch:
    return derive_viterbi(net, name) if viterbi else derive_topk(net, name)


def _sweep(net: DCNASSupernet, model: DCNASLatencyModel, viterbi: bool, name: str) -> list[tuple[SegArch, float, float]]:
    """Every distinct network of the Lagrangian sweep: (network, predicted ms, log p)."""
    decode = _viterbi if viterbi else _topk
    unit = float(model.ops.mean())
    found: dict[tuple[Cell, ...], tuple[SegArch, float, float]] = {}
    for lam in [0.0, *(LAMBDA_GRID / unit), *(-LAMBDA_GRID / unit)]:
        arch, logp = decode(net, name, model, float(lam))
        if arch.cells not in found or logp > found[arch.cells][2]:
            found[arch.cells] = (arch, model.table.predict(arch).best_ms, logp)
    return list(found.values())


def fastest_latency(net: DCNASSupernet, model: DCNASLatencyModel, viterbi: bool = False) -> float:
    """The lowest predicted latency the budget derivation reaches (its sweep's fastest network)."""
    return latency_range(net, model, viterbi)[0]


def latency_range(net: DCNASSupernet, model: DCNASLatencyModel, viterbi: bool = False) -> tuple[float, float]:
    """The predicted latencies of the sweep's fastest and slowest networks: the budgets the
    derivation can fill."""
    found = [ms for _, ms, _ in _sweep(net, model, viterbi, "range")]
    return min(found), max(found)


def derive_under_budget(net: DCNASSupernet, model: DCNASLatencyModel, budget_ms: float, name: str = "derived",
                        fill: float = DEFAULT_FILL, viterbi: bool = False) -> SegArch:
    """The most probable swept network whose predicted latency lies in ``[fill * budget, budget]``,
    or fits at all when none reaches the window."""
    if budget_ms <= 0:
        raise UserError(f"--budget-ms must be positive, got {budget_ms:g}")
    if not 0 <= fill <= 1:
        raise UserError(f"--fill must lie in [0, 1], got {fill:g}")
    found = _sweep(net, model, viterbi, name)
    fits = [f for f in found if f[1] <= budget_ms]
    if not fits:
        raise UserError(
            f"no network of the space fits {budget_ms:g} ms: the fastest the derivation reaches is "
            f"{min(ms for _, ms, _ in found):.3f} ms with this table"
        )
    window = [f for f in fits if f[1] >= fill * budget_ms] or fits
    return max(window, key=lambda f: (f[2], -f[1]))[0]
