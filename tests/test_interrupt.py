"""Long work talks while it runs and ends cleanly on Ctrl-C: a heartbeat line every few seconds
with an estimate that leaves out start-up, and on Ctrl-C one line saying what was kept and the
command that continues, exit status 130."""

import shlex

import pytest
from click.testing import CliRunner
from conftest import saved_table

from nas2deploy.cli import cli
from nas2deploy.heartbeat import Heartbeat
from nas2deploy.search.loop import SearchRun

SPACE = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_heartbeat_speaks_every_ten_seconds_and_its_estimate_leaves_out_start_up():
    clock, said = Clock(), []
    beat = Heartbeat(said.append, "epoch 1/3 weights batches", 11, clock=clock)
    clock.now = 30.0  # the first batch carries 30 s of start-up
    beat.tick(1)
    assert said == ["epoch 1/3 weights batches: 1/11 (30 s elapsed, ETA -)"]  # no rate yet: no guess
    for i in range(2, 11):
        clock.now += 2.0  # then 2 s a batch
        beat.tick(i)
    assert said[1:] == ["epoch 1/3 weights batches: 6/11 (40 s elapsed, ETA 10 s)"]  # 10 s after the last line
    clock.now += 2.0
    beat.tick(11)
    assert said[-1] == "epoch 1/3 weights batches: 11/11 (50 s elapsed, ETA 0 s)"  # the end is always said


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return saved_table(tmp_path_factory, "densenas", SPACE, seed=0)


def _interrupt_at_evaluation(monkeypatch, call):
    real, calls = SearchRun.evaluate, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SearchRun, "evaluate", interrupted)


def test_ctrl_c_in_a_search_says_what_is_kept_and_the_command_that_continues(tmp_path, table_path, monkeypatch):
    run = tmp_path / "run"
    args = ["search", "--lut", table_path, "--data", "synthetic:100", "--epochs", "2", "--warmup-epochs", "0",
            "--batch-size", "16", "--max-batches", "2", "--out", str(run), "--force"]
    _interrupt_at_evaluation(monkeypatch, 2)  # in the second epoch, after the first was checkpointed
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"interrupted: run {run} keeps its checkpoint of epoch 1 of 2; continue with: nas2deploy search")
    command = shlex.split(line.partition("continue with: ")[2])
    assert command[-1] == "--resume" and "--force" not in command and "Traceback" not in result.output
    monkeypatch.undo()
    resumed = CliRunner().invoke(cli, command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert [line.split('"epoch": ')[1].split(",")[0] for line in (run / "log.jsonl").read_text().splitlines()] == ["1", "2"]


def test_ctrl_c_before_the_first_epoch_ends_says_nothing_is_kept(tmp_path, table_path, monkeypatch):
    args = ["search", "--lut", table_path, "--data", "synthetic:100", "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "16", "--max-batches", "2", "--out", str(tmp_path / "run")]
    _interrupt_at_evaluation(monkeypatch, 1)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130
    line = result.output.strip().splitlines()[-1]
    assert "finished no epoch, so it keeps nothing; continue with: nas2deploy search" in line and "--resume" not in line
    assert not (tmp_path / "run" / ".lock").exists()  # the lock went with the process's work
