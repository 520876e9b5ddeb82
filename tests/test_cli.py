"""The command line as a user meets it: real subcommands, one-line errors, exit codes."""

import json

import pytest
from click.testing import CliRunner

from nas2deploy.cli import cli

SMALL_OPTS = ["--input-size", "32", "--width-mult", "0.5", "--num-classes", "10", "--max-stack-layers", "1"]


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_space_info_json():
    result = run("space", "info", "densenas", "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["edges"] == 54 and info["unique_ops"] == 390 and info["block_paths"] == 15456


def test_profile_show_merge(tmp_path):
    paths = []
    for i in range(2):
        p = str(tmp_path / f"s{i}.json")
        result = run("profile", *SMALL_OPTS, "--runs", "5", "--shard", f"{i}/60", "--out", p)
        assert result.exit_code == 0, result.output
        assert "inside timed runs" in result.output
        paths.append(p)
    merged = str(tmp_path / "m.json")
    result = run("lut", "merge", merged, *paths)
    assert result.exit_code == 0 and "wrote" in result.output
    result = run("lut", "show", merged)
    assert result.exit_code == 0 and "onnxruntime" in result.output and "1 thread(s)" in result.output
    shown = json.loads(run("lut", "show", merged, "--json").output)
    assert shown["entries"] == len(json.loads(open(paths[0]).read())["entries"]) * 2 or shown["entries"] > 0


@pytest.mark.parametrize("args, message, code", [
    (["profile", "--backend", "tvm", "--out", "x.json"], "'tvm' is not one of 'onnxruntime', 'torch', 'tensorrt'", 2),
    (["profile", "--precision", "int8", "--out", "x.json"], "'int8' is not one of 'fp32', 'fp16'", 2),
    (["space", "info", "nasnet"], "'nasnet' is not one of 'dcnas', 'densenas'", 2),
    (["profile", "--backend", "tensorrt", "--out", "x.json"], "TensorRT is not installed", 1),
    (["profile", "--device", "cuda", "--out", "x.json"], "no CUDA GPU is visible", 1),
    (["profile", "--shard", "3/2", "--out", "x.json"], "expected i/n with 0 <= i < n", 2),
    (["lut", "show", "missing.json"], "latency table missing.json: no such file", 1),
])
def test_bad_input_is_one_line_and_nonzero(args, message, code):
    result = run(*args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_merge_of_different_settings_is_refused(tmp_path):
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    assert run("profile", *SMALL_OPTS, "--runs", "5", "--shard", "0/80", "--out", a).exit_code == 0
    assert run("profile", *SMALL_OPTS, "--runs", "5", "--shard", "1/80", "--batch", "2", "--out", b).exit_code == 0
    result = run("lut", "merge", str(tmp_path / "m.json"), a, b)
    assert result.exit_code == 1 and "batch: 1 vs 2" in result.output


def test_the_command_list_is_written_once_and_help_imports_no_command():
    """``nas2deploy --help`` lists the commands from ``COMMANDS`` without importing them (torch and
    the spaces take seconds); each line must say what the command's own docstring says."""
    import subprocess
    import sys

    import click

    from nas2deploy.cli import COMMANDS

    ctx = click.Context(cli)
    for name, (_, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(1000) == click.Command(name, help=short).get_short_help_str(1000), name
    probe = ("import sys\nfrom nas2deploy.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m in ('torch', 'numpy', 'nas2deploy.spaces', 'onnxruntime')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]" and "search" in done.stdout
