"""Budget derivation is exact: against exhaustive enumeration of small DCNAS spaces (both decodes),
and it never refuses a budget that a network fits (both spaces)."""

import pytest
import torch
from support.oracles import check_queries, enumerate_paths, enumerate_topk, spread_supernet

from nas2deploy.testing import random_table
from conftest import synthetic_table

from nas2deploy.errors import UserError
import nas2deploy.spaces.dcnas.derive as dcnas_derive
from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel
from nas2deploy.spaces.densenas.derive import budget_choice, fastest_latency
from nas2deploy.spaces.densenas.latency_model import LatencyModel
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet
from nas2deploy.spaces import make_space

SMALL = {"input_size": 64, "base_width": 8, "num_classes": 6, "head_width": 16}


@pytest.mark.parametrize("viterbi, layers, ops", [(False, 3, ["sep3", "sep5"]), (True, 4, ["sep3", "sep5", "sep7"])])
def test_budget_derivation_matches_exhaustive_enumeration(viterbi, layers, ops):
    space = make_space("dcnas", {**SMALL, "layers": layers, "ops": ops})
    net, table = spread_supernet(space, 3), random_table(space, 7)
    latencies, scores = (enumerate_paths if viterbi else enumerate_topk)(net, table)
    result = check_queries(net, table, latencies, scores, queries=25, seed=1, viterbi=viterbi)
    assert result["queries"] == 25 and result["exact"] + result["right_refusals"] == 25, result
    assert result["wrong_refusals"] == result["outside_window"] == result["worse"] == 0


def test_the_exact_range_bounds_every_network_and_is_reached():
    space = make_space("dcnas", {**SMALL, "layers": 3, "ops": ["sep3", "sep5"]})
    net, table = spread_supernet(space, 0), random_table(space, 1)
    latencies, _ = enumerate_topk(net, table)
    fastest, slowest = dcnas_derive.latency_range(net, DCNASLatencyModel(net, table))
    assert fastest == pytest.approx(latencies.min(), rel=1e-12) and slowest == pytest.approx(latencies.max(), rel=1e-12)
    model = DCNASLatencyModel(net, table)
    arch = dcnas_derive.derive_under_budget(net, model, fastest, fill=0.9)  # only the fastest fits
    assert table.predict(arch).best_ms == pytest.approx(fastest, rel=1e-12)
    with pytest.raises(UserError, match=f"the fastest is {fastest:.7g} ms"):
        dcnas_derive.derive_under_budget(net, model, fastest * 0.999)


def test_a_beta_gap_beyond_float32_logs_still_derives():
    """A float32 log of a softmax is -inf past a gap of ~100; log-probabilities are float64."""
    space = make_space("dcnas", {**SMALL, "layers": 3})
    net, table = spread_supernet(space, 2), random_table(space, 2)
    with torch.no_grad():
        net.beta.mul_(200)
        net.alpha.mul_(200)
    model = DCNASLatencyModel(net, table)
    fastest, slowest = dcnas_derive.latency_range(net, model)
    for viterbi in (False, True):
        arch = dcnas_derive.derive_under_budget(net, model, slowest, fill=0.0, viterbi=viterbi)
        assert table.predict(arch).best_ms <= slowest


TINY = {"input_size": 32, "width_mult": 0.25, "num_classes": 5, "max_stack_layers": 1}


def test_densenas_never_refuses_a_budget_the_fastest_network_fits():
    torch.manual_seed(0)
    net = DenseNASSupernet(make_space("densenas", TINY))
    with torch.no_grad():
        net.beta.normal_(0, 300)  # gaps far beyond float32 logs
        net.alpha_head.normal_(0, 300)
    table = synthetic_table(net.space, seed=1)
    model = LatencyModel(net, table)
    fastest_ms = fastest_latency(model)
    exact = budget_choice(net, model, fastest_ms)
    assert table.predict(exact.to_arch(net)).best_ms <= fastest_ms * (1 + 1e-12)
    with pytest.raises(UserError) as err:
        budget_choice(net, model, fastest_ms * 0.99)
    shown = float(str(err.value).split("fastest achievable is ")[1].split(" ms")[0])
    assert shown > fastest_ms * 0.99 and shown == pytest.approx(fastest_ms, rel=1e-6)
