"""The README's commands as written: every one parses (its options exist and take the values
given), and the DPC chain (weights, search, report, fine-tuning, export) runs end to end on the
built-in data from a folder holding only the shipped table."""

import shlex
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nas2deploy.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[list[list[str]]]:
    """The ``nas2deploy`` commands of each ``sh`` block of the README, continuation lines joined
    and comments dropped."""
    blocks, block, inside = [], [], False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if inside and block:
                blocks.append(block)
            block, inside = [], line == "```sh"
        elif inside:
            block.append(line)
    commands = []
    for lines in blocks:
        joined = "\n".join(lines).replace("\\\n", " ")
        words = [shlex.split(line, comments=True) for line in joined.splitlines()]
        commands.append([w[1:] for w in words if w and w[0] == "nas2deploy"])
    return [c for c in commands if c]


def parse(args: list[str]) -> None:
    """Parse ``args`` down to the command they name, as click would before running it."""
    command: click.Command = cli
    ctx = command.make_context("nas2deploy", list(args))
    rest = ctx.protected_args + ctx.args
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, args
        command, ctx = sub, sub.make_context(name or "", rest, parent=ctx)
        rest = ctx.protected_args + ctx.args if isinstance(sub, click.Group) else []


def test_every_readme_command_parses():
    commands = [c for block in readme_commands() for c in block]
    assert len(commands) >= 10
    for args in commands:
        parse(args)


def test_the_readme_dpc_chain_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    (chain,) = [block for block in readme_commands() if any("dpc" in args for args in block)]
    assert [args[0] for args in chain] == ["train", "search", "report", "train", "export"]
    for args in chain:
        for word in args:
            if word.startswith("latency_tables/"):
                (tmp_path / "latency_tables").mkdir(exist_ok=True)
                shutil.copy(ROOT / word, tmp_path / word)
    monkeypatch.chdir(tmp_path)
    for args in chain:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert (tmp_path / "runs" / "dpc" / "report.md").exists() and (tmp_path / "export" / "dpc" / "model.onnx").exists()
    assert "PASS onnxruntime vs torch" in result.output
