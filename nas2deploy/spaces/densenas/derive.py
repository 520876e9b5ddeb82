"""Derivation: from a searched supernet to one architecture (an Arch).

``derive_argmax`` follows the paper: per layer the candidate with the largest alpha (stacking
layers whose argmax is skip are dropped), and the block path by Viterbi over the path
probabilities, in log space: P(0) = 0, P(j) = max_i P(i) + log p_ij, backtracked from the tail.
Ties go to the edge listed first, i.e. the source block with the smallest index, and for ops to
the candidate listed first (``HEAD_OPS`` / ``STACK_OPS`` order).

``derive_under_budget`` goes beyond the paper: the most probable architecture, path and ops
together (log p of the path plus log softmax(alpha) of each chosen op), whose predicted latency
is within the budget. It is a dynamic program over the DAG whose state is the latency spent so
far, discretised in steps of ``resolution`` ms with every op's cost rounded *up*; so whatever it
returns truly fits the budget, and it is at least as probable as the best architecture that fits
``budget - L * resolution`` (L: the most layers on any path, plus one for the fixed stem and
tail), a loss of at most that margin. The default resolution, budget / 10000 (the span from a
negative calibration offset to the budget when there is one), keeps the margin under 0.6% of the
budget for the published space (L <= 56). A budget that only the exact fastest architecture fits
(within the margin) returns that architecture; when nothing fits, it says so and gives the
fastest achievable latency, which then lies above the budget.

``fill`` (default ``DEFAULT_FILL`` = 0.9, ``search/budget.py`` says why) narrows the window to
``[fill * budget, budget]``: the most probable architecture that *uses* at least that share of
the budget. With a long search whose expected latency has settled at the budget the window
changes little. When no
architecture reaches the window (a budget above the slowest network of the space), the most
probable one that fits is returned (its predicted latency shows it). The window's lower edge is
exact up to the same resolution margin as the budget. ``fill=0`` is the plain
most-probable-within-budget derivation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from nas2deploy.nets.chain import Arch
from nas2deploy.errors import UserError
from nas2deploy.search.budget import DEFAULT_FILL, check_budget
from nas2deploy.spaces.densenas.latency_model import LatencyModel
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet
from nas2deploy.spaces.densenas.space import HEAD_OPS, STACK_OPS, Edge



@dataclass(frozen=True)
class Choice:
    """A concrete architecture of the supernet: the edges of its path and each layer's op."""

    path: tuple[Edge, ...]
    head_ops: dict[Edge, int]
    stack_ops: dict[int, int]  # alpha_stack row -> candidate index

    def to_arch(self, net: DenseNASSupernet, name: str = "derived") -> Arch:
        blocks = [e for e in self.path if e.dst != net.space.tail_node]
        stacks = [tuple(STACK_OPS[self.stack_ops[r]] for r in net.stack_rows.get(e.dst, [])) for e in blocks]
        return net.space.make_arch(self.path, [HEAD_OPS[self.head_ops[e]] for e in blocks], stacks, name)


def _log_probs(net: DenseNASSupernet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log softmax of alpha (head, stacking) and of beta per source block, in float64: the log of
    a float32 softmax is -inf for a gap above ~100, which would make every path through that
    edge impossible."""
    with torch.no_grad():
        path = torch.cat([torch.log_softmax(net.beta[s].detach().double(), 0) for _, s in sorted(net.out_slices.items())])
        return (torch.log_softmax(net.alpha_head.detach().double(), -1).cpu().numpy(),
                torch.log_softmax(net.alpha_stack.detach().double(), -1).cpu().numpy(),
                path.cpu().numpy())


def viterbi_path(net: DenseNASSupernet) -> tuple[Edge, ...]:
    space = net.space
    _, _, log_p = _log_probs(net)
    best = [-math.inf] * (space.tail_node + 1)
    back: list[int | None] = [None] * (space.tail_node + 1)
    best[0] = 0.0
    for ei, e in enumerate(space.edges):  # edges come in source order: sources are final first
        score = best[e.src] + log_p[ei]
        if score > best[e.dst]:  # strict: ties keep the earlier edge
            best[e.dst], back[e.dst] = score, ei
    path = []
    node = space.tail_node
    while node != 0:
        edge_index = back[node]
        assert edge_index is not None, "the tail is reachable from the stem by construction"
        path.append(space.edges[edge_index])
        node = space.edges[edge_index].src
    return tuple(reversed(path))


def argmax_choice(net: DenseNASSupernet) -> Choice:
    head_lp, stack_lp, _ = _log_probs(net)
    rows = net.head_row
    path = viterbi_path(net)
    return Choice(path, {e: int(np.argmax(head_lp[rows[e]])) for e in path if e in rows},
                  {r: int(np.argmax(stack_lp[r])) for r in range(len(net.stack_layers))})


def derive_argmax(net: DenseNASSupernet, name: str = "derived") -> Arch:
    return argmax_choice(net).to_arch(net, name)


def log_prob(net: DenseNASSupernet, choice: Choice) -> float:
    """Joint log-probability of an architecture: its path's edges and its layers' ops."""
    head_lp, stack_lp, log_p = _log_probs(net)
    rows = net.head_row
    on_path = {e.dst for e in choice.path}
    total = sum(log_p[net.edge_index(e)] for e in choice.path)
    total += sum(head_lp[rows[e]][choice.head_ops[e]] for e in choice.path if e in rows)
    total += sum(stack_lp[r][choice.stack_ops[r]] for r, (n, _) in enumerate(net.stack_layers) if n in on_path)
    return float(total)


def _shift_max(values: np.ndarray, options: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """out[b] = max_k values[b - d_k] + lp_k (max-plus convolution); with argmax and source bucket."""
    size = len(values)
    out = np.full(size, -np.inf)
    arg = np.full(size, -1)
    prev = np.full(size, -1)
    for k, (d, lp) in enumerate(options):
        lo, hi = max(0, d), min(size, size + d)
        if lo >= hi:
            continue
        cand = np.full(size, -np.inf)
        cand[lo:hi] = values[lo - d:hi - d] + lp
        better = cand > out
        out[better], arg[better] = cand[better], k
        prev[better] = (np.arange(size) - d)[better]
    return out, arg, prev


def fastest_latency(model: LatencyModel) -> float:
    """The lowest predicted latency of any architecture of the space (exact, no discretisation)."""
    return _extreme(model, min)[0]


def slowest_latency(model: LatencyModel) -> float:
    """The highest predicted latency of any architecture of the space."""
    return _extreme(model, max)[0]


def _extreme(model: LatencyModel, pick: Callable[[Iterable[float]], float]) -> tuple[float, Choice]:
    """The lowest (``min``) or highest (``max``) predicted latency of the space, and the
    architecture that has it: a shortest / longest path over the blocks, each layer at its
    cheapest / dearest candidate."""
    net, space = model.net, model.net.space
    stack_ops = {r: int(np.argmin(row) if pick is min else np.argmax(row)) for r, row in enumerate(model.stack.tolist())}
    stack = np.zeros(space.tail_node + 1)
    for r, (n, _) in enumerate(net.stack_layers):
        stack[n] += float(model.stack[r, stack_ops[r]])
    rows, tails = net.head_row, net.tail_row
    best: list[float | None] = [None] * (space.tail_node + 1)
    back: list[tuple[Edge, int] | None] = [None] * (space.tail_node + 1)
    best[0] = model.fixed
    for e in space.edges:
        start = best[e.src]
        if start is None:
            continue
        if e in rows:
            costs = model.head[rows[e]].tolist()
            op = costs.index(pick(costs))
            head = costs[op]
        else:
            op, head = -1, float(model.tail[tails[e]])
        value = start + head + stack[e.dst]
        known = best[e.dst]
        if known is None or (value < known if pick is min else value > known):  # ties keep the earlier edge
            best[e.dst], back[e.dst] = value, (e, op)
    final = best[space.tail_node]
    assert final is not None
    path: list[Edge] = []
    node = space.tail_node
    while node != 0:
        step = back[node]
        assert step is not None
        path.append(step[0])
        node = step[0].src
    head_ops = {e: back[e.dst][1] for e in path if e in rows}  # type: ignore[index]
    return float(final), Choice(tuple(reversed(path)), head_ops, stack_ops)


def derive_under_budget(
    net: DenseNASSupernet, model: LatencyModel, budget_ms: float, resolution_ms: float | None = None,
    name: str = "derived", fill: float = DEFAULT_FILL,
) -> Arch:
    """The most probable architecture whose predicted latency (calibrated if the table is) lies
    in ``[fill * budget, budget]``, or fits at all when none reaches the window."""
    return budget_choice(net, model, budget_ms, resolution_ms, fill).to_arch(net, name)


def budget_choice(
    net: DenseNASSupernet, model: LatencyModel, budget_ms: float, resolution_ms: float | None = None,
    fill: float = DEFAULT_FILL,
) -> Choice:
    """The dynamic program behind ``derive_under_budget``."""
    check_budget(budget_ms, fill)
    if resolution_ms is not None and not resolution_ms > 0:
        raise ValueError(f"resolution must be positive, got {resolution_ms}")
    space = net.space
    # 10^4 steps over the span from the lowest fixed cost (a calibration's offset can be negative)
    # to the budget, so the table below has ~10^4 buckets whatever the budget.
    step = resolution_ms or (budget_ms - min(0.0, model.fixed)) / 10000
    head_lp, stack_lp, log_p = _log_probs(net)

    def units(ms: float) -> int:
        return math.ceil(ms / step - 1e-9)  # rounded up: the discretised latency never undercounts

    head_units = [[units(float(c)) for c in row] for row in model.head]
    stack_units = [[units(float(c)) for c in row] for row in model.stack]
    tail_units = [units(float(c)) for c in model.tail]
    fixed_units = units(model.fixed)
    # Costs may be negative (a calibration's offset or per-op term): buckets start at the lowest
    # reachable sum.
    floor = (min(0, fixed_units) + sum(min(0, min(r)) for r in head_units) + sum(min(0, min(r)) for r in stack_units)
             + min(0, min(tail_units)))
    budget_units = math.floor(budget_ms / step + 1e-9)
    size = budget_units - floor - floor + 1  # a prefix above budget - floor can never come back under
    start = np.full(size, -np.inf)
    if 0 <= fixed_units - floor < size:
        start[fixed_units - floor] = 0.0
    rows, tails, stack_rows = net.head_row, net.tail_row, net.stack_rows
    values: dict[int, np.ndarray] = {0: start}
    merge_trace: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # node -> (edge, op, prev)
    layer_trace: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # stack row -> (op, prev)
    for node in range(1, space.tail_node + 1):
        merged = np.full(size, -np.inf)
        edge_of, op_of, prev_of = np.full(size, -1), np.full(size, -1), np.full(size, -1)
        for ei, e in enumerate(space.edges):
            if e.dst != node:
                continue
            if e in rows:
                options = [(head_units[rows[e]][k], log_p[ei] + head_lp[rows[e]][k]) for k in range(len(head_units[0]))]
            else:
                options = [(tail_units[tails[e]], log_p[ei])]
            vals, arg, prev = _shift_max(values[e.src], options)
            better = vals > merged
            merged[better], edge_of[better], op_of[better], prev_of[better] = vals[better], ei, arg[better], prev[better]
        merge_trace[node] = (edge_of, op_of, prev_of)
        for r in stack_rows.get(node, []):
            merged, arg, prev = _shift_max(merged, [(stack_units[r][k], stack_lp[r][k]) for k in range(len(stack_units[r]))])
            layer_trace[r] = (arg, prev)
        values[node] = merged
    final = values[space.tail_node]
    feasible = final[: budget_units - floor + 1]
    if not np.isfinite(feasible).any():
        fastest_ms, fastest = _extreme(model, min)
        if fastest_ms <= budget_ms:  # fits, but not with every op rounded up: the budget is this network's
            return fastest
        raise UserError(
            f"no architecture of the space fits {budget_ms:g} ms: the fastest achievable is "
            f"{fastest_ms:.3f} ms with this table"
        )
    lowest = max(0, math.ceil(fill * budget_ms / step - 1e-9) - floor)
    window = feasible[lowest:]
    bucket = lowest + int(np.argmax(window)) if np.isfinite(window).any() else int(np.argmax(feasible))
    path: list[Edge] = []
    head_ops: dict[Edge, int] = {}
    stack_ops: dict[int, int] = {}
    node = space.tail_node
    while node != 0:
        for r in reversed(stack_rows.get(node, [])):
            arg, prev = layer_trace[r]
            stack_ops[r] = int(arg[bucket])
            bucket = int(prev[bucket])
        edge_of, op_of, prev_of = merge_trace[node]
        e = space.edges[int(edge_of[bucket])]
        path.append(e)
        if e in rows:
            head_ops[e] = int(op_of[bucket])
        bucket = int(prev_of[bucket])
        node = e.src
    for r in range(len(net.stack_layers)):  # layers of blocks off the path: irrelevant, fill argmax
        stack_ops.setdefault(r, int(np.argmax(stack_lp[r])))
    return Choice(tuple(reversed(path)), head_ops, stack_ops)
