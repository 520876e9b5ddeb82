"""The DPC study on Optuna: cells within the budget trained on the cache, cells over it pruned
untrained, a study continued from its storage, a study of another budget refused."""

import random

import pytest
import torch

from nas2deploy.data import open_dataset
from nas2deploy.errors import UserError
from nas2deploy.spaces import make_space
from nas2deploy.spaces.dpc.proxy import build_cache
from nas2deploy.train import save_weights

optuna = pytest.importorskip("optuna")  # the GPU image has no optuna


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from budget_exactness import random_table

    tmp = tmp_path_factory.mktemp("study")
    data = open_dataset("seg-synthetic:8", 128)
    space = make_space("dpc", {"input_size": 128, "input_width": 128, "branches": 2, "filters": 16,
                               "num_classes": data.num_classes})
    torch.manual_seed(0)
    net = space.sample_arch(random.Random(0))
    save_weights(net.build(), tmp / "w.pt")
    cache = build_cache(net, tmp / "w.pt", data, "seg-synthetic:8", tmp / "cache")
    table = random_table(space, 0)
    table.save(tmp / "t.json")
    predictions = sorted(table.predict(space.sample_arch(random.Random(i))).best_ms for i in range(40))
    return tmp, space, table, cache, predictions[20]


def test_cells_over_the_budget_are_pruned_untrained_and_the_rest_scored(setup):
    from nas2deploy.spaces.dpc.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    study = open_study(space, table, cache, budget, str(tmp / "journal.log"), "s1", "random", seed=1)
    run_trials(study, space, table, cache, budget, trials=8, epochs=1, batch_size=4)
    states = {t.state for t in study.trials}
    assert len(study.trials) == 8 and states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.user_attrs["latency_ms"] > budget and "epochs" not in t.user_attrs  # never trained
        else:
            assert t.user_attrs["latency_ms"] <= budget and 0 <= t.value <= 1 and t.user_attrs["epochs"] == 1


def test_a_study_continues_from_its_storage_and_refuses_another_budget(setup):
    from nas2deploy.spaces.dpc.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    storage = str(tmp / "journal2.log")
    run_trials(open_study(space, table, cache, budget, storage, "s2", "tpe"), space, table, cache, budget, 3, epochs=1)
    again = open_study(space, table, cache, budget, storage, "s2", "tpe")  # another process would do the same
    run_trials(again, space, table, cache, budget, 2, epochs=1)
    assert len(again.trials) == 5
    with pytest.raises(UserError, match=r"study s2 in .* was created for another budget_ms \(budget_ms: "):
        open_study(space, table, cache, budget * 2, storage, "s2")
    other = make_space("dpc", {**space.config_dict(), "input_size": 160, "input_width": 160})
    with pytest.raises(UserError, match="holds 320x8x8 features, the dpc space .* reads 320x10x10"):
        open_study(other, table, cache, budget, storage, "s3")
    with pytest.raises(UserError, match="--sampler cmaes: expected one of random, tpe, nsga2"):
        open_study(space, table, cache, budget, storage, "s4", "cmaes")
    with pytest.raises(UserError, match=r"--storage sqlite:////nonexistent/x.db: cannot open study s5 \(.*unable to open"):
        open_study(space, table, cache, budget, "sqlite:////nonexistent/x.db", "s5")
