"""One writer per output: a second process is refused before it changes anything.

Every command that writes a folder or a file takes its lock first (a search run, an export, a
DPC study: ``OUT/.lock``; a derived architecture or trained weights: ``OUT.lock``). Here a real
second process holds each lock, as a first command would at any step of its work, and the
command is run against the same output with ``--force`` (the most destructive form): it must be
refused in one line naming the holder's pid, and every file of the first left byte for byte as
it was. One test races two real search processes from their start.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import saved_table

from nas2deploy.cli import cli
from nas2deploy.testing import random_table

SPACE = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}
SEARCH = ["--data", "synthetic:100", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "16", "--max-batches", "1"]
ARCH = {"format": "nas2deploy.arch", "version": 1, "input_size": 32, "num_classes": 10,
        "stem": {"conv": 8, "out": 8, "stride": 1}, "blocks": [{"out": 16, "stride": 2, "head": "k3e3"}], "tail": 32}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished search run, an export, trained weights and a derived architecture: what a first
    process would be writing."""
    tmp = tmp_path_factory.mktemp("first")
    table = saved_table(tmp_path_factory, "densenas", SPACE)
    runner = CliRunner()
    (tmp / "a.json").write_text(json.dumps(ARCH))
    for args in (["search", "--lut", table, *SEARCH, "--out", str(tmp / "run")],
                 ["derive", str(tmp / "run"), "--out", str(tmp / "derived.json")],
                 ["train", "--arch", str(tmp / "a.json"), "--data", "synthetic:64", "--epochs", "1", "--out", str(tmp / "w.pt")],
                 ["export", "--arch", str(tmp / "a.json"), "--data", "synthetic:40", "--samples", "4", "--out",
                  str(tmp / "export")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    return tmp, table


def snapshot(path: Path) -> dict[str, bytes]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return {str(p.relative_to(path.parent)): p.read_bytes() for p in files if p.name != ".lock"}


class Holder:
    """A second real process holding a lock, as a first command holds it while it works."""

    def __init__(self, code: str):
        self.process = subprocess.Popen([sys.executable, "-c", f"{code}\nprint('held', flush=True)\nimport sys\nsys.stdin.read()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "held"

    def __enter__(self) -> "Holder":
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def folder_holder(folder: Path) -> Holder:
    return Holder(f"from nas2deploy.fileio import folder_lock\nheld = folder_lock({str(folder)!r}, 'test')\nheld.__enter__()")


def file_holder(out: Path) -> Holder:
    return Holder("from nas2deploy.fileio import exclusive, lock_path\n"
                  f"held = exclusive(lock_path({str(out)!r}), 'test')\nheld.__enter__()")


def refused(args: list[str], holder: Holder, output: Path) -> None:
    before = snapshot(output)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert f"in use by another nas2deploy process (pid {holder.process.pid}" in result.output
    assert "Traceback" not in result.output
    assert snapshot(output) == before


@pytest.mark.parametrize("how", [["--force"], ["--resume"], []])
def test_a_search_into_a_run_being_written_is_refused_having_changed_nothing(made, how):
    tmp, table = made
    with folder_holder(tmp / "run") as holder:
        refused(["search", "--lut", table, *SEARCH, "--out", str(tmp / "run"), *how], holder, tmp / "run")


def test_an_export_into_a_folder_being_written_is_refused_having_changed_nothing(made):
    tmp, _ = made
    with folder_holder(tmp / "export") as holder:
        refused(["export", "--arch", str(tmp / "a.json"), "--data", "synthetic:40", "--samples", "4", "--out",
                 str(tmp / "export"), "--force"], holder, tmp / "export")


def test_train_and_derive_into_an_output_being_written_are_refused_having_changed_nothing(made):
    tmp, _ = made
    with file_holder(tmp / "w.pt") as holder:
        refused(["train", "--arch", str(tmp / "a.json"), "--data", "synthetic:64", "--epochs", "1", "--out",
                 str(tmp / "w.pt"), "--force"], holder, tmp / "w.pt")
    with file_holder(tmp / "derived.json") as holder:
        refused(["derive", str(tmp / "run"), "--out", str(tmp / "derived.json"), "--force"], holder, tmp / "derived.json")


def test_a_study_into_a_folder_being_written_is_refused_having_changed_nothing(tmp_path):
    from nas2deploy.spaces import make_space

    space = make_space("dpc", {"input_size": 128, "input_width": 128, "branches": 2, "filters": 16, "num_classes": 6})
    random_table(space, 0).save(tmp_path / "t.json")
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.log").write_text("")
    with folder_holder(out) as holder:
        refused(["search", "--space", "dpc", "--lut", str(tmp_path / "t.json"), "--weights", str(tmp_path / "absent.pt"),
                 "--data", "seg-synthetic:8", "--budget-ms", "100", "--out", str(out), "--force"], holder, out)


def test_a_refused_command_leaves_no_folder_behind(made, tmp_path):
    """A command refused before its work (here: an unknown architecture) removes the folder it
    created to hold its lock."""
    result = CliRunner().invoke(cli, ["export", "--arch", "no-such-arch", "--out", str(tmp_path / "new")])
    assert result.exit_code != 0 and not (tmp_path / "new").exists()


@pytest.mark.slow
def test_two_searches_started_together_one_runs_the_other_changes_nothing(made, tmp_path):
    """The race of the field report: B started (with and without --force) while A is anywhere in
    its start, before its first checkpoint; A ends with its own configuration and every epoch."""
    _, table = made
    run = tmp_path / "run"
    base = [sys.executable, "-m", "nas2deploy", "search", "--lut", table, "--data", "synthetic:200", "--epochs", "2",
            "--warmup-epochs", "0", "--batch-size", "16", "--out", str(run)]
    first = subprocess.Popen([*base, "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / ".lock").exists():
        time.sleep(0.005)
    assert (run / ".lock").exists(), "the first search did not start"
    for extra in ([], ["--force"]):
        second = subprocess.run([*base, "--seed", "2", *extra], capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and f"pid {first.pid}" in second.stderr, second.stderr
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
