"""The DPC study on the black-box search: cells within the budget trained on the cache, cells over
it pruned untrained, a study continued from its storage, a study of another budget refused,
several workers, re-ranking, the closed loop and the report."""

import json
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
    from nas2deploy.testing import random_table

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
    from nas2deploy.spaces.dpc.study import ProxyEvaluator

    return tmp, space, table, ProxyEvaluator(cache, data, str(tmp / "w.pt"), epochs=1), predictions[20]


def cells():
    from nas2deploy.spaces.dpc.study import DPCCells

    return DPCCells()


def test_cells_over_the_budget_are_pruned_untrained_and_the_rest_scored(setup):
    from nas2deploy.search.blackbox.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    study = open_study(space, table, cache, budget, str(tmp / "journal.log"), "s1", "random", seed=1)
    run_trials(study, cells(), space, table, cache, budget, trials=8)
    states = {t.state for t in study.trials}
    assert len(study.trials) == 8 and states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.user_attrs["latency_ms"] > budget and "epochs" not in t.user_attrs  # never trained
        else:
            assert t.user_attrs["latency_ms"] <= budget and 0 <= t.value <= 1 and t.user_attrs["epochs"] == 1


def test_a_study_continues_from_its_storage_and_refuses_another_budget(setup):
    from nas2deploy.search.blackbox.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    storage = str(tmp / "journal2.log")
    run_trials(open_study(space, table, cache, budget, storage, "s2", "tpe"), cells(), space, table, cache, budget, 3)
    again = open_study(space, table, cache, budget, storage, "s2", "tpe")  # another process would do the same
    run_trials(again, cells(), space, table, cache, budget, 5)  # up to 5 in all: 2 more
    assert len(again.trials) == 5
    run_trials(again, cells(), space, table, cache, budget, 5)  # the study is complete: nothing runs
    assert len(again.trials) == 5
    with pytest.raises(UserError, match=r"study s2 in .* was created for another budget_ms \(budget_ms: "):
        open_study(space, table, cache, budget * 2, storage, "s2")
    other = make_space("dpc", {**space.config_dict(), "input_size": 160, "input_width": 160})
    with pytest.raises(UserError, match=r"study s2 in .* was created for another space"):
        open_study(other, table, cache, budget, storage, "s2")
    with pytest.raises(UserError, match="--sampler cmaes: expected one of random, evolution, spos, tpe, nsga2"):
        open_study(space, table, cache, budget, storage, "s4", "cmaes")
    with pytest.raises(UserError, match=r"--storage sqlite:////nonexistent/x.db: cannot open study s5 \(.*unable to open"):
        open_study(space, table, cache, budget, "sqlite:////nonexistent/x.db", "s5")


def test_search_space_dpc_runs_and_continues_a_study_from_the_command_line(setup, tmp_path):
    import json

    from click.testing import CliRunner

    from nas2deploy.cli import cli
    from nas2deploy.nets import load_arch

    tmp, space, table, cache, budget = setup
    save_weights(space.backbone.build(), tmp_path / "chain.pt")  # a classification backbone's weights
    command = ["search", "--space", "dpc", "--lut", str(tmp / "t.json"), "--weights", str(tmp_path / "chain.pt"),
               "--data", "seg-synthetic:8", "--budget-ms", str(budget), "--proxy-epochs", "1", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, [*command, "--trials", "4", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["trials"] == 4 and summary["complete"] + summary["pruned"] == 4
    if summary["complete"]:
        best = load_arch(summary["best"]["arch"])
        assert table.predict(best).best_ms <= budget and best.meta["budget_ms"] == budget
    result = CliRunner().invoke(cli, [*command, "--trials", "6", "--sampler", "evolution", "--json"])  # the same study, continued
    assert result.exit_code == 0 and json.loads(result.stdout)["trials"] == 6, result.output
    assert "# dpc study `dpc`" in (tmp_path / "run" / "report.md").read_text()
    result = CliRunner().invoke(cli, [*command, "--epochs", "5"])
    assert result.exit_code == 2 and "--epochs is an option of the search of the densenas and dcnas space, not of dpc's" \
        in result.output, result.output
    result = CliRunner().invoke(cli, [*command, "--budget-ms", "1e-6"])
    assert result.exit_code == 1 and "the fastest network of the dpc space is predicted at" in result.output, result.output
    other = make_space("dpc", {**space.config_dict(), "num_classes": 19})  # a table profiled for other data
    from nas2deploy.testing import random_table

    random_table(other, 0).save(tmp_path / "t19.json")
    result = CliRunner().invoke(cli, ["search", "--space", "dpc", "--lut", str(tmp_path / "t19.json"), "--weights",
                                      str(tmp_path / "chain.pt"), "--data", "seg-synthetic:8", "--budget-ms", str(budget * 100),
                                      "--out", str(tmp_path / "z")])
    assert result.exit_code == 1 and f"arch dpc (table {tmp_path / 't19.json'}) expects 128px inputs and 19 classes, data seg-synthetic:8 " \
        "has 128px images and 6 classes; profile a table for this data: nas2deploy profile --space dpc --input-size 128 " \
        "--input-width 128 --num-classes 6" in result.output, result.output
    result = CliRunner().invoke(cli, ["search", "--space", "dpc", "--lut", str(tmp / "t.json"), "--budget-ms", str(budget),
                                      "--out", str(tmp_path / "y")])
    assert result.exit_code == 1 and "the dpc search needs --weights" in result.output, result.output
    result = CliRunner().invoke(cli, ["search", "--lut", str(tmp / "t.json"), "--trials", "3", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--trials is an option of the densenas search's evolution strategy" in result.output
    result = CliRunner().invoke(cli, ["search", "--lut", str(tmp / "t.json"), "--measure", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--measure is an option of the densenas search's evolution strategy" in result.output
    result = CliRunner().invoke(cli, ["search", "--lut", str(tmp / "t.json"), "--proxy-epochs", "3", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--proxy-epochs is an option of the search of the dpc space" in result.output


def test_a_window_no_random_cell_reaches_is_refused_before_any_work(setup, tmp_path):
    from nas2deploy.runs import start_study
    from nas2deploy.search.blackbox.study import StudyConfig, require_reachable_window

    tmp, space, table, cache, budget = setup
    fastest, slowest = space.latency_range(table)
    with pytest.raises(UserError, match=r"--budget-ms .* --fill 0.9: none of 1000 random networks of the dpc space is "
                                        r"predicted within .*: lower --fill below"):
        require_reachable_window(space, table, slowest * 10, 0.9)
    config = StudyConfig(table=str(tmp / "t.json"), data="seg-synthetic:8", budget_ms=fastest * 1.000001,
                         out=str(tmp_path / "run"), trials=3, options={"weights": str(tmp / "w.pt"), "proxy_epochs": 1})
    with pytest.raises(UserError, match=r"none of 1000 random networks .* so every trial would be pruned untrained: give "
                                        r"--budget-ms [0-9.]+ or more \(a tenth of them fit\)"):
        start_study(config, "dpc")
    assert not (tmp_path / "run").exists()  # refused before the lock, the folder and the feature cache
    require_reachable_window(space, table, budget, 0.0)  # the median cell's budget: reached


def test_equal_scores_go_to_the_fastest_network_and_are_warned_about(setup):
    from optuna.distributions import CategoricalDistribution

    from nas2deploy.search.blackbox.selection import Candidate
    from nas2deploy.search.blackbox.study import ranked_candidates, separation_warning
    from nas2deploy.spaces.dpc.study import OPS, op_name

    tmp, space, table, cache, budget = setup
    study = optuna.create_study(direction="maximize")
    nets = list({n.cell: n for n in (space.sample_arch(random.Random(i)) for i in range(3))}.values())
    for net in nets:
        params, dists = {}, {}
        for i, b in enumerate(net.cell):
            params[f"b{i}_input"], dists[f"b{i}_input"] = b.input, CategoricalDistribution(list(range(-1, i)))
            params[f"b{i}_op"], dists[f"b{i}_op"] = op_name(b), CategoricalDistribution(list(OPS))
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=0.1205,
                                                  user_attrs={"latency_ms": table.predict(net).best_ms}))
    ranked = ranked_candidates(study, cells(), space)
    assert len(ranked) == len(nets) >= 2
    assert [c.latency_ms for c in ranked] == sorted(c.latency_ms for c in ranked)  # the tie goes to the fastest
    warning = separation_warning(ranked, "proxy mIoU")
    assert warning and "proxy mIoU scores lie within 0.0000 of each other" in warning and "equal scores go to the faster network" in warning
    apart = [Candidate(0, nets[0], 0.30, 1.0), Candidate(1, nets[1], 0.20, 0.5)]
    assert separation_warning(apart, "proxy mIoU") is None


def test_a_trial_cut_short_by_ctrl_c_is_run_again_on_the_next_start(setup, capfd):
    from nas2deploy.search.blackbox.space import Evaluator
    from nas2deploy.search.blackbox.storage import counted
    from nas2deploy.search.blackbox.study import open_study, run_trials

    tmp, space, table, cache, budget = setup

    class CtrlC(Evaluator):  # Ctrl-C arrives while the first trial within the budget is scored
        identity = cache.identity

        def score(self, net, seed):
            raise KeyboardInterrupt

    wide = space.latency_range(table)[1]  # every cell within the budget: each trial is scored
    storage = str(tmp / "interrupted.log")
    study = open_study(space, table, cache, wide, storage, "cut")
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, cells(), space, table, CtrlC(), wide, 3)
    assert "Traceback" not in capfd.readouterr().err  # Optuna's failed-trial warning is not printed
    (cut,) = study.get_trials(deepcopy=False)[:1]
    assert cut.state == optuna.trial.TrialState.FAIL and counted(study) == (1, 1)  # not counted; its copy waits
    again = open_study(space, table, cache, wide, storage, "cut")
    run_trials(again, cells(), space, table, cache, wide, 3)
    trials = again.get_trials(deepcopy=False)
    assert trials[1].params == cut.params and trials[1].state == optuna.trial.TrialState.COMPLETE  # run first
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3 and counted(again) == (3, 0)


def test_trials_and_their_steps_say_how_far_they_are(setup):
    from nas2deploy.search.blackbox.study import open_study, run_trials
    from nas2deploy.spaces.dpc.proxy import train_cell

    tmp, space, table, cache, budget = setup
    lines: list[str] = []
    net = space.sample_arch(random.Random(0)).renamed("trial-0")
    train_cell(net, cache.cache, epochs=1, progress=lines.append)
    steps = -(-len(cache.cache.features["train"]) // 8)
    assert lines == [lines[-1]] and lines[-1].startswith(f"trial-0: steps: {steps}/{steps} (")
    lines.clear()
    wide = space.latency_range(table)[1]
    study = open_study(space, table, cache, wide, str(tmp / "beats.log"), "beats")
    run_trials(study, cells(), space, table, cache, wide, 2, say=lines.append)
    assert lines[-1].startswith("trials: 2/2 best proxy mIoU 0.") and "elapsed" in lines[-1], lines


def _killed_worker(storage, study_name, worker="", optimize=False):
    """A worker process that takes a trial of the study and is killed with SIGKILL while it runs
    it: asked directly (``worker``: its own host and pid, as the search records them), or inside
    Optuna's ``optimize`` so that its heartbeat runs (``HEARTBEAT_S`` 1 s)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    attr = repr(worker) if worker else "worker_id()"
    script = ("import time, optuna\n"
              "import nas2deploy.search.blackbox.storage as st\n"
              "from nas2deploy.search.blackbox.storage import storage_for, worker_id\n"
              "st.HEARTBEAT_S, st.GRACE_S = 1, 2\n"
              f"s = optuna.load_study(study_name={study_name!r}, storage=storage_for({storage!r}))\n"
              "def hang(t):\n"
              f"    t.set_user_attr('worker', {attr}); print('running', flush=True); time.sleep(120)\n"
              + ("s.optimize(hang, n_trials=1)\n" if optimize else "hang(s.ask())\n"))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "running"
    if optimize:  # the heartbeat thread's first beat may come after the objective starts
        time.sleep(2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def _accounted(study, trained):
    """Every trial finished: exactly ``trained`` complete or pruned, each failed one's network
    queued again once and run, none running or waiting; a trial two workers asked for beyond the
    total stopped before drawing anything (surplus)."""
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t for t in trials}
    failed = [t for t in trials if t.state == state.FAIL and not t.user_attrs.get("surplus")]
    surplus = [t for t in trials if t.state == state.FAIL and t.user_attrs.get("surplus")]
    assert sum(t.state in (state.COMPLETE, state.PRUNED) for t in trials) == trained
    assert not [t for t in trials if t.state in (state.RUNNING, state.WAITING)]
    assert all(t.number in retried and retried[t.number].state != state.FAIL for t in failed)
    assert len(trials) == trained + len(failed) + len(surplus) and not [t for t in surplus if t.params]
    return failed


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_a_worker_killed_mid_trial_is_failed_and_its_network_run_again(setup, tmp_path, request, kind):
    """A worker killed with SIGKILL leaves its trial running; the next worker on the host marks it
    failed and queues its network again, and the study still reaches its count of trained trials."""
    from nas2deploy.search.blackbox.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    storage = str(tmp_path / "journal.log") if kind == "journal" else request.getfixturevalue("postgres_url")
    study = open_study(space, table, cache, budget * 100, storage, f"killed-{kind}")  # every cell fits: all train
    _killed_worker(storage, f"killed-{kind}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]  # what the killed worker left
    run_trials(study, cells(), space, table, cache, budget * 100, 4)
    assert [t.number for t in _accounted(study, 4)] == [0]


def test_two_workers_starting_together_queue_a_dead_workers_trial_once(setup, tmp_path, monkeypatch):
    """Two workers start beside each other and both read the dead worker's trial as running: the
    one that fails it second leaves it to the first (no error, no second copy queued)."""
    from nas2deploy.search.blackbox.storage import fail_dead_workers_trials, open_storage_study, storage_for

    storage = str(tmp_path / "journal.log")
    optuna.create_study(study_name="pair", storage=storage_for(storage))
    _killed_worker(storage, "pair")
    late = open_storage_study(storage, "pair")
    read = late.get_trials(deepcopy=True)  # what the second worker read before the first failed the trial
    assert fail_dead_workers_trials(open_storage_study(storage, "pair")) == [0]
    monkeypatch.setattr(late, "get_trials", lambda deepcopy=False, states=None:
                        [t for t in read if states is None or t.state in states])
    assert fail_dead_workers_trials(late) == []
    states = [t.state for t in open_storage_study(storage, "pair").trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]


def test_a_silent_worker_elsewhere_is_failed_by_the_database_heartbeat(setup, postgres_url, monkeypatch):
    """A worker of another host (its pid means nothing here) killed mid-trial: Optuna's heartbeat
    fails its trial after the grace period and the stale-trial callback queues it again."""
    import time

    import nas2deploy.search.blackbox.storage as storage_module
    from nas2deploy.search.blackbox.study import open_study, run_trials

    monkeypatch.setattr(storage_module, "HEARTBEAT_S", 1)
    monkeypatch.setattr(storage_module, "GRACE_S", 2)
    tmp, space, table, cache, budget = setup
    study = open_study(space, table, cache, budget * 100, postgres_url, "heartbeat")
    _killed_worker(postgres_url, "heartbeat", worker="another-host:1", optimize=True)
    time.sleep(3)
    run_trials(study, cells(), space, table, cache, budget * 100, 3)
    assert [t.number for t in _accounted(study, 3)] == [0]


def test_two_workers_and_a_killed_one_share_a_postgresql_study(setup, tmp_path, postgres_url):
    """Two search commands on one PostgreSQL study, beside a worker killed mid-trial: every trial
    accounted for, none run twice; a later command continues the study."""
    import os
    import subprocess
    import sys

    from nas2deploy.search.blackbox.storage import open_storage_study

    tmp, space, table, cache, budget = setup
    save_weights(space.backbone.build(), tmp_path / "chain.pt")

    def command(out, trials):
        return [sys.executable, "-m", "nas2deploy", "--quiet", "search", "--space", "dpc", "--lut", str(tmp / "t.json"),
                "--weights", str(tmp_path / "chain.pt"), "--data", "seg-synthetic:8", "--budget-ms", str(budget),
                "--proxy-epochs", "1", "--storage", postgres_url, "--study", "team", "--trials", str(trials),
                "--out", str(tmp_path / out)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command("w0", 1), env=env, capture_output=True, text=True)  # creates the study
    assert first.returncode == 0, first.stderr
    _killed_worker(postgres_url, "team")
    errors = [tmp_path / f"w{i + 1}.err" for i in range(2)]
    workers = [subprocess.Popen(command(f"w{i + 1}", 8), env=env, stdout=subprocess.DEVNULL, stderr=err.open("w"))
               for i, err in enumerate(errors)]
    assert [w.wait() for w in workers] == [0, 0], [e.read_text()[-3000:] for e in errors]
    study = open_storage_study(postgres_url, "team")
    failed = _accounted(study, 8)
    assert [t.number for t in failed] == [1]
    pids = {t.user_attrs["worker"].rpartition(":")[2] for t in study.trials if t.number > 1}
    assert pids <= {str(w.pid) for w in workers}
    done = subprocess.run(command("w3", 10), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _accounted(open_storage_study(postgres_url, "team"), 10)


def test_a_database_storage_holds_a_study_too(setup, tmp_path):
    from nas2deploy.search.blackbox.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_trials(open_study(space, table, cache, budget, url, "db"), cells(), space, table, cache, budget, 3)
    assert len(open_study(space, table, cache, budget, url, "db").trials) == 3  # another worker would see them


def _toy_study(seed, trials):
    """A study of 3-branch cells under regularised evolution, scored without training: the mean
    atrous rate of the separable branches (1x1 convolutions and pooling score 0)."""
    from nas2deploy.search.blackbox.evolution import RegularisedEvolution

    space = make_space("dpc", {"input_size": 128, "input_width": 128, "branches": 3})
    study = optuna.create_study(direction="maximize", sampler=RegularisedEvolution(seed=seed, population=6, sample=2))
    study.optimize(lambda t: sum(sum(b.rate) for b in cells().suggest(t, space, "t").cell if b.op == "sep3x3") / 126,
                   n_trials=trials)
    return study


def test_regularised_evolution_mutates_one_choice_of_the_best_of_a_sample_from_the_youngest():
    study = _toy_study(seed=3, trials=40)
    trials = study.trials
    for child in trials[6:]:  # after the random phase: one parameter from a member of the population
        population = trials[child.number - 6:child.number]
        distance = min(sum(child.params[k] != p.params[k] for k in child.params) for p in population)
        assert distance <= 1, (child.number, child.params)
    assert [t.params for t in _toy_study(seed=3, trials=40).trials] == [t.params for t in trials]  # reproducible
    assert [t.params for t in _toy_study(seed=4, trials=10).trials] != [t.params for t in trials[:10]]
    assert study.best_value > max(t.value for t in trials[:6]) + 0.1  # it climbs


def test_a_worker_joining_a_study_does_not_redraw_the_first_workers_cells(setup):
    from nas2deploy.search.blackbox.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    storage = str(tmp / "journal-join.log")
    first = open_study(space, table, cache, budget * 100, storage, "j", "random", seed=0)
    run_trials(first, cells(), space, table, cache, budget * 100, 3)
    second = open_study(space, table, cache, budget * 100, storage, "j", "random", seed=0)  # the same command again
    run_trials(second, cells(), space, table, cache, budget * 100, 6)
    drawn = [cells().suggest(t, space, "t").cell for t in second.trials]
    assert len(set(drawn)) == 6, drawn  # with one seed for both, trials 3-5 were trials 0-2 again


def test_the_best_cells_are_reranked_end_to_end_then_measured_until_one_fits_and_reported(setup, tmp_path):
    import json

    from nas2deploy.nets import load_arch
    from nas2deploy.report import regenerate
    from nas2deploy.runs import start_study
    from nas2deploy.search.blackbox.study import StudyConfig, StudyFailed

    tmp, space, table, cache, budget = setup
    config = StudyConfig(table=str(tmp / "t.json"), data="seg-synthetic:8", budget_ms=budget * 100, out=str(tmp_path / "run"),
                         trials=5, rerank=3, rerank_epochs=1, measure=True,
                         options={"weights": str(tmp / "w.pt"), "proxy_epochs": 1})
    overrides: dict = {}  # the table's space
    measured = []

    def measure(net):  # injected: the first network measured is over the budget, the rest at their prediction
        measured.append(net.cell)
        return budget * 1000 if len(measured) == 1 else table.predict(net).best_ms

    summary = start_study(config, "dpc", overrides, measure=measure)
    reranked = summary["rerank"]["cells"]
    assert len(reranked) == 3 and [r["score"] for r in reranked] == sorted((r["score"] for r in reranked), reverse=True)
    assert all(0 <= r["score"] <= 1 for r in reranked)
    assert [(m["trial"], m["fits"]) for m in summary["measured"]] == [(reranked[0]["trial"], False), (reranked[1]["trial"], True)]
    assert summary["best"]["trial"] == reranked[1]["trial"]  # the best re-ranked cell that measured within the budget
    assert load_arch(tmp_path / "run" / "best.json").cell == measured[1]
    journal = (tmp_path / "run" / "rerank.jsonl").read_text().splitlines()
    assert len(journal) == 3

    again = start_study(config, "dpc", overrides, measure=lambda net: 0.0)  # the study is complete, the re-ranking journaled
    assert again["rerank"] == summary["rerank"] and len((tmp_path / "run" / "rerank.jsonl").read_text().splitlines()) == 3
    report = regenerate(tmp_path / "run").read_text()
    assert "## Re-ranked by end-to-end training" in report and f"**Chosen: trial {again['best']['trial']}**" in report
    with pytest.raises(StudyFailed, match=rf"none of the [0-9]+ trained networks measures within --budget-ms {budget * 100:g} "
                                          r"on this machine \(the fastest 1e\+06 ms\)"):
        start_study(config, "dpc", overrides, measure=lambda net: 1e6)  # nothing fits: the study is still written
    failed = json.loads((tmp_path / "run" / "study.json").read_text())
    assert "best" not in failed and not (tmp_path / "run" / "best.json").exists()  # no stale choice left behind
    assert failed["measured"] and not any(m["fits"] for m in failed["measured"]) and "measures within" in failed["failure"]
    assert "**No network delivered**: none of the" in regenerate(tmp_path / "run").read_text()
    start_study(config, "dpc", overrides, measure=lambda net: 0.0)
    for png in ("trajectory.png", "pareto.png"):
        assert (tmp_path / "run" / png).stat().st_size > 1000
    doc = json.loads((tmp_path / "run" / "study.json").read_text())
    doc["trial_rows"][0]["latency_ms"] = -1
    (tmp_path / "run" / "study.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"study summary .*study.json: field trial_rows\[0\].latency_ms must be"):
        regenerate(tmp_path / "run")


def test_the_pareto_front_keeps_the_cells_nothing_beats_in_both():
    from nas2deploy.report.study_report import pareto_front

    points = [(1.0, 0.30, 0), (1.2, 0.28, 1), (1.1, 0.35, 2), (0.9, 0.20, 3), (1.3, 0.40, 4), (1.1, 0.33, 5)]
    assert [p[2] for p in pareto_front(points)] == [3, 0, 2, 4]


def test_a_cityscapes_layout_is_cached_and_searched_like_the_built_in_scenes(tmp_path):
    """A Cityscapes folder (leftImg8bit / gtFine labelTrainIds) goes through the
    cache and the study as the built-in scenes do, its 19 classes read from the layout."""
    import numpy as np
    from PIL import Image

    from nas2deploy.runs import start_study
    from nas2deploy.search.blackbox.study import StudyConfig
    from nas2deploy.testing import random_table

    rng = np.random.default_rng(0)
    root = tmp_path / "cityscapes"
    for split in ("train", "val"):
        for i in range(3):
            stem = f"aachen_{i:06d}_000019"
            for folder, name, array in (("leftImg8bit", f"{stem}_leftImg8bit.png", rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)),
                                        ("gtFine", f"{stem}_gtFine_labelTrainIds.png", rng.integers(0, 19, (64, 128), dtype=np.uint8))):
                path = root / folder / split / "aachen" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
    space = make_space("dpc", {"input_size": 128, "input_width": 128, "branches": 2, "filters": 16})
    table = random_table(space, 0)
    table.save(tmp_path / "t.json")
    save_weights(space.backbone.build(), tmp_path / "chain.pt")
    summary = start_study(StudyConfig(table=str(tmp_path / "t.json"), data=str(root), budget_ms=space.latency_range(table)[1],
                                      out=str(tmp_path / "run"), trials=2,
                                      options={"weights": str(tmp_path / "chain.pt"), "proxy_epochs": 1}), "dpc")
    assert summary["complete"] == 2 and 0 <= summary["best"]["score"] <= 1
    cache = json.loads((tmp_path / "run" / "cache" / "cache.json").read_text())
    assert cache["classes"] == 19 and cache["splits"]["train"]["labels"] == [128, 128]
    # cells are scored on a part of the training images; the three test images are never read
    assert cache["splits"]["train"]["count"] + cache["splits"]["val"]["count"] == 3 and cache["splits"]["val"]["count"] == 1


def test_a_database_password_is_never_printed():
    from nas2deploy.search.blackbox.storage import shown_storage

    assert shown_storage("postgresql://nas:s3cr:et@db.example:5432/studies") == "postgresql://nas:***@db.example:5432/studies"
    assert shown_storage("sqlite:///runs/dpc.db") == "sqlite:///runs/dpc.db"
    assert shown_storage("runs/dpc/study.log") == "runs/dpc/study.log"


def test_a_torn_study_journal_is_repaired_and_a_corrupt_one_refused(setup, tmp_path, monkeypatch):
    """A kill mid-append leaves a torn last line: cut off before any worker appends behind it,
    and the study continues; a damaged line before the end is refused in one line. A relative
    path works too (Optuna's lock is a link to the journal)."""
    from nas2deploy.search.blackbox.study import open_study, run_trials

    tmp, space, table, cache, budget = setup
    monkeypatch.chdir(tmp_path)
    run_trials(open_study(space, table, cache, budget, "study.log", "torn"), cells(), space, table, cache, budget, 2)
    journal = tmp_path / "study.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-7])  # the last line torn
    study = open_study(space, table, cache, budget, "study.log", "torn")
    run_trials(study, cells(), space, table, cache, budget, 3)
    assert len(study.trials) == 3 and journal.read_bytes().endswith(b"\n")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:2], b'{"op_code": 4, "worker_id\n', *lines[2:]]))
    with pytest.raises(UserError, match=r"study journal .*study.log: line 3 is corrupt; restore the file from a copy"):
        open_study(space, table, cache, budget, "study.log", "torn")


def test_poisoned_trials_are_named_and_left_out(setup, tmp_path):
    """Values a hand-edited or damaged storage may hold: a score of 1e308 or inf, a latency that
    is missing or negative. The trials are left out of the ranking and their rows say why."""
    from nas2deploy.search.blackbox.study import open_study, poisoned, ranked_candidates, run_trials, trial_rows

    tmp, space, table, cache, budget = setup
    study = open_study(space, table, cache, budget * 100, str(tmp_path / "p.log"), "p")
    run_trials(study, cells(), space, table, cache, budget * 100, 2)
    good = study.trials[0]
    for value, attrs in [(1e308, good.user_attrs), (float("inf"), good.user_attrs),
                         (0.5, {k: v for k, v in good.user_attrs.items() if k != "latency_ms"}),
                         (0.5, {**good.user_attrs, "latency_ms": -1.0})]:
        study.add_trial(optuna.trial.create_trial(params=good.params, distributions=good.distributions, value=value,
                                                  user_attrs=attrs))
    adapter = cells()
    reasons = [poisoned(t, adapter, space) for t in study.trials]
    assert reasons[:2] == [None, None] and all(reasons[2:])
    assert {c.trial for c in ranked_candidates(study, adapter, space)} <= {0, 1}
    rows = trial_rows(study, adapter, space)
    assert [r.get("poisoned") for r in rows] == reasons
    assert all(r["score"] is None and r["latency_ms"] is None for r in rows[2:])
