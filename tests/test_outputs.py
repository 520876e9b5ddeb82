"""One rule for every output, checked before the work: not a link, writable, and not an existing
file or a non-empty folder unless --force. Each refusal is one line naming the
output and leaves what was there untouched."""

import json
import os
import tempfile

import pytest
from click.testing import CliRunner
from conftest import saved_table

from nas2deploy.cli import cli
from nas2deploy.errors import UserError
from nas2deploy.fileio import claim_file, claim_folder, require_writable

SPACE = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}
PROFILE = ["profile", "--input-size", "32", "--width-mult", "0.5", "--num-classes", "10", "--max-stack-layers", "1",
           "--runs", "3", "--shard", "0/60"]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return saved_table(tmp_path_factory, "densenas", SPACE)


def _read_only_location():
    """A folder this process cannot create files in (as root, only a read-only mount is one)."""
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return "/sys"
    os.close(fd)
    os.unlink(probe)
    pytest.skip("no read-only location on this machine")


def test_the_rule_for_files_and_folders(tmp_path):
    (tmp_path / "t.json").write_text("keep")
    with pytest.raises(UserError, match=r"--out .*t.json: exists; pass --force to overwrite it"):
        claim_file(tmp_path / "t.json", force=False)
    assert claim_file(tmp_path / "t.json", force=True) == tmp_path / "t.json"
    with pytest.raises(UserError, match="is not a folder"):
        claim_file(tmp_path / "t.json" / "w.pt", force=False)
    with pytest.raises(UserError, match=r"folder is not empty \(t.json\); choose another or pass --force"):
        claim_folder(tmp_path, force=False)
    claim_folder(tmp_path, force=False, own=("t.json",))  # what the command itself keeps there
    with pytest.raises(UserError, match="cannot write in /sys"):
        require_writable(os.path.join(_read_only_location(), "new", "w.pt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"] and (tmp_path / "t.json").read_text() == "keep"


def test_every_writing_command_refuses_an_existing_output_before_its_work(tmp_path, table_path):
    runner = CliRunner()
    existing = tmp_path / "existing.json"
    existing.write_text("keep")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep")
    for argv in (
        [*PROFILE, "--out", str(existing)],
        ["train", "--arch", "densenas-a", "--out", str(existing)],
        ["lut", "merge", str(existing), table_path],
        ["space", "sample", "densenas", "--lut", table_path, "--budget-ms", "9", "--out", str(busy)],
        ["search", "--lut", table_path, "--epochs", "2", "--warmup-epochs", "1", "--out", str(busy)],
        ["export", "--arch", "densenas-a", "--out", str(busy)],
    ):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 1, (argv, result.output)
        assert "pass --force" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert existing.read_text() == "keep" and sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


def test_a_read_only_location_is_refused_before_the_training(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--arch", "densenas-a", "--out", os.path.join(_read_only_location(), "w.pt")])
    assert result.exit_code == 1 and "cannot write in /sys" in result.output and "tmp" not in result.output


def test_force_replaces_a_table_and_a_search(tmp_path, table_path):
    runner = CliRunner()
    out = tmp_path / "t.json"
    assert runner.invoke(cli, [*PROFILE, "--out", str(out)]).exit_code == 0
    first = json.loads(out.read_text())["meta"]["created"]
    result = runner.invoke(cli, [*PROFILE, "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["meta"]["created"] >= first
    run = tmp_path / "run"
    search = ["search", "--lut", table_path, "--data", "synthetic:100", "--epochs", "1", "--warmup-epochs", "0",
              "--batch-size", "16", "--max-batches", "1", "--out", str(run)]
    assert runner.invoke(cli, search).exit_code == 0
    again = runner.invoke(cli, search)
    assert again.exit_code == 1 and "already holds a search: pass --resume to continue it, --force to start over" in again.output
    assert runner.invoke(cli, [*search, "--resume", "--force"]).exit_code == 1
    (run / "notes.txt").write_text("keep")
    result = runner.invoke(cli, [*search, "--force"])
    assert result.exit_code == 0, result.output
    assert (run / "notes.txt").read_text() == "keep" and len((run / "log.jsonl").read_text().splitlines()) == 1
