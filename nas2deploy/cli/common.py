"""What the commands share: number types, the options of spaces, backends, data and devices,
and how results, warnings and progress are printed (results on stdout, the rest on stderr)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from nas2deploy.backends import BACKENDS, ONNX_CHECKER, declared_options, known_devices, known_precisions
from nas2deploy.cli import ARGV, INTERRUPTED, VERBOSITY
from nas2deploy.errors import UserError
from nas2deploy.spaces import DEFAULT_SPACE, SPACES, SpaceOption, all_options, space_overrides


class Finite(click.FloatRange):
    """A finite number in a range: click's FloatRange lets NaN through (every comparison with NaN
    is false), and a NaN budget or learning rate would poison everything downstream."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


#: Latencies, learning rates and other positive quantities given on the command line.
POSITIVE = Finite(min=0, min_open=True, max=1e6)


# -- output: the result on stdout, everything else on stderr -----------------------------------
class InputSize(click.ParamType):
    """``513`` or ``1025x2049``, as (height, width)."""

    name = "H[xW]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().split("x")
        if not (1 <= len(parts) <= 2 and all(p.isdigit() and int(p) > 0 for p in parts)):
            self.fail(f"expected a size such as 224 or 1025x2049, got {value!r}", param, ctx)
        return int(parts[0]), int(parts[-1])


def on_interrupt(kept: Callable[[], str] | str, resume: Callable[[], str | None] | str | None = None,
                 drop: tuple[str, ...] = ()) -> None:
    """What Ctrl-C from here on says: what was ``kept``, and the command that continues: the one
    typed with ``resume`` added and the flags in ``drop`` (``--force``) left out, the same command
    when ``resume`` is "" (it resumes by itself), none when it is None. Callables are asked at the
    moment Ctrl-C comes (a search has then finished some epochs, or none)."""
    ctx = click.get_current_context()
    argv = [a for a in ctx.meta.get(ARGV, []) if a not in drop]

    def said() -> str:
        flag = resume() if callable(resume) else resume
        line = kept() if callable(kept) else kept
        if flag is None:
            return line
        command = "nas2deploy " + " ".join(shlex.quote(a) for a in argv) + (f" {flag}" if flag and flag not in argv else "")
        return f"{line}; continue with: {command}"

    ctx.meta[INTERRUPTED] = said


def verbosity() -> int:
    """0 with the root's --quiet, 2 with --verbose, else 1."""
    ctx = click.get_current_context(silent=True)
    return int(ctx.meta.get(VERBOSITY, 1)) if ctx is not None else 1


def log(line: str) -> None:
    """A line about the work (progress, what goes where) on stderr, unless --quiet."""
    if verbosity() >= 1:
        click.echo(line, err=True)


def warn(line: str) -> None:
    """A warning on stderr (--quiet too), so that stdout stays the result (``--json`` included)."""
    click.echo(f"warning: {line}", err=True)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="The result as one JSON object on stdout (progress and warnings stay on stderr).")(f)


def emit(result: dict[str, Any], text: str | list[str], as_json: bool) -> None:
    """The command's result on stdout: ``result`` as JSON with --json, else ``text``."""
    if as_json:
        print_json(result)
        return
    for line in [text] if isinstance(text, str) else text:
        click.echo(line)


def warn_table(table: Any, raw_ms: float | None = None, here: bool = False) -> list[str]:
    """Warn about what a user of ``table`` should know (``table_warnings``), a prediction of
    ``raw_ms`` that extrapolates its calibration, and with ``here`` a table this machine cannot
    measure against; the warnings, for ``--json``."""
    from nas2deploy.latency.measure import settings_from_table
    from nas2deploy.latency.summary import extrapolation_warning, table_warnings

    lines = table_warnings(table)
    if raw_ms is not None and (far := extrapolation_warning(table, raw_ms)):
        lines.append(far)
    if here:
        try:
            settings_from_table(table)
        except UserError as exc:
            lines.append(f"{exc}; the search uses its predictions, but nothing measured here can check them "
                         "(derive --measure and export compare on the table's device)")
    for line in lines:
        warn(line)
    return lines


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=1, default=str))


@contextmanager
def progress_bar(label: str, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[int, int, str], None]]:
    """Progress of (done, total, item) callbacks on stderr: in a terminal a bar with ETA; in a
    log or CI, a plain line every ``every_s`` seconds and at the end (done/total, the item,
    elapsed, an ETA that leaves out start-up: ``Heartbeat``); with --verbose a line per item;
    nothing with --quiet."""
    from nas2deploy.heartbeat import Heartbeat

    level = verbosity()
    bar: Any = None
    beat: Heartbeat | None = None
    start = clock()

    def update(done: int, total: int, item: str) -> None:
        nonlocal bar, beat
        if level == 0:
            return
        if level == 1 and sys.stderr.isatty():
            if bar is None:
                bar = click.progressbar(length=total, label=label, show_eta=True, show_pos=True, file=sys.stderr)
                bar.__enter__()
            bar.update(done - bar.pos)
            return
        if beat is None or beat.total != total:
            beat = Heartbeat(lambda line: click.echo(line, err=True), label, total, every_s, clock, start)
        beat.tick(done, item, always=level == 2)

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


class SpaceName(click.ParamType):
    """A registered search space (checked against the registry when the command runs, so a space
    registered by a plugin is a valid choice too)."""

    name = "space"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(sorted(SPACES)) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value not in SPACES:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, sorted(SPACES)))}", param, ctx)
        return value


def space_option(option: SpaceOption, helps: str | None = None) -> click.Option:
    """A space's option as a click option, unset by default: an unset option takes the space's
    own default (its configuration's, its search's or its study's)."""
    helps = helps or option.help + (" [required]" if option.required else "") + (
        f" [default: {option.default}]" if option.default is not None else "")
    if option.kind == "flag":
        return click.Option([option.flag, option.field], is_flag=True, default=None, help=helps)
    kind: click.ParamType = click.STRING if option.kind == "str" else click.IntRange(
        min=int(option.low) if option.low is not None else None,
        max=int(option.high) if option.high is not None else None) if option.kind == "int" \
        else Finite(min=option.low, max=option.high, min_open=option.low == 0)
    return click.Option([option.flag, option.field], type=kind, default=None, help=helps)


def space_params(name: str, *scopes: str) -> list[click.Parameter]:
    """The options of space ``name`` of any of ``scopes`` (an unknown space has none: the
    command's ``--space`` says so)."""
    return [space_option(o) for o in SPACES[name].scoped(*scopes)] if name in SPACES else []


def every_space_params(scope: str) -> list[click.Parameter]:
    """The options of ``scope`` of every registered space (a command that learns its space later:
    ``derive`` reads it from the run), each once, its help naming the spaces that take it."""
    return [space_option(declared[0][1], "; ".join(f"{space}: {o.help}" for space, o in declared))
            for declared in all_options(scope).values()]


def chosen_space(args: list[str], positional: bool = False) -> str:
    """The space a command's arguments name: ``--space NAME`` (or ``--space=NAME``), or with
    ``positional`` its first argument; else the default space."""
    for i, arg in enumerate(args):
        if arg == "--space" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--space="):
            return arg.split("=", 1)[1]
    if positional:
        return next((a for a in args if not a.startswith("-")), DEFAULT_SPACE)
    return DEFAULT_SPACE


def pop_options(name: str, options: dict[str, Any], scope: str) -> dict[str, Any]:
    """The given (not None, not an unset flag) options of ``scope`` for space ``name``, popped
    from ``options``; one that the space lacks is a usage error (exit 2), named."""
    given = {k: options.pop(k) for k in all_options(scope) if k in options}
    try:
        return space_overrides(name, {k: v for k, v in given.items() if v is not None and v is not False}, scope)
    except UserError as exc:
        raise click.UsageError(str(exc)) from None


class DeclaredCommand(click.Command):
    """A command some of whose options are declared by what is registered (a backend's options),
    made when the command runs or shows its help, so that a backend registered after this module
    was imported (a plugin, a test) brings its own flags. ``declared(ctx, args)`` makes them from
    the command's arguments (a search's ``--space``) and the registry as it is then."""

    def __init__(self, *args: Any, declared: Callable[[click.Context, list[str]], list[click.Parameter]],
                 foreign: Callable[[str, list[str]], str | None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.declared, self.foreign = declared, foreign

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGS] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:  # an option of another space or search: say whose it is
            said = self.foreign(exc.option_name, ctx.meta[_ARGS]) if self.foreign else None
            if said is None:
                raise
            raise click.UsageError(said, ctx) from None

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        help_option = self.get_help_option(ctx)
        if _DECLARED not in ctx.meta:  # made once per invocation: parsing and help read the same objects
            ctx.meta[_DECLARED] = self.declared(ctx, ctx.meta.get(_ARGS, []))
        return [p for p in params if p is not help_option] + ctx.meta[_DECLARED] + ([help_option] if help_option else [])


_ARGS, _DECLARED = "nas2deploy.args", "nas2deploy.declared"


def declared_command(declared: Callable[[click.Context, list[str]], list[click.Parameter]],
                     foreign: Callable[[str, list[str]], str | None] | None = None, **settings: Any) -> Callable[..., Any]:
    """``click.command()`` for a ``DeclaredCommand`` whose extra options ``declared`` makes, and
    ``foreign`` explains when one of another space is given."""
    return click.command(cls=DeclaredCommand, declared=declared, foreign=foreign, **settings)


def foreign_space_option(scopes: tuple[str, ...], positional: bool = False) -> Callable[[str, list[str]], str | None]:
    """What to say of an option the chosen space lacks but another registered space takes."""

    def explain(flag: str, args: list[str]) -> str | None:
        chosen = chosen_space(args, positional)
        owners = [e.name for e in SPACES.values() if e.name != chosen and any(o.flag == flag for o in e.scoped(*scopes))]
        if not owners:
            return None
        return f"{flag} is an option of the {' and '.join(owners)} space, not of {chosen}'s" + (
            "" if positional else f" (give --space {owners[0]}, or leave it out)")

    return explain


def backend_params(several: bool = False, batch: bool = True) -> list[click.Parameter]:
    """The flags of where and how a model runs: ``--backend`` (repeatable with ``several``),
    ``--device``, ``--precision``, ``--batch`` (unless the command has its own), ``--threads``, and
    every registered backend's own options (``Backend.options``), each declared once."""
    params: list[click.Parameter] = [
        click.Option(["--backend", "backends" if several else "backend"], type=click.Choice(list(BACKENDS)),
                     multiple=several, default=(ONNX_CHECKER,) if several else ONNX_CHECKER, show_default=True,
                     help="Backends to deploy and measure (repeat for several)." if several else "Where the model runs."),
        click.Option(["--device"], type=click.Choice(list(known_devices())), default="cpu", show_default=True,
                     help="The device of the backend (TensorRT always uses cuda)."),
        click.Option(["--precision"], type=click.Choice(list(known_precisions())), default="fp32", show_default=True),
        *([click.Option(["--batch"], type=click.IntRange(min=1), default=1, show_default=True)] if batch else []),
        click.Option(["--threads"], type=click.IntRange(min=1), default=1, show_default=True,
                     help="CPU threads, pinned and recorded in tables."),
    ]
    for name, option in declared_options().items():
        if not option.command_line:
            continue
        users = ", ".join(b.name for b in BACKENDS.values() if option in b.options)
        helps = f"{option.help} [--backend {users}]"
        if option.kind == "flag":
            params.append(click.Option([option.flag, name], is_flag=True, default=False, help=helps))
        else:
            kind: click.ParamType = click.Choice(list(option.choices)) if option.choices else \
                click.IntRange(min=option.low, max=option.high) if option.kind == "int" else click.STRING
            params.append(click.Option([option.flag, name], type=kind, default=option.default,
                                       show_default=option.default is not None, help=helps))
    return params


def pop_backend_options(given: dict[str, Any]) -> dict[str, Any]:
    """The registered backends' own options among a command's parameters, popped from ``given``."""
    return {name: given.pop(name) for name in list(declared_options()) if name in given}


def force_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--force``: the one overwrite rule (``fileio.claim_file`` / ``claim_folder``): an output that
    exists (a file, or a folder holding other files) is replaced or written into only with it."""
    return click.option("--force", is_flag=True, help="Replace the output if it exists (or write into a non-empty folder).")(f)


def parse_shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"{value!r}: expected i/n with 0 <= i < n")
    return i, n



def data_params() -> list[click.Parameter]:
    """Which part of an image folder, and how it is cropped."""
    return [click.Option(["--data-classes"], type=click.IntRange(min=0), default=0, show_default=True,
                         help="Keep the first N classes of an ImageFolder (DenseNAS: 100 of ImageNet); 0: all."),
            click.Option(["--crop"], default="", help="Segmentation training crops HxW (e.g. 512x1024); default: square at "
                         "the input size.")]


#: The devices torch computes on when it trains (a search, ``train``, the demo).
COMPUTE_DEVICES = ("cpu", "cuda")


def compute_params() -> list[click.Parameter]:
    """Where a search or a training runs, and how fast."""
    return [click.Option(["--device"], type=click.Choice(COMPUTE_DEVICES), default="cpu", show_default=True,
                         help="cuda: under torchrun, each rank on cuda:LOCAL_RANK."),
            click.Option(["--amp"], type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True,
                         help="Mixed-precision forward passes (fp16 with gradient scaling)."),
            click.Option(["--workers"], type=click.IntRange(min=0, max=256), default=0, show_default=True,
                         help="Processes decoding the data."),
            click.Option(["--channels-last/--no-channels-last"], default=True, show_default=True,
                         help="Images and weights in channels-last memory order (oneDNN's faster kernels: about 1.5x "
                         "faster steps on a CPU)."),
            threads_param()]


def threads_param() -> click.Option:
    """The computation's CPU threads (``start_threads``)."""
    return click.Option(["--threads", "compute_threads"], type=click.IntRange(min=0, max=1024), default=0,
                        show_default=True, help="CPU threads of the computation (0: the cores free as the command "
                        "starts, measured; torchrun's local ranks share them).")


def start_threads(requested: int) -> str:
    """Set the computation's CPU threads (``nas2deploy.threads``); the line that says how many,
    which a command logs once its checks have passed (a mistake stays one line)."""
    import os

    from nas2deploy.threads import use_threads

    threads = use_threads(requested, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return (f"computing on {threads} CPU thread{'s' if threads > 1 else ''}"
            + (" (the cores free as it started; --threads N to choose)" if requested == 0 else ""))


def with_params(make: Callable[[], list[click.Parameter]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding the parameters ``make`` gives to a command defined with ``click.command``."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        params = getattr(f, "__click_params__", [])
        params.extend(reversed(make()))  # click reverses decorator-added parameters
        f.__click_params__ = params  # type: ignore[attr-defined]
        return f

    return decorate
