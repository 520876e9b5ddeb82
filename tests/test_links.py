"""Writes never follow links, and one process writes a table at a time.

A link is planted at each output of profile, search, export and report, pointing to a file
outside the folder the user named; every command must refuse with one line naming the link and
leave the file it points to untouched.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import FAST, saved_table

from nas2deploy.backends import BackendSettings
from nas2deploy.cli import cli
from nas2deploy.errors import UserError
from nas2deploy.fileio import lock_path
from nas2deploy.latency.profile import journal_path, profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.runs import start_search
from nas2deploy.search.config import SearchConfig
from nas2deploy.search.run_folder import RUN_FILES

SPACE = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}


@pytest.fixture
def victim(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious.txt"
    target.write_text("keep me")
    return target


def plant(link, victim):
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        link.unlink()
    os.symlink(victim, link)


@pytest.mark.parametrize("which", ["table", "journal", "lock"])
def test_profile_refuses_links(tmp_path, victim, which, small_space):
    out = tmp_path / "run" / "t.json"
    link = {"table": out, "journal": journal_path(out), "lock": lock_path(out)}[which]
    plant(link, victim)
    with pytest.raises(UserError, match="is a symbolic link"):
        profile_space(small_space, BackendSettings(), out, FAST, shard=(0, 60))
    assert victim.read_text() == "keep me"


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return saved_table(tmp_path_factory, "densenas", SPACE, seed=0)


def search_config(table_path):
    return SearchConfig(table=table_path, data="synthetic:100", epochs=1, warmup_epochs=0, batch_size=16, max_batches=1)


@pytest.mark.parametrize("name", RUN_FILES)
def test_search_refuses_links_in_its_run_folder(tmp_path, victim, table_path, name):
    run = tmp_path / "run"
    plant(run / name, victim)
    with pytest.raises(UserError, match="is a symbolic link"):
        start_search(search_config(table_path), run).run()
    assert victim.read_text() == "keep me"


def test_resume_refuses_a_linked_log(tmp_path, victim, table_path):
    run = tmp_path / "run"
    start_search(search_config(table_path), run).run()
    plant(run / "log.jsonl", victim)
    with pytest.raises(UserError, match="is a symbolic link"):
        start_search(search_config(table_path), run, resume=True)
    assert victim.read_text() == "keep me"


EXPORT_FILES = ["arch.json", "weights.pt", "model.onnx", "report.json", "report.md", "latency.png", "blocks.png", "arch.png"]


@pytest.mark.parametrize("name", EXPORT_FILES)
def test_export_and_report_refuse_links(tmp_path, victim, name):
    runner = CliRunner()
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps({"format": "nas2deploy.arch", "version": 1, "input_size": 32, "num_classes": 10,
                                "stem": {"conv": 8, "out": 8, "stride": 1},
                                "blocks": [{"out": 16, "stride": 2, "head": "k3e3"}], "tail": 32}))
    out = tmp_path / "export"
    args = ["export", "--arch", str(arch), "--data", "synthetic:40", "--samples", "4", "--out", str(out)]
    assert runner.invoke(cli, args).exit_code == 0
    plant(out / name, victim)
    result = runner.invoke(cli, [*args, "--force"])
    assert result.exit_code == 1 and "is a symbolic link" in result.output and "Traceback" not in result.output
    assert victim.read_text() == "keep me"
    result = runner.invoke(cli, ["report", str(out)])
    if name in ("report.md", "latency.png", "blocks.png", "arch.png"):  # the files report rewrites
        assert result.exit_code == 1 and "is a symbolic link" in result.output
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("name", ["report.md", "curves.png", "alpha_head.png", "beta.png", "lut_head.png"])
def test_search_report_refuses_links(tmp_path, victim, table_path, name):
    run = tmp_path / "run"
    start_search(search_config(table_path), run).run()
    plant(run / name, victim)
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 1 and "is a symbolic link" in result.output
    assert victim.read_text() == "keep me"


@pytest.mark.slow
def test_a_second_profiler_of_one_table_is_refused_at_once(tmp_path):
    out = tmp_path / "t.json"
    # A twelfth of the small space: the first process is stopped (SIGSTOP) as soon as its journal
    # exists, so it holds the table while the second starts, however fast it would profile.
    cmd = [sys.executable, "-m", "nas2deploy", "profile", "--input-size", "32", "--width-mult", "0.5", "--num-classes", "10",
           "--max-stack-layers", "1", "--shard", "1/12", "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not journal_path(out).exists() and first.poll() is None:
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)
    try:
        assert journal_path(out).exists(), "the first profile did not start, or finished before it was stopped"
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    table = LatencyTable.load(out)  # the table on disk is the first process's, complete
    assert f"wrote {out}: {len(table.entries)} ops" in stdout and not journal_path(out).exists()
    assert not lock_path(out).exists()


@pytest.mark.parametrize("kind", ["symbolic", "hard"])
def test_a_link_at_any_depth_under_a_claimed_folder_is_refused(tmp_path, victim, kind):
    from nas2deploy.fileio import claim_folder

    out = tmp_path / "out"
    inner = out / "cache" / "deeper" / "train.features"
    inner.parent.mkdir(parents=True)
    (os.symlink if kind == "symbolic" else os.link)(victim, inner)
    with pytest.raises(UserError, match="symbolic link|2 names"):
        claim_folder(out, force=True)
    assert victim.read_text() == "keep me"


def test_a_write_that_finds_the_disk_full_names_its_file_and_leaves_no_torn_line(tmp_path, monkeypatch):
    import errno

    from nas2deploy import fileio

    journal = tmp_path / "log.jsonl"
    fileio.append_line(journal, '{"epoch": 1}')
    real_write = os.write

    def full(fd, data):
        real_write(fd, data[:5])  # part of the line reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "write", full)
    with pytest.raises(UserError, match=rf"{journal}: no space left on its filesystem to write 13 bytes"):
        fileio.append_line(journal, '{"epoch": 2}')
    assert journal.read_text() == '{"epoch": 1}\n'
    monkeypatch.setattr(fileio.os, "write", real_write)

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode: Full(open(fd, mode)))
    with pytest.raises(UserError, match=r"table.json: no space left on its filesystem to write 4 bytes"):
        fileio.atomic_write_bytes(tmp_path / "table.json", b"{}\n\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]  # no temporary file left
