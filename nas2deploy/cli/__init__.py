"""The ``nas2deploy`` command line: parses options, calls the Python API, prints the result.

Every user-caused problem arrives here as a ``UserError`` (or an OSError) and leaves as one
line on stderr with exit status 1; usage errors (unknown option or choice) exit 2 with click's
message listing the valid values. With ``--json``, a failure is also the one JSON object on stdout
that a script reads (``{"error": ...}``). Ctrl-C leaves as one line saying what was kept and the
command that continues (``cli.common.on_interrupt``), with exit status 130.

The commands live in the modules of this package, one per family, and a module is imported only
when one of its commands runs (or shows its help): the search spaces, torch and the runtimes
take seconds to import, and ``nas2deploy --help`` must not wait for them. The one-line help of
each command is therefore written here as well; a test holds it equal to the command's own.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from nas2deploy import __version__
from nas2deploy.errors import UserError


#: Command -> (module of this package that defines it, its one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "space": ("inspect", "Inspect search spaces."),
    "arch": ("inspect", "Inspect architectures (JSON files or shipped names)."),
    "profile": ("profile", "Measure every op of a search space into a latency table (resumable: rerun after a kill)."),
    "lut": ("inspect", "Inspect, merge and validate latency tables."),
    "search": ("search", "Latency-regularised search (DenseNAS, DCNAS) or black-box search of DPC cells (--space dpc)."),
    "derive": ("search", "Derive an architecture from a search run: the most probable one, or the best under a budget."),
    "train": ("search", "Train a network (SGD, cosine schedule after a linear warm-up) and report top-1, or mIoU for segmentation."),
    "export": ("deploy", "Export ONNX (and a TensorRT engine), check accuracy on real inputs, measure latency, write a report."),
    "bench": ("deploy", "trtexec-style latency summary of an ONNX model or a TensorRT engine."),
    "report": ("deploy", "Regenerate report.md and its plots for an export folder or a search run."),
    "demo": ("demo", "The whole chain on built-in data: table, search under a budget, derive, train, export, check, measure."),
}


class _Group(click.Group):
    """The root group: commands imported on first use, and library errors turned into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        command = getattr(importlib.import_module(f"{__name__}.{COMMANDS[name][0]}"), name)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``COMMANDS``, without importing a command's module."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=short).get_short_help_str(limit)) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV] = list(args)  # the command as typed, for the line that says how to continue
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            hint = ctx.meta.get(INTERRUPTED)
            click.echo(f"interrupted: {hint() if hint else 'nothing was kept'}", err=True)
            raise click.exceptions.Exit(130) from None
        except UserError as exc:
            raise _failed(ctx, str(exc)) from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`): click ends quietly, as a Unix tool does
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise _failed(ctx, f"{where}{exc.strerror or exc}") from None


def _failed(ctx: click.Context, message: str) -> click.ClickException:
    """The one-line failure; with --json, also the result a script reads on stdout:
    ``{"error": message}``."""
    if "--json" in ctx.meta.get(ARGV, []):
        import json

        click.echo(json.dumps({"error": message}))
    return click.ClickException(message)


#: Where the root's --quiet / --verbose leave the verbosity for every command (``click`` context meta).
VERBOSITY = "nas2deploy.verbosity"
#: Where the arguments as typed, and what a command says when Ctrl-C ends it, are kept (context meta).
ARGV, INTERRUPTED = "nas2deploy.argv", "nas2deploy.interrupted"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nas2deploy")
@click.option("-q", "--quiet", is_flag=True, help="Only the result, warnings and errors (no progress).")
@click.option("-v", "--verbose", is_flag=True, help="Progress line by line (every op, network or epoch).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """Latency-aware neural architecture search that ends in deployable engines.

    Results go to stdout (one JSON object with a command's --json), progress and warnings to stderr.
    """
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose contradict each other: give one")
    ctx.meta[VERBOSITY] = 0 if quiet else 2 if verbose else 1


def main() -> None:
    cli(prog_name="nas2deploy")
