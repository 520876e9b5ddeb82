"""The ``nas2deploy`` command line: parses options, calls the Python API, prints the result.

Every user-caused problem arrives here as a ``UserError`` (or an OSError) and leaves as one
line on stderr with exit status 1; usage errors (unknown option or choice) exit 2 with click's
message listing the valid values.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from nas2deploy import __version__
from nas2deploy.backends import BACKENDS, DEVICES, ONNX_CHECKER, PRECISIONS, BackendSettings
from nas2deploy.backends.onnxruntime import PROVIDERS
from nas2deploy.backends.timing import TimingSettings
from nas2deploy.errors import UserError
from nas2deploy.fileio import refuse_link
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.spaces import DEFAULT_SPACE, SPACES, all_options, make_space, space_overrides


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None


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


def _warn(line: str) -> None:
    """A warning: on stderr, so that stdout stays the result (``--json`` included)."""
    click.echo(f"warning: {line}", err=True)


def _warn_table(table: Any, raw_ms: float | None = None, here: bool = False) -> list[str]:
    """Warn about what a user of ``table`` should know (``table_warnings``), a prediction of
    ``raw_ms`` that extrapolates its calibration, and with ``here`` a table this machine cannot
    measure against; the warnings, for ``--json``."""
    from nas2deploy.latency.device import settings_from_table
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
        _warn(line)
    return lines


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=1, default=str))


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """A click progress bar with ETA on stderr, driven by (done, total, item) callbacks."""
    state: dict[str, Any] = {}

    def update(done: int, total: int, item: str) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label=label, show_eta=True, show_pos=True, file=sys.stderr)
            state["bar"].__enter__()
        bar = state["bar"]
        bar.update(done - bar.pos)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)


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


def space_options(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Every option of ``scope`` that a registered space declares ("space": its configuration;
    "search": its search; "derive": its derivation), unset by default: an unset option takes the
    space's own default, and one the chosen space lacks is refused by name."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for field_name, declared in reversed(list(all_options(scope).items())):
            option = declared[0][1]
            helps = "; ".join(f"{space}: {o.help}" for space, o in declared)
            if option.kind == "flag":
                f = click.option(option.flag, field_name, is_flag=True, default=None, help=helps)(f)
                continue
            kind = click.IntRange(min=int(option.low) if option.low is not None else None,
                                  max=int(option.high) if option.high is not None else None) if option.kind == "int" \
                else Finite(min=option.low, max=option.high, min_open=option.low == 0)
            f = click.option(option.flag, field_name, type=kind, default=None, help=helps)(f)
        return f

    return decorate


def _pop_options(name: str, options: dict[str, Any], scope: str) -> dict[str, Any]:
    """The given (not None, not an unset flag) options of ``scope`` for space ``name``, popped
    from ``options``; one that the space lacks is refused by name."""
    given = {k: options.pop(k) for k in all_options(scope) if k in options}
    return space_overrides(name, {k: v for k, v in given.items() if v is not None and v is not False}, scope)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nas2deploy")
def cli() -> None:
    """Latency-aware neural architecture search that ends in deployable engines."""


# -- space ---------------------------------------------------------------------------------------
@cli.group()
def space() -> None:
    """Inspect search spaces."""


@space.command("info")
@click.argument("name", metavar="SPACE", type=SpaceName())
@space_options("space")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def space_info(name: str, as_json: bool, **cfg: Any) -> None:
    """Counts of a search space's graph: nodes, edges, mixed ops, paths, ops to profile, architectures."""
    sp = make_space(name, _pop_options(name, cfg, "space"))
    counts = sp.counts()
    if as_json:
        _print_json({"space": name, "config": sp.config_dict(), **counts})
        return
    click.echo(f"{name} {json.dumps(sp.config_dict())}")
    for key, value in counts.items():
        shown = f"{value:.3e}" if key == "architectures" else str(value)
        click.echo(f"  {key.replace('_', ' '):<24} {shown}")


@space.command("sample")
@click.argument("name", metavar="SPACE", type=SpaceName())
@click.option("--lut", "table", type=click.Path(dir_okay=False), required=True, help="Latency table of the space.")
@click.option("--budget-ms", type=POSITIVE, required=True, help="Upper end of the latency window.")
@click.option("--fill", type=Finite(min=0, max=1), default=DEFAULT_FILL, show_default=True,
              help="Lower end of the window as a share of the budget (as derive --fill).")
@click.option("--count", type=click.IntRange(min=1, max=10_000), default=10, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-tries", type=click.IntRange(min=1), help="Draws before giving up (default 20000 per network).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for random-NNN.json.")
@space_options("space")
def space_sample(name: str, table: str, budget_ms: float, fill: float, count: int, seed: int, max_tries: int | None,
                 out: str, **cfg: Any) -> None:
    """Random networks of a latency window: the space's sampler, kept where the prediction fits.
    Space options narrow the table's space as they narrow a search's (draw from the space
    the search searched)."""
    from nas2deploy.baseline import sample_window, write_sample

    refuse_link(out)
    sample = sample_window(table, budget_ms, fill, count, seed, max_tries, space_name=name,
                           space_config=_pop_options(name, cfg, "space"))
    write_sample(sample, out)
    low, high = sample.window_ms
    click.echo(f"{len(sample.networks)} of {count} networks in [{low:.4g}, {high:.4g}] ms after {sample.tries} draws "
               f"(the space reaches {sample.reachable_ms[0]:.4g}-{sample.reachable_ms[1]:.4g} ms) -> {out}")
    if len(sample.networks) < count:
        raise UserError(f"found {len(sample.networks)} of {count} networks in {sample.tries} draws (written to {out}): the window holds few "
                        "of the sampler's networks; widen it (--fill) or raise --max-tries")


# -- arch ----------------------------------------------------------------------------------------
@cli.group()
def arch() -> None:
    """Inspect architectures (JSON files or shipped names)."""


@arch.command("list")
def arch_list() -> None:
    """The architectures shipped with nas2deploy."""
    from nas2deploy.nets import named_archs

    for name in named_archs():
        click.echo(name)


@arch.command("info")
@click.argument("arch_ref", metavar="ARCH")
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False), help="Latency table to predict with.")
@click.option("--json", "as_json", is_flag=True)
def arch_info(arch_ref: str, lut_path: str | None, as_json: bool) -> None:
    """Parameters, multiply-adds, a per-block table and, with --lut, the predicted latency."""
    from nas2deploy.latency.network_summary import arch_summary, summary_lines
    from nas2deploy.nets import load_arch
    from nas2deploy.spaces import load_table

    summary = arch_summary(load_arch(arch_ref), load_table(lut_path) if lut_path else None)
    if as_json:
        _print_json(summary)
        return
    for line in summary_lines(summary):
        click.echo(line)


# -- profile -------------------------------------------------------------------------------------
def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--backend", type=click.Choice(list(BACKENDS)), default=ONNX_CHECKER, show_default=True),
        click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
                     help="Where torch / ONNX Runtime run (TensorRT always uses cuda)."),
        click.option("--ort-provider", type=click.Choice(list(PROVIDERS)), default=None,
                     help="ONNX Runtime execution provider (default: the device's)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True),
        click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                     help="CPU threads, pinned and recorded in the table."),
        click.option("--cuda-graph", is_flag=True, help="torch / TensorRT on cuda: time graph replays (kernels only, as a "
                     "graph-launched engine runs) instead of eager launches; recorded in the table."),
        click.option("--workspace-mb", type=click.IntRange(min=1), default=1024, show_default=True,
                     help="TensorRT builder workspace limit."),
    ]):
        f = opt(f)
    return f


def _parse_shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"{value!r}: expected i/n with 0 <= i < n")
    return i, n


@cli.command()
@click.option("--space", "space_name", type=SpaceName(), default=DEFAULT_SPACE, show_default=True)
@space_options("space")
@backend_options
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Minimum timed runs per op [default: 100 on a CPU, 30 on a GPU].")
@click.option("--shard", default="0/1", show_default=True, help="Measure only every n-th op starting at i (i/n).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Table to write (JSON).")
def profile(space_name: str, runs: int | None, shard: str, out: str, **backend: Any) -> None:
    """Measure every op of a search space into a latency table (resumable: rerun after a kill)."""
    from nas2deploy.latency.profile import journal_path, profile_space

    sp = make_space(space_name, _pop_options(space_name, backend, "space"))
    # one timing cache beside the table, for the backends that keep one (TensorRT)
    settings = BackendSettings(**backend, timing_cache=str(Path(out).with_suffix(".timing-cache")))
    resuming = journal_path(out).exists()
    with _progress(f"profiling {Path(out).name}") as progress:
        table, stats = profile_space(sp, settings, out, TimingSettings.for_device(settings.device, runs),
                                     _parse_shard(shard), progress)
    click.echo(
        f"wrote {out}: {len(table.entries)} ops in {stats.wall_s:.1f} s "
        f"({stats.timed_fraction:.0%} inside timed runs, {stats.remeasured} re-measured for high CoV"
        + (f", {stats.resumed} resumed from the journal)" if resuming else ")")
    )
    _warn_table(table)


# -- lut -----------------------------------------------------------------------------------------
@cli.group()
def lut() -> None:
    """Inspect, merge and validate latency tables."""


@lut.command("show")
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def lut_show(table_path: str, as_json: bool) -> None:
    """A readable summary of a latency table."""
    from nas2deploy.latency.summary import summarize
    from nas2deploy.latency.table import LatencyTable

    summary = summarize(LatencyTable.load(table_path))
    if as_json:
        _print_json(summary)
        return
    for line in summary["lines"]:
        click.echo(line)


@lut.command("merge")
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
def lut_merge(out: str, inputs: tuple[str, ...]) -> None:
    """Join shard tables measured under the same settings into OUT."""
    from nas2deploy.latency.table import LatencyTable, merge_tables

    merged = merge_tables([LatencyTable.load(p) for p in inputs])
    merged.save(out)
    click.echo(f"wrote {out}: {len(merged.entries)} ops from {len(inputs)} tables")


@lut.command("validate")
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@click.option("--samples", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--across-range", is_flag=True,
              help="Spread the networks evenly over the latency range (default: uniform over choices, which piles up mid-range).")
@click.option("--json", "as_json", is_flag=True)
def lut_validate(table_path: str, samples: int, seed: int, across_range: bool, as_json: bool) -> None:
    """Measure random networks end to end, report prediction error, store the calibration."""
    from nas2deploy.latency.validate import validate_table
    from nas2deploy.spaces import load_table, table_space

    table = load_table(table_path)
    with _progress(f"validating {Path(table_path).name}") as progress:
        report = validate_table(table, table_space(table).sample_arch, samples, seed, progress=progress,
                                spread=across_range)
    if not as_json:
        click.echo(fidelity_text(report))
        if not report.get("calibration_refused"):
            click.echo(f"calibration stored in {table_path}")
    warnings = _warn_table(table)
    if as_json:
        _print_json({**{k: v for k, v in report.items() if k != "records"}, "warnings": warnings})


def fidelity_text(report: dict[str, Any]) -> str:
    rows = [f"{report['samples']} networks measured end to end ({report['wall_s']} s)",
            f"  {'':<11}{'MAPE':>7}{'median':>8}{'<=5%':>7}{'<=10%':>7}{'tau':>7}{'r':>7}"]
    for kind in ("raw", "calibrated"):
        m = report[kind]
        rows.append(f"  {kind:<11}{m['mape']:>6.2f}%{m['median_ape']:>7.2f}%{m['within_5pct']:>6.0f}%"
                    f"{m['within_10pct']:>6.0f}%{m['kendall_tau']:>7.3f}{m['pearson_r']:>7.3f}")
    for row in report.get("shipped", []):
        calibrated = f", calibrated {row['calibrated_error_pct']:+.1f}%" if "calibrated_error_pct" in row else ""
        rows.append(f"  shipped {row['name']}: measured {row['measured_ms']:.3f} ms, raw {row['raw_error_pct']:+.1f}%{calibrated}")
    return "\n".join(rows)


# -- search / derive / train ---------------------------------------------------------------------
def data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Which part of the data, and how it is cropped."""
    f = click.option("--crop", default="", help="Segmentation training crops HxW (e.g. 512x1024); "
                     "default: square at the input size.")(f)
    return click.option("--data-classes", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Keep the first N classes of an ImageFolder (DenseNAS: 100 of ImageNet); 0: all.")(f)


def device_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where a search or a training runs, and how fast."""
    for option in reversed([
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                     help="cuda: under torchrun, each rank on cuda:LOCAL_RANK."),
        click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True,
                     help="Mixed-precision forward passes (fp16 with gradient scaling)."),
        click.option("--workers", type=click.IntRange(min=0, max=256), default=0, show_default=True,
                     help="Processes decoding the data."),
        click.option("--channels-last", is_flag=True, help="Images in channels-last memory order."),
    ]):
        f = option(f)
    return f


@cli.command()
@click.option("--space", "space_name", type=SpaceName(), default=DEFAULT_SPACE, show_default=True)
@click.option("--lut", "table", type=click.Path(dir_okay=False), required=True, help="Latency table of the target device.")
@click.option("--data", default="", help="DenseNAS: 'synthetic' (default), 'synthetic-small' (harder), a CIFAR-10 binary folder or an ImageFolder; "
              "DCNAS: 'seg-synthetic' (default), a Cityscapes or a PASCAL VOC folder.")
@click.option("--budget-ms", type=POSITIVE, help="Latency budget: lambda adapts so the expected latency settles here.")
@click.option("--lambda", "lam", type=Finite(min=0, max=1e3), default=0.15, show_default=True, help="Weight of the latency term.")
@click.option("--tau", type=Finite(min=1, min_open=True, max=1e6), default=15.0, show_default=True,
              help="Base of the latency term's logarithm.")
@click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-batches", type=click.IntRange(min=0), default=0, show_default=True, help="Cap per pass (0: all).")
@click.option("--w-lr", type=Finite(min=0, min_open=True, max=10), default=0.036, show_default=True)
@click.option("--a-lr", type=Finite(min=0, min_open=True, max=10), default=3e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@space_options("search")
@space_options("space")
@device_options
@data_options
@click.option("--dist-backend", type=click.Choice(["auto", "nccl", "gloo"]), default="auto", show_default=True,
              help="Under torchrun: auto is nccl on cuda, gloo on cpu; gloo lets ranks share one GPU.")
@click.option("--dist-timeout", type=click.IntRange(min=10), default=300, show_default=True,
              help="Seconds a rank waits for the others before failing (a dead rank, a lost network).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON file of SearchConfig fields.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (runs/NAME).")
@click.pass_context
def search(ctx: click.Context, space_name: str, table: str, config_file: str | None, resume: bool, out: str,
           dist_backend: str, dist_timeout: int, **opts: Any) -> None:
    """Latency-regularised search (DenseNAS or DCNAS); writes log.jsonl, checkpoint.pt and arch.json to --out."""
    from nas2deploy.runs import start_search
    from nas2deploy.search.config import SearchConfig
    from nas2deploy.search.distributed import leave_process_group

    # Options are named as SearchConfig fields (the space's under space_config and search_options);
    # a --config file fills what the command line leaves out.
    space_config = _pop_options(space_name, opts, "space")
    search_options = _pop_options(space_name, opts, "search")
    fields = SearchConfig.from_file(config_file) if config_file else {}
    for name, value in opts.items():
        if name not in fields or ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            fields[name] = value
    fields["space_config"] = {**fields.get("space_config", {}), **space_config}
    fields["search_options"] = {**fields.get("search_options", {}), **search_options}
    run = start_search(SearchConfig(table=table, space=space_name, **fields), out, resume, click.echo,
                       dist_backend, dist_timeout)
    if run.rank == 0:
        _warn_table(run.table, here=True)
    run.run()
    leave_process_group()
    if run.rank == 0:
        from nas2deploy.nets import load_arch

        derived = Path(out) / "arch.json"
        click.echo(f"derived architecture: {derived} (predicted {run.table.predict(load_arch(derived)).best_ms:.3f} ms)")


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--budget-ms", type=POSITIVE, help="Most probable architecture whose predicted latency fits.")
@click.option("--fill", type=Finite(min=0, max=1), default=DEFAULT_FILL, show_default=True,
              help="With --budget-ms: use at least this share of the budget (0: the most probable that fits).")
@click.option("--measure", "measured", is_flag=True,
              help="With --budget-ms, on the table's device: measure and tighten until the measured latency fits.")
@space_options("derive")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@click.pass_context
def derive(ctx: click.Context, run_dir: str, budget_ms: float | None, fill: float, measured: bool, out: str,
           **opts: Any) -> None:
    """Derive an architecture from a search run: the most probable one, or the best under a budget."""
    from nas2deploy.nets import save_arch
    from nas2deploy.runs import open_run
    from nas2deploy.search.config import provenance
    from nas2deploy.search.verify import derive_measured

    if measured and budget_ms is None:
        raise UserError("--measure needs --budget-ms")
    if budget_ms is None and ctx.get_parameter_source("fill") != click.core.ParameterSource.DEFAULT:
        raise UserError("--fill sets how much of --budget-ms the network uses: give --budget-ms, or leave --fill out")
    refuse_link(out)
    run = open_run(run_dir)
    options = {**run.derive_options, **_pop_options(run.config.space, opts, "derive")}
    name = Path(out).stem
    if measured and budget_ms is not None:
        found = derive_measured(run.space_search, budget_ms, name=name, say=click.echo, fill=fill, **options).arch
        arch = found.with_meta(provenance(run.config, budget_ms))
    else:
        arch = run.derive(name, budget_ms, fill, **options)
    save_arch(arch, out)
    pred = run.table.predict(arch)
    _warn_table(run.table, pred.raw_ms)
    cal = f", calibrated {pred.calibrated_ms:.3f} ms" if pred.calibrated_ms is not None else ""
    share = f" ({pred.best_ms / budget_ms:.0%} of the budget)" if budget_ms else ""
    parts = arch.size_label()
    click.echo(f"wrote {out}: {parts}, predicted {pred.raw_ms:.3f} ms summed{cal}{share}")


@cli.command()
@click.option("--arch", "arch_ref", required=True, help="Arch JSON file or shipped name.")
@click.option("--data", default="synthetic", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=Finite(min=0, min_open=True, max=10), default=0.05, show_default=True)
@click.option("--lr-warmup", type=Finite(min=0, max=1), default=0.1, show_default=True,
              help="Share of the steps over which the learning rate ramps up linearly.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_options
@data_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Weights file (state dict).")
def train(arch_ref: str, data: str, epochs: int, batch_size: int, lr: float, lr_warmup: float, seed: int, out: str,
          device: str, amp: str, workers: int, channels_last: bool, data_classes: int, crop: str) -> None:
    """Train a derived network (SGD, cosine schedule after a linear warm-up) and report top-1, or
    mIoU for segmentation."""
    from nas2deploy.nets import load_arch
    from nas2deploy.data import open_dataset
    from nas2deploy.objective import LABEL, METRIC
    from nas2deploy.search.config import parse_crop
    from nas2deploy.search.distributed import compute_device
    from nas2deploy.train import save_weights, train_arch

    refuse_link(out)  # before the training, not after it
    arch = load_arch(arch_ref)
    try:
        crop_size = parse_crop(crop)
    except ValueError as exc:
        raise UserError(f"--crop {crop}: {exc}") from None
    splits = open_dataset(data, arch.input_size, data_classes, crop_size)
    model, acc = train_arch(arch, splits, epochs, batch_size, lr, seed=seed, progress=click.echo,
                            device=compute_device(device), amp=amp, workers=workers, channels_last=channels_last,
                            lr_warmup=lr_warmup)
    save_weights(model, out)
    metric = LABEL[METRIC[arch.task]]
    click.echo(f"{metric} {acc:.4f} on the test split; weights: {out}")


# -- export, bench, report -----------------------------------------------------------------------
@cli.command()
@click.option("--arch", "arch_ref", required=True, help="Arch JSON file or shipped name.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict from `train`; without it, fresh weights.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Export folder, e.g. export/NAME.")
@click.option("--backend", "backends", type=click.Choice(list(BACKENDS)), multiple=True, default=(ONNX_CHECKER,),
              show_default=True, help="Backends to deploy and measure (repeat the option for several).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Device of ONNX Runtime and PyTorch (TensorRT always uses the GPU).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="TensorRT engine precision (int8 is not supported).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension (engine profile 1..max(B, 32)).")
@click.option("--data", help="Dataset for the accuracy check (default: the one recorded in the arch).")
@click.option("--images", type=click.Path(exists=False), help="Image file or folder for the accuracy check instead.")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True, help="Inputs in the accuracy check.")
@click.option("--lut", type=click.Path(dir_okay=False), help="Latency table to compare with (default: the arch's).")
@click.option("--budget-ms", type=POSITIVE, help="Budget to report against (default: the arch's).")
@click.option("--workspace-mb", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite a non-empty output folder.")
@click.option("--strict", is_flag=True, help="Exit 1 (after writing the folder) when a backend measures above the budget.")
def export(arch_ref: str, weights: str | None, out: str, backends: tuple[str, ...], device: str, precision: str,
           batch: int, dynamic_batch: bool, data: str | None, images: str | None, samples: int, lut: str | None,
           budget_ms: float | None, workspace_mb: int, force: bool, strict: bool) -> None:
    """Export ONNX (and a TensorRT engine), check accuracy on real inputs, measure latency, write a report."""
    from nas2deploy.nets import load_arch
    from nas2deploy.deploy.export import Exporter, ExportOptions

    options = ExportOptions(tuple(dict.fromkeys(backends)), device, precision, batch, dynamic_batch, data, images,
                            samples, lut=lut, budget_ms=budget_ms, workspace_mb=workspace_mb, force=force, strict=strict)
    Exporter(load_arch(arch_ref), weights, out, options, click.echo, _warn).run()
    click.echo(f"report: {Path(out) / 'report.md'}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=ONNX_CHECKER, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), help="Batch of a dynamic-batch model [default: 1; a static "
              "model runs the batch it was built for].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=TimingSettings().min_runs, show_default=True)
@click.option("--cuda-graph", is_flag=True, help="torch / TensorRT on cuda: replay the launch as a CUDA graph.")
@click.option("--json", "as_json", is_flag=True)
def bench(model: str, backend: str, device: str, batch: int | None, threads: int, runs: int, cuda_graph: bool,
          as_json: bool) -> None:
    """trtexec-style latency summary of an ONNX model or a TensorRT engine."""
    from nas2deploy.deploy.bench import bench_model

    result = bench_model(model, BackendSettings(backend=backend, device=device, batch=batch or 1, threads=threads,
                                                cuda_graph=cuda_graph), TimingSettings(min_runs=runs), batch is not None)
    if as_json:
        _print_json(result)
        return
    t = result["timing"]
    click.echo(f"{model} on {result['settings']['backend']} ({result['settings']['device_name']}), batch {result['batch']}")
    click.echo(f"  latency: median {t['median_ms']:.4f} ms, mean {t['mean_ms']:.4f} ms, min {t['min_ms']:.4f} ms, "
               f"p90 {t['p90_ms']:.4f} ms, p99 {t['p99_ms']:.4f} ms, CoV {t['cov']:.1%} over {t['runs']} runs")
    click.echo(f"  throughput: {result['throughput_per_s']:.1f} inferences/s")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
def report(folder: str) -> None:
    """Regenerate report.md and its plots for an export folder or a search run."""
    from nas2deploy.report import regenerate

    click.echo(f"wrote {regenerate(folder)}")


# -- demo ----------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", type=click.Path(file_okay=False), help="Search run, architecture and weights [default: runs/demo/TASK].")
@click.option("--export-dir", type=click.Path(file_okay=False),
              help="Export folder, replaced on each run [default: export/demo/TASK].")
@click.option("--task", type=click.Choice(sorted({e.task for e in SPACES.values() if e.demo})), default="classification",
              show_default=True, help="The demo of the space that searches this task: "
              + ", ".join(f"{e.task}: {e.name} on {e.demo.data}" for e in SPACES.values() if e.demo) + ".")
@device_options
def demo(out: str | None, export_dir: str | None, task: str, device: str, amp: str, workers: int,
         channels_last: bool) -> None:
    """The whole chain on built-in data: table, search under a budget, derive, train, export, check, measure."""
    from nas2deploy.demo import default_folders, run_demo

    default_out, default_export = default_folders(task)
    out, export_dir = out or default_out, export_dir or default_export
    run_demo(out, export_dir, click.echo, task, device, amp, workers, channels_last)
    click.echo(f"report: {Path(export_dir) / 'report.md'} (search: {Path(out) / 'search' / 'report.md'})")


def main() -> None:
    cli(prog_name="nas2deploy")
