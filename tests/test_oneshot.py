"""The evolution strategy (single-path one-shot): a route through the DenseNAS supernet computes
exactly its network with the supernet's weights, batch norms recalibrate to the mean over the
calibration batches, SPOS's evolution breeds from the best, and the strategy runs from the
command line: the supernet trained on single paths, then an evolutionary search of the budget's
window scored by inherited weights, and other budgets derived from the same supernet."""

from __future__ import annotations

import json
import random

import pytest
import torch
from click.testing import CliRunner
from conftest import saved_table

from nas2deploy.cli import cli
from nas2deploy.spaces import make_space

TINY = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}


def test_a_route_through_the_supernet_computes_its_network_with_the_supernets_weights():
    from nas2deploy.spaces.densenas.supernet import DenseNASSupernet, MixedOp
    from nas2deploy.spaces.densenas.space import HEAD_OPS, STACK_OPS

    space = make_space("densenas", TINY)
    torch.manual_seed(0)
    supernet = DenseNASSupernet(space, separate_op_weights=True).eval()
    for m in supernet.modules():  # running statistics of their own, so that copying them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    route = space.sample_route(random.Random(5))
    arch = space.route_arch(route, "r")
    modules = [*supernet.stem]
    blocks = iter(zip(route.heads, route.stacks))
    for edge in route.edges:
        if edge.dst == space.tail_node:
            modules.append(supernet.tail_branches[supernet.tail_row[edge]])
            continue
        head, stack = next(blocks)
        mixed = supernet.heads[supernet.head_row[edge]]
        assert isinstance(mixed, MixedOp)
        modules.append(mixed.candidates[HEAD_OPS.index(head)])
        for r, op in zip(supernet.stack_rows.get(edge.dst, []), stack):
            if op != "skip":
                layer = supernet.stacks[r]
                assert isinstance(layer, MixedOp)
                modules.append(layer.candidates[STACK_OPS.index(op)])
    modules.append(supernet.classifier)
    network = arch.build().eval()
    assert len(network) == len(modules)
    for deployed, inherited in zip(network, modules):
        deployed.load_state_dict(inherited.state_dict(), strict=False)  # the supernet's BN has no affine terms
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(supernet(x, route), network(x), atol=1e-5)


def test_recalibration_makes_each_norms_statistics_the_mean_over_the_batches():
    from nas2deploy.ops import uncount_batch_norms
    from nas2deploy.search.oneshot import recalibrate

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4))
    uncount_batch_norms(model)  # as supernets have them: the momentum, not a batch count, drives the update
    model[1].running_mean.fill_(7.0)
    batches = [torch.randn(8, 3, 5, 5) * (k + 1) + k for k in range(3)]
    recalibrate(model, model, batches)
    with torch.no_grad():
        hidden = [model[0](x) for x in batches]
    means = torch.stack([h.mean((0, 2, 3)) for h in hidden]).mean(0)
    variances = torch.stack([h.var((0, 2, 3), unbiased=True) for h in hidden]).mean(0)
    assert torch.allclose(model[1].running_mean, means, atol=1e-5)
    assert torch.allclose(model[1].running_var, variances, rtol=1e-4)
    assert not model.training and model[1].momentum == 0.1  # evaluation mode, the momentum restored


def test_the_holdout_scores_on_the_architecture_split_never_trained_on_capped_or_whole():
    from types import SimpleNamespace

    from nas2deploy.search.config import VALIDATION
    from nas2deploy.search.oneshot import CALIBRATION, Holdout

    config, data = SimpleNamespace(val_fraction=0.5, seed=3), SimpleNamespace(train=range(12000))
    capped, whole = Holdout.of(config, data), Holdout.of(config, data, validation=0)  # type: ignore[arg-type]
    assert len(capped.validation) == VALIDATION and len(whole.validation) == 6000
    assert whole.validation[:VALIDATION] == capped.validation  # more images extend the same split
    assert capped.calibration == whole.calibration and len(capped.calibration) == CALIBRATION
    assert not set(whole.validation) & set(whole.calibration)  # scores on images the weights never saw


def _spos_study(seed: int, trials: int):
    optuna = pytest.importorskip("optuna")
    from nas2deploy.search.blackbox.evolution import SposEvolution

    study = optuna.create_study(direction="maximize", sampler=SposEvolution(seed=seed, population=8, top_k=3))
    study.optimize(lambda t: sum(t.suggest_categorical(f"x{i}", [0, 1, 2, 3]) for i in range(6)) / 18, n_trials=trials)
    return study


def test_spos_evolution_breeds_children_of_the_best_and_is_reproducible():
    study = _spos_study(3, 40)
    trials = study.trials
    for child in trials[8:]:
        parents = sorted(trials[:child.number], key=lambda t: (-t.value, t.number))[:3]
        inherited = sum(any(p.params[k] == v for p in parents) for k, v in child.params.items())
        assert inherited >= 4, (child.number, child.params)  # mutation redraws ~1 in 10; crossover takes parents'
    assert [t.params for t in _spos_study(3, 40).trials] == [t.params for t in trials]
    assert [t.params for t in _spos_study(4, 12).trials] != [t.params for t in trials[:12]]
    assert study.best_value > max(t.value for t in trials[:8])  # it climbs


@pytest.mark.parametrize("sampler", ["spos", "regularised"])
@pytest.mark.parametrize("poison", [float("inf"), 1e308, -3.0])  # Optuna refuses NaN here; a journal can hold it
def test_a_poisoned_score_in_the_storage_never_breeds(sampler, poison):
    """A trial whose stored score is not in [0, 1] (an edited journal or database) is never a
    parent: every child keeps away from its marked choices."""
    optuna = pytest.importorskip("optuna")
    from nas2deploy.search.blackbox.evolution import RegularisedEvolution, SposEvolution

    made = SposEvolution(seed=0, population=4, top_k=1) if sampler == "spos" else \
        RegularisedEvolution(seed=0, population=4, sample=4)
    study = optuna.create_study(direction="maximize", sampler=made)
    dist = optuna.distributions.CategoricalDistribution(list(range(50)))
    both = {"x": dist, "y": dist}
    for k in (1, 2, 3, 4):  # the best parent: (4, 4)
        study.add_trial(optuna.trial.create_trial(params={"x": k, "y": k}, distributions=both, value=0.1 * k))
    poisoned = optuna.trial.create_trial(params={"x": 49, "y": 49}, distributions=both, value=0.5)
    poisoned.values = [poison]
    study.add_trial(poisoned)
    for number in range(5, 25):
        child = made.child(study, number)
        kept = [v for v in child.values() if v != 49]
        # SPOS (top 1): what the child keeps is the best parent's; regularised evolution (the best
        # of all four): one choice mutated, the other the parent's
        assert (all(v == 4 for v in child.values()) if sampler == "spos" else 4 in kept and len(child) == 2), child


@pytest.mark.slow
def test_the_evolution_strategy_runs_from_the_command_line(tmp_path_factory, tmp_path):
    pytest.importorskip("optuna")
    from nas2deploy.spaces.tables import load_table

    table = saved_table(tmp_path_factory, "densenas", TINY, seed=4)
    space = make_space("densenas", TINY)
    predicted = sorted(load_table(table).predict(space.sample_arch(random.Random(i))).best_ms for i in range(200))
    budget = round(predicted[100], 4)
    run = tmp_path / "run"
    common = ["search", "--lut", table, "--data", "synthetic:200", "--batch-size", "16", "--max-batches", "3"]
    result = CliRunner().invoke(cli, [*common, "--strategy", "evolution", "--epochs", "2", "--budget-ms", str(budget),
                                      "--fill", "0.8", "--trials", "24", "--out", str(run), "--json"])
    assert result.exit_code == 0, result.output
    arch = json.loads((run / "arch.json").read_text())
    assert 0.8 * budget <= load_table(table).predict(space.route_arch(space.route_from_dict(arch["meta"]["route"]), "a")).best_ms \
        <= budget
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == ["single-path"] * 2 and log[-1]["arch_loss"] is None
    study = json.loads((run / "evolution" / "study.json").read_text())
    assert study["trials"] == 24 and study["complete"] >= 20 and study["sampler"] == "spos"
    assert all(r["label"] != "-" for r in study["trial_rows"])  # each network in words, for the report
    assert "report.md" in CliRunner().invoke(cli, ["report", str(run / "evolution")]).output
    reported = CliRunner().invoke(cli, ["report", str(run)])  # the supernet's single-path epochs
    assert reported.exit_code == 0 and (run / "report.md").exists(), reported.output
    evolution = [*common, "--strategy", "evolution", "--budget-ms", str(budget), "--fill", "0.8", "--trials", "24",
                 "--out", str(run), "--resume"]
    refused = CliRunner().invoke(cli, [*evolution, "--epochs", "2", "--seed", "1"])
    assert refused.exit_code == 1 and "different configuration: seed: 0 vs 1" in refused.output
    result = CliRunner().invoke(cli, [*evolution, "--epochs", "3"])  # new weights: a study of their own
    assert result.exit_code == 0, result.output
    again = json.loads((run / "evolution" / "study.json").read_text())
    assert again["study"] != study["study"] and again["trials"] == 24
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 3
    other = tmp_path / "other.json"
    result = CliRunner().invoke(cli, ["derive", str(run), "--budget-ms", str(round(predicted[150], 4)), "--trials", "12",
                                      "--out", str(other)])
    assert result.exit_code == 0, result.output
    assert (run / f"evolution-{round(predicted[150], 4):g}ms" / "study.json").exists() and other.exists()
    refused = CliRunner().invoke(cli, ["derive", str(run), "--budget-ms", str(round(predicted[150], 4)), "--trials", "12",
                                       "--validation-images", "20", "--out", str(tmp_path / "fewer.json")])
    assert refused.exit_code == 1 and "created for another validation_images" in refused.output  # scores would not compare
    refused = CliRunner().invoke(cli, [*common, "--strategy", "evolution", "--lambda", "0.3", "--budget-ms", "1",
                                       "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--lambda is an option of the densenas search's gradient strategy" in refused.output
    refused = CliRunner().invoke(cli, [*common, "--strategy", "evolution", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 1 and "give --budget-ms" in refused.output
    gradient = tmp_path / "gradient"
    assert CliRunner().invoke(cli, [*common, "--epochs", "2", "--warmup-epochs", "1", "--out", str(gradient)]).exit_code == 0
    refused = CliRunner().invoke(cli, ["derive", str(gradient), "--trials", "5", "--out", str(tmp_path / "g.json")])
    assert refused.exit_code == 1 and "run searched with --strategy evolution" in refused.output
    refused = CliRunner().invoke(cli, ["derive", str(gradient), "--validation-images", "10", "--out", str(tmp_path / "g.json")])
    assert refused.exit_code == 1 and "--validation-images steers the evolutionary search" in refused.output


SEG = {"input_size": 64, "layers": 3, "base_width": 8, "num_classes": 6}


def test_a_route_through_the_dcnas_supernet_computes_its_network_with_the_supernets_weights():
    from nas2deploy.spaces.dcnas.supernet import DCNASSupernet

    space = make_space("dcnas", SEG)
    torch.manual_seed(0)
    supernet = DCNASSupernet(space, channel_fraction=1.0).eval()
    for m in supernet.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    route = space.sample_route(random.Random(3))
    network = space.make_arch(route, "r").build().eval()
    network.stem.load_state_dict(supernet.stem.state_dict(), strict=False)  # the supernet's BN has no affine terms
    for cell in route:
        key, start = f"{cell.layer}_{cell.scale}", supernet.slices[cell.node].start
        for t, src in zip(network.transforms[key], cell.inputs):
            t.load_state_dict(supernet.transforms[start + space.inputs[cell.node].index(src)].state_dict(), strict=False)
        chosen = supernet.mixtures[supernet.index[cell.node]].candidates[space.config.ops.index(cell.op)]
        network.ops[key].load_state_dict(chosen.state_dict(), strict=False)
    network.resizes.load_state_dict(supernet.resizes.state_dict(), strict=False)
    network.head.load_state_dict(supernet.head.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(supernet(x, route), network(x), atol=1e-5)


def test_a_dcnas_route_is_drawn_by_a_trial_recorded_and_read_back_and_a_bad_one_is_named():
    optuna = pytest.importorskip("optuna")
    from nas2deploy.errors import UserError
    from nas2deploy.spaces.dcnas.search import DCNASSearch
    from nas2deploy.testing import random_table

    space = make_space("dcnas", SEG)
    search = DCNASSearch(space, random_table(space, 0), {"channel_fraction": 1.0})
    assert search.one_shot_refusal() is None
    assert "--channel-fraction 1" in DCNASSearch(space, random_table(space, 0)).one_shot_refusal()
    for seed in range(5):
        route = search.single_path(torch.Generator().manual_seed(seed))
        assert search.suggest_route(optuna.trial.FixedTrial(search.route_params(route))) == route
        net = search.route_network(route, "n")
        assert search.route_of(json_round_trip(net)) == route and "cells" in search.describe_route(net.meta["route"])
    doc = net.meta["route"]
    with pytest.raises(UserError, match="not a route of the space"):
        space.route_from_dict(doc[1:] if doc[0][0] == 0 else doc[:-1])  # a cell missing: a network it is not
    with pytest.raises(UserError, match="distinct candidate inputs"):
        space.route_from_dict([[0, 0, "sep3", [[1, 0]]]])


def json_round_trip(net):
    from nas2deploy.nets import network_from_field
    from nas2deploy.validate import Field

    return network_from_field(Field(json.loads(json.dumps(net.to_dict())), "arch n", "fix it"))


@pytest.mark.slow
def test_dcnas_searches_by_evolution_at_full_width_and_refuses_a_share_of_the_channels(tmp_path_factory, tmp_path):
    pytest.importorskip("optuna")
    from nas2deploy.spaces.tables import load_table

    table = saved_table(tmp_path_factory, "dcnas", SEG)
    space = make_space("dcnas", SEG)
    predicted = sorted(load_table(table).predict(space.sample_arch(random.Random(i))).best_ms for i in range(200))
    budget = round(predicted[120], 4)
    common = ["search", "--space", "dcnas", "--lut", table, "--data", "seg-synthetic:24", "--batch-size", "4",
              "--max-batches", "2", "--strategy", "evolution", "--budget-ms", str(budget)]
    refused = CliRunner().invoke(cli, [*common, "--channel-fraction", "0.25", "--out", str(tmp_path / "d")])
    assert refused.exit_code == 1 and "--channel-fraction 1" in refused.output
    assert not (tmp_path / "d" / "checkpoint.pt").exists()
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [*common, "--epochs", "1", "--fill", "0.7", "--trials", "8", "--out", str(run)])
    assert result.exit_code == 0, result.output
    arch = json.loads((run / "arch.json").read_text())
    assert arch["task"] == "segmentation" and 0.7 * budget <= load_table(table).predict(
        space.make_arch(space.route_from_dict(arch["meta"]["route"]), "a")).best_ms <= budget
    study = json.loads((run / "evolution" / "study.json").read_text())
    assert study["trials"] == 8 and study["score_label"] == "inherited miou"
