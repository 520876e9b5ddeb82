"""Budget derivation at the edges, where users' budgets sit: a budget copied from a network's own
latency, one ulp either side of it, or half and one and a half times the window's tolerance
either side, on coarse tables (latencies that are multiples of 0.1 ms, so that many networks
tie), against enumeration (DCNAS, both decodes) and an exact grid program (DenseNAS).

Each generated example asks ``QUERIES`` questions; the ``thorough`` profile
(``--hypothesis-profile thorough``, 500 examples) asks 2,000 per decode (top-k, Viterbi,
DenseNAS)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.oracles import densenas_grid_optima, enumerate_paths, enumerate_topk, judge, spread_supernet

import nas2deploy.spaces.dcnas.derive as dcnas_derive
from nas2deploy.search.budget import Window
from nas2deploy.spaces import make_space
from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel
from nas2deploy.spaces.densenas.derive import budget_choice, log_prob
from nas2deploy.spaces.densenas.latency_model import LatencyModel
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet
from nas2deploy.testing import random_table

QUERIES = 4
DCNAS = {"input_size": 64, "base_width": 8, "num_classes": 6, "head_width": 16}
DCNAS_SPACES = {"topk": [{"layers": 2, "ops": ["sep3", "sep5"]}, {"layers": 3, "ops": ["sep3"]}],
                "viterbi": [{"layers": 3, "ops": ["sep3", "sep5"]}]}
DENSENAS = {"input_size": 32, "width_mult": 0.25, "num_classes": 5, "max_stack_layers": 1}
EDGES = ("at", "ulp above", "ulp below", "half tolerance above", "half tolerance below", "1.5 tolerances above",
         "1.5 tolerances below")


def edge_budget(latency: float, edge: str) -> float:
    tol = Window(latency).tolerance_ms
    return {"at": latency, "ulp above": math.nextafter(latency, math.inf), "ulp below": math.nextafter(latency, 0.0),
            "half tolerance above": latency + tol / 2, "half tolerance below": latency - tol / 2,
            "1.5 tolerances above": latency + 1.5 * tol, "1.5 tolerances below": latency - 1.5 * tol}[edge]


queries = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(EDGES),
                             st.sampled_from([0.0, 0.5, 0.9, 1.0])), min_size=QUERIES, max_size=QUERIES)


def ask(latencies, scores, asked, derive, price, log_p):
    """Every query at a reachable latency (or just below the fastest) must come out exact or be
    rightly refused."""
    distinct = np.unique(latencies)
    for where, edge, fill in asked:
        index = int(where * (len(distinct) + 1)) - 1  # -1: below the fastest network
        latency = distinct[index] if index >= 0 else distinct[0] - 3 * Window(distinct[0]).tolerance_ms
        budget = edge_budget(float(latency), edge)
        outcome, gap = judge(latencies, scores, budget, fill, derive, price, log_p)
        assert outcome in ("exact", "right_refusals"), (outcome, gap, budget, edge, fill)


@pytest.mark.parametrize("decode", ["topk", "viterbi"])
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.integers(0, 1), seed=st.integers(0, 2**16), levels=st.integers(1, 4), asked=queries)
def test_dcnas_budgets_at_the_edges_of_coarse_tables(decode, shape, seed, levels, asked):
    options = DCNAS_SPACES[decode]
    space = make_space("dcnas", {**DCNAS, **options[shape % len(options)]})
    net, table = spread_supernet(space, seed), random_table(space, seed, levels=levels)
    viterbi = decode == "viterbi"
    latencies, scores = (enumerate_paths if viterbi else enumerate_topk)(net, table)
    model = DCNASLatencyModel(net, table)
    ask(latencies, scores, asked,
        lambda budget, fill: dcnas_derive.derive_under_budget(net, model, budget, fill=fill, viterbi=viterbi),
        lambda arch: table.predict(arch).best_ms, lambda arch: dcnas_derive.log_prob(net, arch, viterbi))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), levels=st.integers(1, 4), asked=queries)
def test_densenas_budgets_at_the_edges_of_coarse_tables(seed, levels, asked):
    torch.manual_seed(seed)
    net = DenseNASSupernet(make_space("densenas", DENSENAS))
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1.5)
    table = random_table(net.space, seed, levels=levels)
    model = LatencyModel(net, table)
    latencies, scores = densenas_grid_optima(net, model, 0.1)
    ask(latencies, scores, asked, lambda budget, fill: budget_choice(net, model, budget, fill),
        lambda choice: table.predict(choice.to_arch(net)).best_ms, lambda choice: log_prob(net, choice))


def test_a_budget_equal_to_the_fastest_networks_latency_is_met():
    """Three networks priced exactly at the budget: one is returned, none refused."""
    space = make_space("dcnas", {**DCNAS, "layers": 3, "ops": ["sep3"]})
    net, table = spread_supernet(space, 0), random_table(space, 0, levels=1)  # every op 0.1 ms: ties everywhere
    latencies, _ = enumerate_topk(net, table)
    fastest = float(latencies.min())
    assert (np.abs(latencies - fastest) < 1e-12).sum() > 1
    model = DCNASLatencyModel(net, table)
    for budget in (fastest, math.nextafter(fastest, 0.0)):
        arch = dcnas_derive.derive_under_budget(net, model, budget, fill=0.9)
        assert table.predict(arch).best_ms == pytest.approx(fastest, abs=1e-9)
