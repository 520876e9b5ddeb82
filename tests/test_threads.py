"""The computation's threads: by default the cores free as a command starts (measured from the
kernel's idle counters, injected here), shared by torchrun's local ranks, or --threads N."""

import json

import torch
from click.testing import CliRunner
from conftest import saved_table

from nas2deploy.cli import cli
from nas2deploy.threads import choose_threads, free_cores


def readings(*pairs):
    it = iter(pairs)
    return lambda: next(it)


def test_the_free_cores_are_the_idle_share_of_the_cores_rounded_and_at_least_one():
    no_sleep = lambda s: None  # noqa: E731
    # (idle, total) jiffies: one of two cores busy over the window
    assert free_cores(2, windows=1, read=readings((100, 200), (150, 300)), sleep=no_sleep) == 1
    assert free_cores(16, windows=1, read=readings((0, 0), (100, 100)), sleep=no_sleep) == 16  # all idle
    assert free_cores(4, windows=1, read=readings((0, 0), (0, 100)), sleep=no_sleep) == 1  # all busy: still one
    assert free_cores(8, windows=1, read=readings(None, None), sleep=no_sleep) == 8  # no /proc/stat: every core
    # a blip fills one window of three: the most idle window counts
    assert free_cores(2, read=readings((0, 0), (0, 100), (100, 200), (180, 300)), sleep=no_sleep) == 2
    # a load that persists fills all three
    assert free_cores(2, read=readings((0, 0), (50, 100), (100, 200), (150, 300)), sleep=no_sleep) == 1


def test_threads_asked_for_win_and_local_ranks_share_the_free_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads(3, measure=lambda: 1) == 3
    assert choose_threads(0, measure=lambda: 8) == 8
    assert choose_threads(0, ranks=4, measure=lambda: 8) == 2
    assert choose_threads(0, ranks=4, measure=lambda: 2) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the standard knob, where set, is the default
    assert choose_threads(0, measure=lambda: 8) == 3 and choose_threads(2) == 2


def test_a_search_runs_on_the_threads_asked_for_and_logs_them(tmp_path_factory, tmp_path):
    table = saved_table(tmp_path_factory, "densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 10,
                                                       "max_stack_layers": 1})
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(cli, ["search", "--lut", table, "--data", "synthetic:100", "--epochs", "1",
                                          "--warmup-epochs", "0", "--batch-size", "16", "--max-batches", "1", "--threads",
                                          "1", "--out", str(tmp_path / "run")])
        assert result.exit_code == 0, result.output
        assert "computing on 1 CPU thread" in result.output
        assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["threads"] == 1
    finally:
        torch.set_num_threads(before)
