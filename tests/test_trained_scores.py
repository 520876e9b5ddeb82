"""The benchmarks' journal of trained scores (``nas2deploy/evaluation/scores.py``): a killed
comparison resumes without training again what it already scored."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas2deploy.evaluation.scores import Recipe, ScoreJournal, benchmark_data, benchmark_training, spread

from nas2deploy.demo import demo_entry, with_classes
from nas2deploy.spaces import make_space


def tiny_network():
    space = make_space("densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 0})
    return space.sample_arch(random.Random(0))


def test_the_journal_trains_once_resumes_past_a_cut_line_and_keys_on_the_recipe(tmp_path):
    data = benchmark_data("synthetic:40", 32, 30)
    assert len(data.test) == 30 and data.name == "synthetic:40+test30"
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05)
    path = tmp_path / "scores.jsonl"
    arch = tiny_network()
    first = ScoreJournal(path, data, recipe).scores(arch, 2)
    assert len(first) == 2 and all(0 <= s <= 1 for s in first)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and [json.loads(x)["seed"] for x in lines] == [0, 1]
    with path.open("a") as fh:
        fh.write('{"key": "cut sho')  # a kill in the middle of a line
    again = ScoreJournal(path, data, recipe)
    assert again.scores(arch.renamed("other name"), 2) == first  # the body, not the name, is the key
    assert path.read_text().count("\n") == 2  # nothing trained again
    longer = ScoreJournal(path, data, Recipe(epochs=2, batch_size=16, lr=0.05))
    assert longer.recipe.key(arch, data, 0) != recipe.key(arch, data, 0)


def test_the_comparison_counts_a_network_kept_by_the_closed_loop_once():
    import numpy as np
    from nas2deploy.evaluation.significance import compare

    def row(kind, blocks, scores):
        mean, std = spread(scores)
        return {"kind": kind, "arch": {"name": kind, "meta": {}, "blocks": blocks}, "scores": scores, "mean": mean, "std": std}

    rows = [row("searched", 1, [0.90, 0.90, 0.90]), row("closed loop", 1, [0.90, 0.90, 0.90]),
            row("random", 2, [0.70, 0.74, 0.72]), row("random", 3, [0.80, 0.84, 0.82])]
    summary = compare(rows, np.random.default_rng(0))
    assert summary["networks"] == 3
    assert abs(summary["pooled_seed_std"] - (2 * 0.02**2 / 3) ** 0.5) < 1e-9  # not over 4 rows
    assert summary["searched"]["rank"] == summary["closed loop"]["rank"] == 1 and summary["searched"]["of"] == 3
    assert summary["closed loop"]["same_as_searched"]
    assert abs(summary["searched"]["margin_in_pooled_std"] - (0.90 - 0.77) / summary["pooled_seed_std"]) < 1e-9
    assert summary["searched"]["bootstrap_p"] == 0.0


def test_the_default_training_is_the_harder_set_seen_once_and_given_data_keeps_the_demos_epochs():
    plan = demo_entry("classification").demo
    assert benchmark_training(plan, "", 0) == ("synthetic-small:32000", 1)
    assert benchmark_training(plan, "", 3) == ("synthetic-small:32000", 3)
    assert benchmark_training(plan, "synthetic-small", 0) == ("synthetic-small", plan.train_epochs)
    dcnas = demo_entry("segmentation").demo
    assert benchmark_training(dcnas, "", 0) == (dcnas.data, dcnas.train_epochs)  # no harder variant


def test_the_journal_trains_side_by_side_in_worker_processes_and_writes_each_score_once(tmp_path):
    source = ("synthetic:40", 32, 30)
    data = benchmark_data(*source)
    path = tmp_path / "scores.jsonl"
    journal = ScoreJournal(path, data, Recipe(epochs=1, batch_size=16, lr=0.05), source)
    archs = [tiny_network(), tiny_network().renamed("the same body")]
    said = []
    journal.fill(archs, 2, jobs=2, say=said.append)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(x["seed"] for x in lines) == [0, 1] and len(said) == 2  # one body: two trainings, not four
    assert all(0 <= x["score"] <= 1 for x in lines)
    assert journal.scores(archs[1], 2) == [next(x["score"] for x in lines if x["seed"] == s) for s in (0, 1)]
    assert len(path.read_text().splitlines()) == 2  # nothing trained again


def test_a_training_subset_is_seeded_names_itself_and_keeps_the_training_draws():
    whole = benchmark_data("synthetic:40", 32, 0)
    part = benchmark_data("synthetic:40", 32, 0, train_images=10)
    again = benchmark_data("synthetic:40", 32, 0, train_images=10)
    assert len(part.train) == 10 and part.name == f"{whole.name}+train10" and len(part.test) == len(whole.test)
    x, y = part.train[3]
    x2, y2 = again.train[3]
    assert y == y2 and (x == x2).all()  # the same images every time: a journal's key stays valid
    assert part.train.indices == sorted(set(part.train.indices)) and max(part.train.indices) < len(whole.train)
    assert benchmark_data("synthetic:40", 32, 0, train_images=10_000).name == whole.name  # no subset to take


def test_rank_agreement_finds_a_ranking_and_its_reverse_and_bounds_its_uncertainty():
    import numpy as np
    from nas2deploy.evaluation.significance import rank_agreement

    rng = np.random.default_rng(0)
    truth = list(range(12))
    same = rank_agreement([2 * t + 1 for t in truth], truth, rng, resamples=500)
    assert same["kendall_tau"] == pytest.approx(1) and same["spearman_rho"] == pytest.approx(1) and same["networks"] == 12
    reverse = rank_agreement([-t for t in truth], truth, rng, resamples=500)
    assert reverse["kendall_tau"] == pytest.approx(-1)
    noisy = rank_agreement(list(rng.permutation(12).astype(float)), truth, rng, resamples=500)
    low, high = noisy["kendall_tau_ci95"]
    assert low < noisy["kendall_tau"] < high and high - low > 0.3  # twelve shuffled networks prove little


def test_a_margin_without_seed_noise_keeps_its_sign():
    from nas2deploy.evaluation.significance import margin

    assert margin(0.02, 0.01) == pytest.approx(2)
    assert margin(-0.02, 0.0) == float("-inf") and margin(0.02, 0.0) == float("inf") and margin(0.0, 0.0) == 0.0


def test_rank_agreement_with_one_value_throughout_is_undefined_not_a_number():
    import numpy as np
    from nas2deploy.evaluation.significance import rank_agreement

    tied = rank_agreement([0.1, 0.2, 0.3], [0.5, 0.5, 0.5], np.random.default_rng(0), resamples=50)
    assert tied["kendall_tau"] is None and tied["spearman_rho"] is None and tied["kendall_tau_ci95"] is None


def test_a_real_sets_classes_give_the_demo_space_its_head_and_a_table_of_its_own():
    seg = demo_entry("segmentation")
    camvid = with_classes(seg, 11)
    assert camvid.demo.space_config == {**seg.demo.space_config, "num_classes": 11}
    assert camvid.demo.table_name not in (seg.demo.table_name, "") and camvid.demo.shipped is None
    assert make_space(camvid.name, camvid.demo.space_config).config_dict()["num_classes"] == 11
    cifar = demo_entry("classification")
    assert with_classes(cifar, 10) is cifar  # CIFAR-10's classes are the demo's: its shipped table serves


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from Linux's /proc")
def test_training_workers_exit_when_the_benchmark_is_killed(tmp_path):
    """A killed comparison leaves no worker training on beside the run that resumes it."""
    script = tmp_path / "fill.py"
    script.write_text(
        "import random\n"
        "from pathlib import Path\n"
        "from nas2deploy.evaluation.scores import Recipe, ScoreJournal, benchmark_data\n"
        "from nas2deploy.spaces import make_space\n"
        "if __name__ == '__main__':\n"
        "    space = make_space('densenas', {'input_size': 32, 'width_mult': 0.25, 'num_classes': 10, 'max_stack_layers': 0})\n"
        "    source = ('synthetic:40', 32, 30)\n"
        f"    journal = ScoreJournal(Path({str(tmp_path / 'scores.jsonl')!r}), benchmark_data(*source), Recipe(1000, 16, 0.05), source)\n"
        "    journal.fill([space.sample_arch(random.Random(s)) for s in (0, 1)], 1, jobs=2)\n")
    benchmark = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).parents[1])

    def children() -> list[int]:
        pids = (int(p.name) for p in Path("/proc").glob("[0-9]*"))
        return [pid for pid in pids if (fields := _stat(pid)) and int(fields[1]) == benchmark.pid]

    try:
        deadline = time.monotonic() + 120
        while len(workers := children()) < 2 and time.monotonic() < deadline and benchmark.poll() is None:
            time.sleep(0.2)
        assert len(workers) >= 2, "the benchmark started no workers"
        time.sleep(1)  # the workers' start (their watch begins before their data is read)
    finally:
        benchmark.kill()
        benchmark.wait()
    deadline = time.monotonic() + 30
    while (alive := [w for w in workers if (_stat(w) or ["Z"])[0] != "Z"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for w in alive:  # a failure leaves nothing training on
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived the killed benchmark"


def _stat(pid: int) -> list[str] | None:
    """A process's fields from /proc after its name: its state, then its parent; None once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
