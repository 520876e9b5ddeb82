"""``space``, ``arch`` and ``lut``: look into search spaces, architectures and latency tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nas2deploy.cli.common import (POSITIVE, DeclaredCommand, Finite, InputSize, SpaceName, chosen_space, emit, force_option,
                                   foreign_space_option, json_option, pop_options, progress_bar, space_params, warn_table)
from nas2deploy.errors import UserError
from nas2deploy.fileio import claim_file, claim_folder
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.spaces import make_space


# -- space ---------------------------------------------------------------------------------------
@click.group()
def space() -> None:
    """Inspect search spaces."""


def own_space_params(ctx: click.Context, args: list[str]) -> list[click.Parameter]:
    """The configuration options of the space a ``space`` command names."""
    return space_params(chosen_space(args, positional=True), "space")


@space.command("info", cls=DeclaredCommand, declared=own_space_params, foreign=foreign_space_option(("space",), True))
@click.argument("name", metavar="SPACE", type=SpaceName())
@json_option
def space_info(name: str, as_json: bool, **cfg: Any) -> None:
    """Counts of a search space's graph: nodes, edges, mixed ops, paths, ops to profile, architectures."""
    sp = make_space(name, pop_options(name, cfg, "space"))
    counts = sp.counts()
    text = [f"{name} {json.dumps(sp.config_dict())}"]
    text += [f"  {key.replace('_', ' '):<24} {f'{value:.3e}' if key == 'architectures' else value}" for key, value in counts.items()]
    emit({"space": name, "config": sp.config_dict(), **counts}, text, as_json)


@space.command("sample", cls=DeclaredCommand, declared=own_space_params, foreign=foreign_space_option(("space",), True))
@click.argument("name", metavar="SPACE", type=SpaceName())
@click.option("--lut", "table", type=click.Path(dir_okay=False), required=True, help="Latency table of the space.")
@click.option("--budget-ms", type=POSITIVE, required=True, help="Upper end of the latency window.")
@click.option("--fill", type=Finite(min=0, max=1), default=DEFAULT_FILL, show_default=True,
              help="Lower end of the window as a share of the budget (as derive --fill).")
@click.option("--count", type=click.IntRange(min=1, max=10_000), default=10, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-tries", type=click.IntRange(min=1), help="Draws before giving up (default 20000 per network).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for random-NNN.json.")
@force_option
@json_option
def space_sample(name: str, table: str, budget_ms: float, fill: float, count: int, seed: int, max_tries: int | None,
                 out: str, force: bool, as_json: bool, **cfg: Any) -> None:
    """Random networks of a latency window: the space's sampler, kept where the prediction fits.
    Space options narrow the table's space as they narrow a search's (draw from the space
    the search searched)."""
    from nas2deploy.random_networks import sample_window, write_sample

    claim_folder(out, force)
    sample = sample_window(table, budget_ms, fill, count, seed, max_tries, space_name=name,
                           space_config=pop_options(name, cfg, "space"))
    files = write_sample(sample, out)
    low, high = sample.window_ms
    result = {"out": out, "networks": [str(f) for f in files], "requested": count, "window_ms": [low, high],
              "draws": sample.tries, "reachable_ms": list(sample.reachable_ms)}
    emit(result, f"{len(sample.networks)} of {count} networks in [{low:.4g}, {high:.4g}] ms after {sample.tries} draws "
         f"(the space reaches {sample.reachable_ms[0]:.4g}-{sample.reachable_ms[1]:.4g} ms) -> {out}", as_json)
    if len(sample.networks) < count:
        raise UserError(f"found {len(sample.networks)} of {count} networks in {sample.tries} draws (written to {out}): the window holds few "
                        "of the sampler's networks; widen it (--fill) or raise --max-tries")


# -- arch ----------------------------------------------------------------------------------------
@click.group()
def arch() -> None:
    """Inspect architectures (JSON files or shipped names)."""


@arch.command("list")
@json_option
def arch_list(as_json: bool) -> None:
    """The architectures shipped with nas2deploy."""
    from nas2deploy.nets import named_archs

    emit({"architectures": list(named_archs())}, list(named_archs()), as_json)


@arch.command("info")
@click.argument("arch_ref", metavar="ARCH")
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False), help="Latency table to predict with.")
@click.option("--input-size", "size", type=InputSize(), help="Count at another input size (a DPC network takes H x W).")
@json_option
def arch_info(arch_ref: str, lut_path: str | None, size: tuple[int, int] | None, as_json: bool) -> None:
    """Parameters, multiply-adds, a per-block table and, with --lut, the predicted latency; a DPC
    network's context module counted as the DPC paper's Table 1 counts it."""
    from nas2deploy.latency.network_summary import arch_summary, summary_lines
    from nas2deploy.nets import load_arch
    from nas2deploy.spaces.tables import load_table

    network = load_arch(arch_ref)
    if size is not None:
        network = network.at_input(*size)
    summary = arch_summary(network, load_table(lut_path) if lut_path else None)
    emit(summary, summary_lines(summary), as_json)




# -- lut -----------------------------------------------------------------------------------------
@click.group()
def lut() -> None:
    """Inspect, merge and validate latency tables."""


@lut.command("show")
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@json_option
def lut_show(table_path: str, as_json: bool) -> None:
    """A readable summary of a latency table."""
    from nas2deploy.latency.summary import summarize
    from nas2deploy.latency.table import LatencyTable

    summary = summarize(LatencyTable.load(table_path))
    emit({k: v for k, v in summary.items() if k != "lines"}, summary["lines"], as_json)


@lut.command("merge")
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@force_option
@json_option
def lut_merge(out: str, inputs: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Join shard tables measured under the same settings into OUT."""
    from nas2deploy.latency.table import LatencyTable, merge_tables

    claim_file(out, force, "OUT")
    merged = merge_tables([LatencyTable.load(p) for p in inputs])
    merged.save(out)
    emit({"table": out, "ops": len(merged.entries), "inputs": list(inputs), "warnings": warn_table(merged)},
         f"wrote {out}: {len(merged.entries)} ops from {len(inputs)} tables", as_json)


@lut.command("validate")
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False))
@click.option("--samples", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--across-range", is_flag=True,
              help="Spread the networks evenly over the latency range (default: uniform over choices, which piles up mid-range).")
@json_option
def lut_validate(table_path: str, samples: int, seed: int, across_range: bool, as_json: bool) -> None:
    """Measure random networks end to end, report prediction error, store the calibration."""
    from nas2deploy.latency.fidelity import validate_table
    from nas2deploy.spaces.tables import load_table, table_space

    table = load_table(table_path)
    with progress_bar(f"validating {Path(table_path).name}") as progress:
        report = validate_table(table, table_space(table).sample_arch, samples, seed, progress=progress,
                                spread=across_range)
    text = fidelity_text(report) + ("" if report.get("calibration_refused") else f"\ncalibration stored in {table_path}")
    emit({**{k: v for k, v in report.items() if k != "records"}, "warnings": warn_table(table)}, text, as_json)


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
