"""Exhaustive oracles of the DCNAS budget derivation, on spaces small enough to enumerate: every
network with its predicted latency and its log p (as ``dcnas_derive.log_prob`` defines it), and
random (budget, fill) queries checked against them (``judge``). A query is *exact* when the
derived network's log p equals the best enumerated one in the window (or, when the window is
empty, among those that fit), a *wrong refusal* when the derivation refuses a budget that some
network fits, *outside* when it returns a network outside a reachable window; all by
``search.budget.Window``'s rule. DenseNAS spaces are too large to list, so for tables on a
latency grid the best log p at every reachable latency comes from an exact dynamic program
(``densenas_grid_optima``)."""

from __future__ import annotations

import itertools
import random
import statistics
import time
from typing import Callable, TypeVar

import numpy as np
import torch

import nas2deploy.spaces.dcnas.derive as dcnas_derive
import nas2deploy.spaces.densenas.derive as densenas_derive
from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets.cells import STEM, Cell
from nas2deploy.ops import AddN
from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel
from nas2deploy.spaces.dcnas.space import DCNASSpace
from nas2deploy.spaces.dcnas.supernet import DCNASSupernet
from nas2deploy.search.budget import Window
from nas2deploy.spaces.densenas.latency_model import LatencyModel as DenseNASLatencyModel
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet

T = TypeVar("T")


def spread_supernet(space: DCNASSpace, seed: int) -> DCNASSupernet:
    torch.manual_seed(seed)
    net = DCNASSupernet(space)
    with torch.no_grad():
        net.alpha.normal_(0, 1.5)
        net.beta.normal_(0, 1.5)
    return net


def enumerate_topk(net: DCNASSupernet, table: LatencyTable) -> tuple[np.ndarray, np.ndarray]:
    """(predicted ms, log p) of every top-k network of the space (exhaustive; small spaces only).

    Per assignment of kept inputs to every cell the alive cells follow; their op choices are
    enumerated as an outer sum. Costs come from the table in float64 (``table.cost``)."""
    space = net.space
    cells, last = net.cells, space.config.layers - 1
    log_ops, log_ins = dcnas_derive.log_probs(net)
    index = {c: i for i, c in enumerate(cells)}
    k = {c: min(space.config.derive_inputs, len(space.inputs[c])) for c in cells}
    best = {c: float(np.sort(log_ins[c])[::-1][:k[c]].sum() + log_ops[index[c]].max()) for c in cells}
    transform = {c: [table.cost(space.transform_spec(s, c)) for s in space.inputs[c]] for c in cells}
    op_cost = {c: np.array([table.cost(s) for s in space.candidates(c)]) for c in cells}
    dense = space.dense_arch
    fixed = sum(table.cost(s) for s in [*dense.stem_specs(), *dense.head_specs()]) + table.offset_ms
    fusion = {c: table.cost(AddN(space.config.scale_widths[c[1]], space.side(c[1]), space.side(c[1]), k[c])) if k[c] > 1
              else 0.0 for c in cells}
    latencies, scores = [], []
    for combo in itertools.product(*[list(itertools.combinations(range(len(space.inputs[c])), k[c])) for c in cells]):
        chosen = dict(zip(cells, combo))
        alive = {c for c in cells if c[0] == last}
        for c in reversed(cells):
            if c in alive:
                alive.update(space.inputs[c][i] for i in chosen[c] if space.inputs[c][i] != STEM)
        lat, score = fixed, 0.0
        for c in cells:
            if c in alive:
                lat += fusion[c] + sum(transform[c][i] for i in chosen[c])
                score += float(sum(log_ins[c][i] for i in chosen[c]))
            else:
                score += best[c]
        lats, scs = np.array([lat]), np.array([score])
        for c in cells:
            if c in alive:
                lats = (lats[:, None] + op_cost[c][None, :]).ravel()
                scs = (scs[:, None] + log_ops[index[c]][None, :]).ravel()
        latencies.append(lats)
        scores.append(scs)
    return np.concatenate(latencies), np.concatenate(scores)


def enumerate_paths(net: DCNASSupernet, table: LatencyTable) -> tuple[np.ndarray, np.ndarray]:
    """(predicted ms, log p) of every Viterbi network (scale path and ops)."""
    space = net.space

    def paths(prefix: list[int]):
        layer = len(prefix)
        if layer == space.config.layers:
            yield prefix
            return
        src = STEM if layer == 0 else (layer - 1, prefix[-1])
        for s in range(4):
            if (layer, s) in space.inputs and src in space.inputs[(layer, s)]:
                yield from paths(prefix + [s])

    out = []
    for path in paths([]):
        for ops in itertools.product(space.config.ops, repeat=len(path)):
            cells = tuple(Cell(layer, s, op, (STEM if layer == 0 else (layer - 1, path[layer - 1]),))
                          for layer, (s, op) in enumerate(zip(path, ops)))
            arch = space.make_arch(cells, "enumerated")
            out.append((table.predict(arch).best_ms, dcnas_derive.log_prob(net, arch, viterbi=True)))
    values = np.array(out)
    return values[:, 0], values[:, 1]


def check_queries(net: DCNASSupernet, table: LatencyTable, latencies: np.ndarray, scores: np.ndarray, queries: int,
                  seed: int, viterbi: bool) -> dict[str, float]:
    """Ask ``queries`` random (budget, fill) questions; count exact answers, wrong refusals, answers
    outside a reachable window, and the derivation's solve time."""
    model = DCNASLatencyModel(net, table)
    rng = random.Random(seed)
    lo, hi = float(latencies.min()), float(latencies.max())
    counts: dict[str, float] = {"queries": 0, "exact": 0, "wrong_refusals": 0, "right_refusals": 0, "outside_window": 0,
                                "worse": 0}
    times, worst = [], 0.0
    for _ in range(queries):
        budget = rng.uniform(0.9 * lo, 1.1 * hi)
        fill = rng.choice([0.0, 0.8, 0.9, 0.95])
        counts["queries"] += 1
        start = time.perf_counter()
        outcome, gap = judge(latencies, scores, budget, fill,
                             lambda b, f: dcnas_derive.derive_under_budget(net, model, b, fill=f, viterbi=viterbi),
                             lambda arch: table.predict(arch).best_ms,
                             lambda arch: dcnas_derive.log_prob(net, arch, viterbi))
        times.append(time.perf_counter() - start)
        counts[outcome] += 1
        worst = max(worst, gap)
    return {**counts, "worst_gap_nats": worst, "median_solve_s": statistics.median(times), "max_solve_s": max(times)}


OUTCOMES = ("exact", "right_refusals", "wrong_refusals", "outside_window", "worse")


def judge(latencies: np.ndarray, scores: np.ndarray, budget: float, fill: float, derive: Callable[[float, float], T],
          price: Callable[[T], float], log_p: Callable[[T], float]) -> tuple[str, float]:
    """One query against the enumeration, by ``Window``'s rule: which of ``OUTCOMES`` it is, and
    how many nats the answer falls short of the best (0 when exact). The best is the most
    probable enumerated network in the window, or among those that fit when none reaches it."""
    window = Window(budget, fill)
    fits = latencies <= budget + window.tolerance_ms
    inside = fits & (latencies >= window.lo_ms - window.tolerance_ms)
    try:
        network = derive(budget, fill)
    except UserError:
        return ("right_refusals" if not fits.any() else "wrong_refusals"), 0.0
    ms = price(network)
    if not fits.any() or not (window.contains(ms) if inside.any() else window.fits(ms)):
        return "outside_window", 0.0
    gap = float(scores[inside if inside.any() else fits].max()) - log_p(network)
    return ("exact" if gap <= 1e-6 else "worse"), max(gap, 0.0)


def densenas_grid_optima(net: DenseNASSupernet, model: DenseNASLatencyModel, grid: float) -> tuple[np.ndarray, np.ndarray]:
    """(latency, best log p) of every latency a DenseNAS architecture reaches, for a table whose
    latencies are multiples of ``grid`` ms (``random_table(levels=...)``): a dynamic program over
    whole grid steps, exact because no cost needs rounding. Architectures are too many to list,
    but the best log p at each reachable latency is all a budget query needs."""
    space = net.space
    head_lp, stack_lp, log_p = densenas_derive._log_probs(net)

    def steps(ms: float) -> int:
        units = round(ms / grid)
        assert abs(units * grid - ms) < 1e-9, f"{ms} ms is not on the {grid} ms grid"
        return units

    def extend(front: dict[int, float], options: list[tuple[int, float]]) -> dict[int, float]:
        out: dict[int, float] = {}
        for u, lp in front.items():
            for du, dlp in options:
                if lp + dlp > out.get(u + du, -np.inf):
                    out[u + du] = lp + dlp
        return out

    fronts: dict[int, dict[int, float]] = {0: {steps(model.fixed): 0.0}}
    for node in range(1, space.tail_node + 1):
        merged: dict[int, float] = {}
        for ei, e in enumerate(space.edges):
            if e.dst != node:
                continue
            if e in net.head_row:
                r = net.head_row[e]
                options = [(steps(float(c)), log_p[ei] + head_lp[r][k]) for k, c in enumerate(model.head[r].tolist())]
            else:
                options = [(steps(float(model.tail[net.tail_row[e]])), float(log_p[ei]))]
            for u, lp in extend(fronts[e.src], options).items():
                merged[u] = max(lp, merged.get(u, -np.inf))
        for r in net.stack_rows.get(node, []):
            merged = extend(merged, [(steps(float(c)), stack_lp[r][k]) for k, c in enumerate(model.stack[r].tolist())])
        fronts[node] = merged
    tail = sorted(fronts[space.tail_node].items())
    return np.array([u * grid for u, _ in tail]), np.array([lp for _, lp in tail])
