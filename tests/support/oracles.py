"""Exhaustive oracles of the DCNAS budget derivation, on spaces small enough to enumerate: every
network with its predicted latency and its log p (as ``dcnas_derive.log_prob`` defines it), and
random (budget, fill) queries checked against them. A query is *exact* when the derived
network's log p equals the best enumerated one in the window (or, when the window is empty,
among those that fit), a *wrong refusal* when the derivation refuses a budget that some network
fits, *outside* when it returns a network outside a reachable window."""

from __future__ import annotations

import itertools
import random
import statistics
import time

import numpy as np
import torch

import nas2deploy.spaces.dcnas.derive as dcnas_derive
from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets.cells import STEM, Cell
from nas2deploy.ops import AddN
from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel
from nas2deploy.spaces.dcnas.space import DCNASSpace
from nas2deploy.spaces.dcnas.supernet import DCNASSupernet


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
        tol = 1e-9 * budget
        fits = latencies <= budget + tol
        window = fits & (latencies >= fill * budget - tol)
        pool = window if window.any() else fits
        counts["queries"] += 1
        start = time.perf_counter()
        try:
            arch = dcnas_derive.derive_under_budget(net, model, budget, fill=fill, viterbi=viterbi)
        except UserError:
            counts["right_refusals" if not fits.any() else "wrong_refusals"] += 1
            continue
        finally:
            times.append(time.perf_counter() - start)
        ms = table.predict(arch).best_ms
        got = dcnas_derive.log_prob(net, arch, viterbi)
        if window.any() and not fill * budget - tol <= ms <= budget + tol:
            counts["outside_window"] += 1
        if abs(got - float(scores[pool].max())) <= 1e-6:
            counts["exact"] += 1
        else:
            counts["worse"] += 1
            worst = max(worst, float(scores[pool].max()) - got)
    return {**counts, "worst_gap_nats": worst, "median_solve_s": statistics.median(times), "max_solve_s": max(times)}
