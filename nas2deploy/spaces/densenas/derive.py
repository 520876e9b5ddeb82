"""Derivation: from a searched supernet to one architecture (an Arch).

``derive_argmax`` follows the paper: per layer the candidate with the largest alpha (stacking
layers whose argmax is skip are dropped), and the block path by Viterbi over the path
probabilities, in log space: P(0) = 0, P(j) = max_i P(i) + log p_ij, backtracked from the tail.
Ties go to the edge listed first, i.e. the source block with the smallest index, and for ops to
the candidate listed first (``HEAD_OPS`` / ``STACK_OPS`` order).

``derive_under_budget`` goes beyond the paper: the most probable architecture, path and ops
together (log p of the path plus log softmax(alpha) of each chosen op), whose predicted latency
lies in the window ``[fill * budget, budget]``. It is found exactly as a 0-1 program solved by
HiGHS (``search/binary_program.py``, shared with DCNAS): a variable per edge, per edge's head op
and per stacking layer's op; a unit of flow from the stem to the tail along the chosen edges;
each chosen head edge runs exactly one op and each block on the path exactly one op per stacking
layer. The decoded architecture is priced by the table (``LatencyTable.predict``) and compared
by ``search.budget.Window``'s rule, the same pricing that reports the fastest architecture when
a budget is refused. (A dynamic program over discretised latency, the earlier method, returned
architectures up to 0.86 nats less probable than the best that fits, inside its rounding margin;
the program costs tens of milliseconds for the small space, ``benchmarks/budget_exactness.py``.)

``fill`` (default ``DEFAULT_FILL`` = 0.9, ``search/budget.py`` says why) narrows the window:
the most probable architecture that *uses* at least that share of the budget. When no
architecture reaches the window (a budget above the slowest network of the space), the most
probable one that fits is returned (its predicted latency shows it). ``fill=0`` is the plain
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
from nas2deploy.search.binary_program import BinaryProgram
from nas2deploy.search.budget import DEFAULT_FILL, Window, check_budget
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


def fastest_latency(model: LatencyModel) -> float:
    """The lowest predicted latency of any architecture of the space, as the table prices it."""
    return _price(model, _extreme(model, min)[1])


def slowest_latency(model: LatencyModel) -> float:
    """The highest predicted latency of any architecture of the space, as the table prices it."""
    return _price(model, _extreme(model, max)[1])


def _price(model: LatencyModel, choice: Choice) -> float:
    return model.table.predict(choice.to_arch(model.net)).best_ms


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


def derive_under_budget(net: DenseNASSupernet, model: LatencyModel, budget_ms: float, name: str = "derived",
                        fill: float = DEFAULT_FILL) -> Arch:
    """The most probable architecture whose predicted latency (calibrated if the table is) lies
    in ``[fill * budget, budget]``, or fits at all when none reaches the window."""
    return budget_choice(net, model, budget_ms, fill).to_arch(net, name)


def budget_choice(net: DenseNASSupernet, model: LatencyModel, budget_ms: float, fill: float = DEFAULT_FILL) -> Choice:
    """The choice behind ``derive_under_budget``."""
    check_budget(budget_ms, fill)
    window = Window(budget_ms, fill)
    program = BudgetProgram(net, model)
    choice = program.most_probable(window.lo_ms, budget_ms, window.tolerance_ms) if fill > 0 else None
    choice = choice or program.most_probable(-np.inf, budget_ms, window.tolerance_ms)
    if choice is None:
        raise UserError(f"no architecture of the space fits {budget_ms:g} ms: the fastest achievable is "
                        f"{fastest_latency(model):.7g} ms with this table")
    return choice


class BudgetProgram:
    """The 0-1 program of a DenseNAS supernet's architectures: variables for the edges (in
    ``space.edges`` order), then each head edge's ops, then each stacking layer's ops; the
    latency and log p each adds; one unit of flow from the stem (block 0) to the tail."""

    def __init__(self, net: DenseNASSupernet, model: LatencyModel):
        self.net, self.model = net, model
        space, edges = net.space, net.space.edges
        head_lp, stack_lp, log_p = _log_probs(net)
        n_head, n_stack = model.head.shape[1], model.stack.shape[1]
        self.head_var = {(r, k): len(edges) + r * n_head + k for r in range(len(net.head_edges)) for k in range(n_head)}
        first_stack = len(edges) + len(net.head_edges) * n_head
        self.stack_var = {(r, k): first_stack + r * n_stack + k for r in range(len(net.stack_layers)) for k in range(n_stack)}
        n = first_stack + len(net.stack_layers) * n_stack
        latency, score = np.zeros(n), np.zeros(n)
        rows: list[tuple[dict[int, float], float, float]] = []
        score[:len(edges)] = log_p
        for ei, e in enumerate(edges):
            if e in net.tail_row:
                latency[ei] = float(model.tail[net.tail_row[e]])
            else:  # a chosen head edge runs one op
                r = net.head_row[e]
                for k in range(n_head):
                    latency[self.head_var[r, k]], score[self.head_var[r, k]] = float(model.head[r, k]), head_lp[r][k]
                rows.append(({**{self.head_var[r, k]: 1.0 for k in range(n_head)}, ei: -1.0}, 0.0, 0.0))
        into = {node: [ei for ei, e in enumerate(edges) if e.dst == node] for node in range(space.tail_node + 1)}
        out_of = {node: [ei for ei, e in enumerate(edges) if e.src == node] for node in range(space.tail_node + 1)}
        rows.append(({ei: 1.0 for ei in out_of[0]}, 1.0, 1.0))
        rows.append(({ei: 1.0 for ei in into[space.tail_node]}, 1.0, 1.0))
        for node in range(1, space.tail_node):
            rows.append(({**{ei: 1.0 for ei in into[node]}, **{ei: -1.0 for ei in out_of[node]}}, 0.0, 0.0))
        for r, (node, _) in enumerate(net.stack_layers):  # a block on the path runs one op per stacking layer
            for k in range(n_stack):
                latency[self.stack_var[r, k]], score[self.stack_var[r, k]] = float(model.stack[r, k]), stack_lp[r][k]
            rows.append(({**{self.stack_var[r, k]: 1.0 for k in range(n_stack)}, **{ei: -1.0 for ei in into[node]}},
                         0.0, 0.0))
        self.program = BinaryProgram(latency, score, rows, np.zeros(n), np.ones(n), float(model.fixed))
        self._stack_lp = stack_lp

    def decode(self, x: np.ndarray) -> Choice:
        net, edges = self.net, self.net.space.edges
        chosen = [e for ei, e in enumerate(edges) if x[ei]]
        path, node = [], 0
        while node != net.space.tail_node:
            edge = next(e for e in chosen if e.src == node)
            path.append(edge)
            node = edge.dst
        head_ops = {e: next(k for (r, k), j in self.head_var.items() if r == net.head_row[e] and x[j])
                    for e in path if e in net.head_row}
        stack_ops = {r: next((k for (rr, k), j in self.stack_var.items() if rr == r and x[j]),
                             int(np.argmax(self._stack_lp[r])))  # off the path: irrelevant, argmax
                     for r in range(len(net.stack_layers))}
        return Choice(tuple(path), head_ops, stack_ops)

    def most_probable(self, lo_ms: float, hi_ms: float, tolerance_ms: float) -> Choice | None:
        return self.program.solve_priced(lo_ms, hi_ms, tolerance_ms, self.decode, lambda c: _price(self.model, c))
