"""Supernet, expected latency and derivation of the DenseNAS search."""

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import synthetic_table

from nas2deploy.errors import UserError
from nas2deploy.latency.table import Calibration
from nas2deploy.spaces.densenas.derive import (
    Choice,
    argmax_choice,
    budget_choice,
    derive_argmax,
    fastest_latency,
    log_prob,
    slowest_latency,
    viterbi_path,
)
from nas2deploy.spaces.densenas.latency_model import LatencyModel
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet, MixedOp, OpChoice, SharedMixedOp
from nas2deploy.spaces import make_space

TINY = {"input_size": 32, "width_mult": 0.25, "num_classes": 5, "max_stack_layers": 1}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DenseNASSupernet(make_space("densenas", TINY))


def random_choice(net, rng):
    space = net.space
    path, node = [], 0
    while node != space.tail_node:
        e = rng.choice(space.out_edges(node))
        path.append(e)
        node = e.dst
    rows = {e: r for r, e in enumerate(net.head_edges)}
    return Choice(tuple(path), {e: rng.randrange(6) for e in path if e in rows},
                  {r: rng.randrange(7) for r in range(len(net.stack_layers))})


def one_hot(net, choice):
    head_w = torch.zeros_like(net.alpha_head)
    head_w[:, 0] = 1
    for r, e in enumerate(net.head_edges):
        if e in choice.head_ops:
            head_w[r] = 0
            head_w[r, choice.head_ops[e]] = 1
    stack_w = torch.zeros_like(net.alpha_stack)
    for r in range(len(net.stack_layers)):
        stack_w[r, choice.stack_ops[r]] = 1
    path_p = torch.zeros(len(net.space.edges))
    chosen = {e.src: e for e in choice.path}
    for node, s in net.out_slices.items():
        pick = net.edge_index(chosen[node]) if node in chosen else s.start
        path_p[pick] = 1
    return head_w, stack_w, path_p


def test_supernet_runs_sampled_and_full(net):
    x = torch.randn(2, 3, 32, 32)
    full = net(x, OpChoice.all(net))
    assert full.shape == (2, 5)
    pair = OpChoice(torch.tensor([[0, 3]] * len(net.head_edges)), torch.tensor([[1, 6]] * len(net.stack_layers)))
    net.zero_grad()
    net(x, pair).sum().backward()
    assert net.alpha_head.grad[:, [0, 3]].abs().sum() > 0 and net.alpha_head.grad[:, [1, 2]].abs().sum() == 0
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0
    assert all(not m.affine for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_shared_candidates_compute_the_deployed_ops():
    """Candidate kXeY of a shared mixed op is the deployed MBConv with the sliced weights."""
    space = make_space("densenas", TINY)
    edge = next(e for e in space.edges if e.stride == 2)
    for specs in (space.head_candidates(edge), space.stack_candidates(1)):
        torch.manual_seed(0)
        shared = SharedMixedOp(specs)
        x = torch.randn(3, specs[0].cin, specs[0].h, specs[0].w)
        for index, spec in enumerate(specs):
            if spec.type_name != "mbconv":
                assert torch.equal(shared.run(x, index), x)  # skip
                continue
            module = spec.build(affine=False)
            hidden, k, c = spec.cin * spec.expansion, spec.kernel, shared.kernel // 2
            convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
            convs[0].weight.data = shared.expand[:hidden].detach().clone()
            convs[1].weight.data = shared.depthwise[:hidden, :, c - k // 2:c + k // 2 + 1, c - k // 2:c + k // 2 + 1].detach().clone()
            convs[2].weight.data = shared.project[:, :hidden].detach().clone()
            torch.testing.assert_close(shared.run(x, index), module(x))
    # one set of weights, the largest candidate's, and BN statistics of one candidate only
    shared = SharedMixedOp(space.stack_candidates(1))
    assert {p.shape for p in shared.parameters()} == {p.shape for p in space.stack_candidates(1)[5].build().parameters()
                                                      if p.dim() == 4}
    spec = shared.specs[0]
    shared(torch.randn(2, spec.cin, spec.h, spec.w), [0], torch.ones(1))
    moved = [int(m.num_batches_tracked) for norms in shared.norms for m in norms]
    assert moved[:3] == [1, 1, 1] and sum(moved) == 3


def test_published_separate_weights_are_an_option():
    space = make_space("densenas", TINY)
    separate, shared = DenseNASSupernet(space, separate_op_weights=True), DenseNASSupernet(space)
    assert all(type(m) is MixedOp for m in [*separate.heads, *separate.stacks])
    assert all(type(m) is SharedMixedOp for m in [*shared.heads, *shared.stacks])
    assert sum(p.numel() for p in shared.weight_parameters()) < sum(p.numel() for p in separate.weight_parameters()) / 2
    x = torch.randn(2, 3, 32, 32)
    assert separate(x, OpChoice.all(separate)).shape == shared(x, OpChoice.all(shared)).shape == (2, 5)


def test_path_probabilities_normalise_per_source(net):
    p = net.path_probs()
    for node, s in net.out_slices.items():
        assert p[s].sum().item() == pytest.approx(1.0)
    assert len(p) == len(net.space.edges)


@pytest.mark.parametrize("calibration", [None, Calibration(0.9, 0.4, -0.01, 10)])
def test_expected_latency_equals_predict_for_one_hot(net, calibration):
    table = synthetic_table(net.space, calibration=calibration)
    model = LatencyModel(net, table)
    rng = random.Random(1)
    for _ in range(25):
        choice = random_choice(net, rng)
        expected = model.expected(*one_hot(net, choice)).item()
        pred = table.predict(choice.to_arch(net))
        assert expected == pytest.approx(pred.best_ms, rel=1e-6)


def test_expected_latency_is_differentiable(net):
    model = LatencyModel(net, synthetic_table(net.space))
    net.zero_grad()
    model().backward()
    assert net.alpha_head.grad.abs().sum() > 0 and net.beta.grad.abs().sum() > 0


def test_viterbi_follows_the_strongest_path():
    torch.manual_seed(1)
    net = DenseNASSupernet(make_space("densenas", TINY))
    rng = random.Random(3)
    target = random_choice(net, rng)
    with torch.no_grad():
        net.beta.zero_()
        for e in target.path:
            net.beta[net.edge_index(e)] = 5.0
    assert viterbi_path(net) == target.path
    with torch.no_grad():
        net.beta.zero_()  # all ties: the earliest edge wins at each step
    path = viterbi_path(net)
    assert path[0].dst == 1 and all(a.dst == b.src for a, b in zip(path, path[1:]))
    arch = derive_argmax(net)
    assert len(arch.blocks) == len([e for e in path if e.dst != net.space.tail_node])


def _randomise(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2)


@pytest.mark.parametrize("calibration", [None, Calibration(1.1, 0.3, -0.02, 10), Calibration(1.0, -0.5, 0.001, 10)])
def test_budget_derivation_is_feasible_and_optimal(net, calibration):
    _randomise(net, 7)
    table = synthetic_table(net.space, seed=2, calibration=calibration)
    model = LatencyModel(net, table)
    fastest = fastest_latency(model)
    unconstrained = argmax_choice(net)
    budget = fastest + 0.4 * (table.predict(unconstrained.to_arch(net)).best_ms - fastest)
    best = budget_choice(net, model, budget, fill=0.0)
    assert table.predict(best.to_arch(net)).best_ms <= budget + 1e-9
    rng = random.Random(0)
    for _ in range(3000):  # no random architecture that fits is more probable
        c = random_choice(net, rng)
        if table.predict(c.to_arch(net)).best_ms <= budget:
            assert log_prob(net, c) <= log_prob(net, best) + 1e-6


def test_latency_range_bounds_every_architecture(net):
    from nas2deploy.spaces.densenas.derive import slowest_latency

    table = synthetic_table(net.space, seed=4)
    model = LatencyModel(net, table)
    fastest, slowest = fastest_latency(model), slowest_latency(model)
    rng = random.Random(1)
    seen = [table.predict(random_choice(net, rng).to_arch(net)).best_ms for _ in range(500)]
    assert fastest <= min(seen) and max(seen) <= slowest
    # the bound is reached, not just any upper bound: the slowest network is the only one at it
    top = budget_choice(net, model, slowest, fill=1.0).to_arch(net)
    assert table.predict(top).best_ms == pytest.approx(slowest, rel=1e-9)


def test_fill_window_uses_the_budget_and_is_optimal_inside_it(net):
    _randomise(net, 5)
    table = synthetic_table(net.space, seed=3)
    model = LatencyModel(net, table)
    plain = table.predict(argmax_choice(net).to_arch(net)).best_ms
    budget = 1.6 * plain  # the most probable architecture overall uses well under this budget
    best = budget_choice(net, model, budget, fill=0.9)
    best_ms = table.predict(best.to_arch(net)).best_ms
    assert 0.9 * budget - 1e-9 <= best_ms <= budget + 1e-9
    rng = random.Random(1)
    inside = 0
    for _ in range(3000):  # no random architecture inside the window is more probable
        c = random_choice(net, rng)
        if 0.9 * budget <= table.predict(c.to_arch(net)).best_ms <= budget:
            inside += 1
            assert log_prob(net, c) <= log_prob(net, best) + 1e-6
    assert inside > 10
    with pytest.raises(UserError, match="--fill must lie in"):
        budget_choice(net, model, budget, fill=1.5)


def test_budget_derivation_with_a_generous_budget_finds_the_joint_optimum(net):
    _randomise(net, 11)
    table = synthetic_table(net.space, seed=4)
    model = LatencyModel(net, table)
    best = budget_choice(net, model, 1e6)
    # the joint optimum by a direct DP over the DAG (no latency at all)
    head_lp = torch.log_softmax(net.alpha_head.double(), -1).detach().numpy()
    stack_lp = torch.log_softmax(net.alpha_stack.double(), -1).detach().numpy()
    log_p = torch.cat([torch.log_softmax(net.beta[s].double(), 0) for _, s in sorted(net.out_slices.items())]).detach().numpy()
    rows = {e: r for r, e in enumerate(net.head_edges)}
    stack_best = np.zeros(net.space.tail_node + 1)
    for r, (n, _) in enumerate(net.stack_layers):
        stack_best[n] += stack_lp[r].max()
    score = [-math.inf] * (net.space.tail_node + 1)
    score[0] = 0.0
    for ei, e in enumerate(net.space.edges):
        head = head_lp[rows[e]].max() if e in rows else 0.0
        score[e.dst] = max(score[e.dst], score[e.src] + log_p[ei] + head + stack_best[e.dst])
    assert log_prob(net, best) == pytest.approx(score[net.space.tail_node], abs=1e-9)


def test_nothing_fits_names_the_fastest_latency(net):
    table = synthetic_table(net.space, seed=5)
    model = LatencyModel(net, table)
    fastest = fastest_latency(model)
    with pytest.raises(UserError, match=f"fastest achievable is {fastest:.7g} ms"):
        budget_choice(net, model, fastest * 0.99)
    fits = budget_choice(net, model, fastest * 1.01)
    assert table.predict(fits.to_arch(net)).best_ms <= fastest * 1.01


class ScriptedMeasure:
    """Measurements injected into the closed loop: each network measures its prediction times the
    next factor of the script (the last factor repeats), so the loop's decisions are tested
    without a clock."""

    def __init__(self, table, factors):
        self.table, self.factors, self.calls = table, list(factors), []

    def __call__(self, arch):
        factor = self.factors[min(len(self.calls), len(self.factors) - 1)]
        self.calls.append(arch)
        return factor * self.table.predict(arch).best_ms


def _closed_loop(net, factors, budget_share=0.5, **kw):
    from nas2deploy.spaces.densenas.search import DenseNASSearch
    from nas2deploy.search.closed_loop import derive_measured

    _randomise(net, 7)
    searched = DenseNASSearch(net.space, synthetic_table(net.space, seed=2))
    searched.net.load_state_dict(net.state_dict())
    fastest = fastest_latency(searched.latency_model)
    budget = fastest + budget_share * (slowest_latency(searched.latency_model) - fastest)
    measure = ScriptedMeasure(searched.latency_model.table, factors)
    lines = []
    return derive_measured(searched, budget, say=lines.append, measure=measure, **kw), budget, measure, lines


def test_closed_loop_accepts_a_network_measured_inside_the_window(net):
    result, budget, measure, lines = _closed_loop(net, [1.0])
    assert result.rounds == 1 and len(measure.calls) == 1 and len(lines) == 1
    assert 0.9 * budget <= result.measured_ms <= budget and result.measured_ms == result.predicted_ms


def test_closed_loop_confirms_an_overrun_tightens_then_loosens(net):
    # the first network measures 30% over its prediction, confirmed by a second measurement; the
    # tightened target gives a network under the window, so the target grows again
    result, budget, measure, lines = _closed_loop(net, [1.3, 1.3, 1.0], fill=0.8)
    targets = [float(line.split("target ")[1].split(" ms")[0]) for line in lines]
    assert measure.calls[0] == measure.calls[1] and len(measure.calls) == len(lines) + 1 == 4
    assert targets[1] < budget < targets[2] and result.rounds == 3
    assert 0.8 * budget <= result.measured_ms <= budget and result.arch == measure.calls[3]


def test_closed_loop_after_an_overrun_derives_below_the_overrunning_networks_prediction(net):
    """A network predicted under its target but measured just over the budget: the next target
    is its prediction scaled by the miss, so it cannot be derived again (scaling the previous
    target kept it in a fresh ``make demo``, and the loop gave up)."""
    from nas2deploy.search.closed_loop import AIM, derive_measured
    from nas2deploy.spaces.densenas.search import DenseNASSearch

    _randomise(net, 7)
    searched = DenseNASSearch(net.space, synthetic_table(net.space, seed=2))
    searched.net.load_state_dict(net.state_dict())
    fastest = fastest_latency(searched.latency_model)
    budget = fastest + 0.5 * (slowest_latency(searched.latency_model) - fastest)
    table, calls, lines = searched.latency_model.table, [], []

    def measure(arch):  # the first network measures 2% over the budget, whatever its prediction
        calls.append(arch)
        return 1.02 * budget if len(calls) <= 2 else table.predict(arch).best_ms

    result = derive_measured(searched, budget, say=lines.append, measure=measure, fill=0.5)
    first = table.predict(calls[0]).best_ms
    targets = [float(line.split("target ")[1].split(" ms")[0]) for line in lines]
    assert targets[1] == pytest.approx(first * AIM / 1.02, rel=1e-3) and targets[1] < first
    assert result.arch != calls[0] and result.measured_ms <= budget and result.rounds == 2


def test_closed_loop_ignores_a_passing_disturbance(net):
    # one slow measurement, then the same network measures as predicted: kept, no second round
    result, budget, measure, lines = _closed_loop(net, [1.3, 1.0])
    assert result.rounds == 1 and len(measure.calls) == 2 and measure.calls[0] == measure.calls[1]


def test_closed_loop_loosens_a_target_measured_under_the_window(net):
    result, budget, measure, lines = _closed_loop(net, [0.7, 0.7, 0.7, 0.7, 0.7])
    # every network measures 30% under its prediction: the target grows; the largest fitting one wins
    assert len(lines) >= 2 and result.target_ms > budget
    fitting = [0.7 * measure.table.predict(a).best_ms for a in measure.calls if 0.7 * measure.table.predict(a).best_ms <= budget]
    assert result.measured_ms == pytest.approx(max(fitting))


def test_closed_loop_gives_up_when_nothing_measures_within_the_budget(net):
    with pytest.raises(UserError, match="measured within"):
        _closed_loop(net, [3.0], budget_share=0.05)


def test_closed_loop_measures_the_fastest_network_before_giving_up(net):
    """Every derived network overruns and the tightened target falls below the fastest
    prediction; the fastest network itself, which the table over-predicts, fits."""
    from nas2deploy.search.closed_loop import derive_measured
    from nas2deploy.spaces.densenas.search import DenseNASSearch

    _randomise(net, 7)
    searched = DenseNASSearch(net.space, synthetic_table(net.space, seed=2))
    searched.net.load_state_dict(net.state_dict())
    table, fastest = searched.latency_model.table, fastest_latency(searched.latency_model)
    budget = 1.2 * fastest
    fastest_key = searched.derive("f", fastest, 0.0).to_dict()

    def measure(arch):
        return (0.9 if arch.renamed("f").to_dict() == fastest_key else 3.0) * table.predict(arch).best_ms

    lines = []
    result = derive_measured(searched, budget, say=lines.append, measure=measure)
    assert result.measured_ms == pytest.approx(0.9 * fastest) and lines[-1].startswith("the fastest network")
    with pytest.raises(UserError, match=r"the fastest network of the space measured [0-9.]+ ms \(predicted"):
        derive_measured(searched, budget, measure=lambda arch: 3.0 * table.predict(arch).best_ms)


@pytest.mark.parametrize("rounds", [0, -1, 1.5])
def test_closed_loop_needs_a_round(net, rounds):
    with pytest.raises(UserError, match="at least one round"):
        _closed_loop(net, [1.0], max_rounds=rounds)


NON_PHYSICAL = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), -0.0]


@settings(deadline=None)
@given(script=st.lists(st.one_of(st.sampled_from(NON_PHYSICAL), st.floats(1e-300, 1e300), st.floats(0.2, 5.0)),
                       min_size=1, max_size=8),
       share=st.sampled_from([0.02, 0.3, 0.7]), rounds=st.integers(1, 5))
def test_closed_loop_takes_only_physical_measurements(net, script, share, rounds):
    """Scripted runners (factors of the prediction, or non-physical values): either a network
    measured within the budget, or one line; never a traceback or a non-physical latency used."""
    from nas2deploy.search.closed_loop import derive_measured
    from nas2deploy.spaces.densenas.search import DenseNASSearch

    searched = DenseNASSearch(net.space, synthetic_table(net.space, seed=2))
    searched.net.load_state_dict(net.state_dict())
    table = searched.latency_model.table
    fastest = fastest_latency(searched.latency_model)
    budget = fastest + share * (slowest_latency(searched.latency_model) - fastest)
    calls = []

    def measure(arch):
        value = script[min(len(calls), len(script) - 1)]
        calls.append(value)
        return value * table.predict(arch).best_ms if 0.2 <= value <= 5.0 else value

    try:
        result = derive_measured(searched, budget, max_rounds=rounds, measure=measure, runner="the scripted runner")
    except UserError as exc:
        used = [v for v in calls if not (0.2 <= v <= 5.0)]
        assert "measured within" in str(exc) or (used and "the scripted runner measured" in str(exc))
        return
    assert math.isfinite(result.measured_ms) and 0 < result.measured_ms <= budget


@pytest.mark.slow
def test_measured_derivation_runs_on_this_machine(tmp_path):
    """The real measurement path (ONNX Runtime on this CPU): structure only, timings vary."""
    from conftest import FAST

    from nas2deploy.backends import BackendSettings
    from nas2deploy.latency.profile import profile_space
    from nas2deploy.spaces.densenas.search import DenseNASSearch
    from nas2deploy.search.closed_loop import derive_measured

    space = make_space("densenas", TINY)
    table, _ = profile_space(space, BackendSettings(), tmp_path / "t.json", FAST)
    torch.manual_seed(0)
    searched = DenseNASSearch(space, table)
    budget = 1.5 * fastest_latency(searched.latency_model)
    lines = []
    try:
        result = derive_measured(searched, budget, say=lines.append)
    except UserError as exc:  # a machine slowed by half fits nothing: that must be said, not hidden
        assert "measured within" in str(exc)
        return
    assert 1 <= result.rounds <= len(lines) and result.measured_ms <= budget
    assert result.predicted_ms <= result.target_ms and all(line.startswith("round ") for line in lines)


def test_measured_derivation_needs_the_tables_device(net):
    from nas2deploy.spaces.densenas.search import DenseNASSearch
    from nas2deploy.search.closed_loop import derive_measured

    with pytest.raises(UserError, match="records no device"):
        derive_measured(DenseNASSearch(net.space, synthetic_table(net.space)), 100.0)


def test_space_without_stacking_layers_and_bad_budgets():
    net = DenseNASSupernet(make_space("densenas", {**TINY, "max_stack_layers": 0}))
    model = LatencyModel(net, synthetic_table(net.space))
    assert float(model()) > 0
    with pytest.raises(UserError, match="--budget-ms must be positive"):
        budget_choice(net, model, 0.0)


def test_entropies_of_a_space_without_stacking_layers_are_numbers():
    from nas2deploy.spaces.densenas.search import DenseNASSearch

    space = make_space("densenas", {**TINY, "max_stack_layers": 0})
    values = DenseNASSearch(space, synthetic_table(space)).entropies()
    assert "alpha_stack_entropy" not in values and all(math.isfinite(v) for v in values.values())
    assert values["alpha_entropy"] == pytest.approx(math.log(6), abs=1e-3)  # per mixed op, near uniform at start


def test_the_demo_searches_its_own_space_on_the_shipped_table():
    from nas2deploy.demo import demo_entry, demo_search_config
    from nas2deploy.runs import prepare

    entry = demo_entry("classification")
    assert entry.demo is not None and entry.demo.shipped is not None
    config = demo_search_config(entry, str(entry.demo.shipped), None)
    assert config.space_config == {"max_stack_layers": 0}  # the shipped table also prices stacking layers
    assert not any(prepare(config).space.stack_layers)
