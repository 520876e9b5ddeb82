"""Hints that work: a command an error message suggests is run as written and
must be a valid next step, not another error."""

import random
import shlex

from click.testing import CliRunner

from nas2deploy.cli import cli
from nas2deploy.nets import save_arch
from nas2deploy.spaces import make_space

TINY = ["--input-size", "32", "--width-mult", "0.25", "--num-classes", "10", "--max-stack-layers", "0"]


def _suggested(output: str, after: str) -> list[str]:
    """The command an error suggests after ``after``, as argv for the CLI (without the program)."""
    line = output.strip().splitlines()[-1]
    command = shlex.split(line.split(after, 1)[1])
    assert command[0] == "nas2deploy", line
    return command[1:]


def test_the_command_that_measures_missing_ops_completes_the_table(tmp_path):
    runner = CliRunner()
    table = tmp_path / "t.json"
    assert runner.invoke(cli, ["profile", *TINY, "--runs", "3", "--shard", "0/40", "--out", str(table)]).exit_code == 0
    space = make_space("densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 0})
    save_arch(space.sample_arch(random.Random(1)), tmp_path / "a.json")
    result = runner.invoke(cli, ["arch", "info", str(tmp_path / "a.json"), "--lut", str(table)])
    assert result.exit_code == 1 and "measure them with: nas2deploy profile" in result.output, result.output
    hint = _suggested(result.output, "measure them with: ")
    result = runner.invoke(cli, [*hint, "--runs", "3"])  # as suggested; fewer runs only to keep the test short
    assert result.exit_code == 0, (hint, result.output)
    result = runner.invoke(cli, ["arch", "info", str(tmp_path / "a.json"), "--lut", str(table)])
    assert result.exit_code == 0 and "ms summed" in result.output, result.output


def test_the_data_an_export_suggests_fits_the_network(tmp_path):
    from test_export import TINY as TINY_ARCH

    bare = TINY_ARCH.with_meta({})
    save_arch(bare, tmp_path / "tiny.json")
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--arch", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and "give --data synthetic (the built-in set it can take)" in result.output, result.output
    result = runner.invoke(cli, ["export", "--arch", str(tmp_path / "tiny.json"), "--data", "synthetic", "--samples", "8",
                                 "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["export", "--arch", "densenas-c", "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "--data synthetic" not in result.output and "--images DIR" in result.output
