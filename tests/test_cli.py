"""The command line as a user meets it: real subcommands, one-line errors, exit codes."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nas2deploy.cli import cli

SMALL_OPTS = ["--input-size", "32", "--width-mult", "0.5", "--num-classes", "10", "--max-stack-layers", "1"]


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_space_info_json():
    result = run("space", "info", "densenas", "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
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
    shown = json.loads(run("lut", "show", merged, "--json").stdout)
    assert shown["entries"] == len(json.loads(open(paths[0]).read())["entries"]) * 2 or shown["entries"] > 0


@pytest.mark.parametrize("args, message, code", [
    (["profile", "--backend", "tvm", "--out", "x.json"], "'tvm' is not one of 'onnxruntime', 'torch', 'tensorrt'", 2),
    (["profile", "--precision", "int4", "--out", "x.json"], "'int4' is not one of 'fp32', 'fp16', 'int8'", 2),
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


def _leaf_commands():
    import click

    from nas2deploy.cli import COMMANDS

    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from ((f"{name} {sub}", c) for sub, c in command.commands.items())
        else:
            yield name, command


def test_every_command_has_json_output_and_snake_case_keys(tmp_path):
    missing = [name for name, command in _leaf_commands() if "--json" not in {o for p in command.params for o in p.opts}]
    assert missing == []
    runner = CliRunner()
    for argv in (["space", "info", "densenas", "--json"], ["space", "info", "dcnas", "--json"], ["arch", "list", "--json"],
                 ["arch", "info", "densenas-a", "--json"]):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        keys = set(doc) | {k for v in doc.values() if isinstance(v, dict) for k in v}
        assert all(k.replace("_", "").isalnum() and k == k.lower() for k in keys if isinstance(k, str)), (argv, keys)


def test_progress_is_a_plain_line_every_few_seconds_outside_a_terminal_and_quiet_hides_it(capsys):
    import click

    from nas2deploy.cli import VERBOSITY
    from nas2deploy.cli.common import progress_bar

    def run(level):
        now = [0.0]
        with click.Context(cli) as ctx:
            ctx.meta[VERBOSITY] = level
            with progress_bar("profiling t.json", every_s=10, clock=lambda: now[0]) as update:
                for done in range(1, 31):
                    now[0] = done * 1.5  # one item every 1.5 s, on an injected clock
                    update(done, 30, f"op{done}")
        captured = capsys.readouterr()
        assert captured.out == ""  # progress is never the result
        return captured.err.splitlines()

    lines = run(1)
    assert len(lines) == 5  # at 10.5 s, 21, 31.5, 42 and the end (45 s)
    assert lines[0] == "profiling t.json: 7/30 op7 (10 s elapsed, ETA 34 s)"
    assert lines[-1].startswith("profiling t.json: 30/30 op30 (45 s elapsed")
    assert len(run(2)) == 30 and run(0) == []


def test_quiet_and_verbose_are_root_options():
    result = CliRunner().invoke(cli, ["-q", "-v", "arch", "list"])
    assert result.exit_code == 2 and "--quiet and --verbose contradict each other" in result.output
    result = CliRunner().invoke(cli, ["--quiet", "arch", "list"])
    assert result.exit_code == 0 and "densenas-a" in result.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`nas2deploy ... | head -1`: the reader closes the pipe before the command writes (here
    at once, so the write fails every time); no "Error: Broken pipe" on stderr."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "nas2deploy", "arch", "info", "dpc-mnv2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    stderr = child.stderr.read()
    assert child.wait(timeout=120) != 0 and "Broken pipe" not in stderr and "Traceback" not in stderr, stderr


def test_a_failure_with_json_is_also_one_json_object_on_stdout(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nas2deploy", "lut", "show", str(tmp_path / "absent.json"), "--json"],
                            capture_output=True, text=True)
    message = f"latency table {tmp_path / 'absent.json'}: no such file"
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [f"Error: {message}"]
    assert json.loads(result.stdout) == {"error": message}
