"""``profile``: measure every op of a space into a latency table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nas2deploy.cli.common import (SpaceName, backend_params, chosen_space, declared_command, emit, force_option,
                                   foreign_space_option, json_option, parse_shard, pop_backend_options, pop_options,
                                   on_interrupt, progress_bar, space_params, warn_table)
from nas2deploy.spaces import DEFAULT_SPACE


@declared_command(lambda ctx, args: space_params(chosen_space(args), "space") + backend_params(),
                  foreign_space_option(("space",)))
@click.option("--space", "space_name", type=SpaceName(), default=DEFAULT_SPACE, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Minimum timed runs per op [default: 20 on a CPU, then more until the median is pinned down; 30 on a GPU].")
@click.option("--shard", default="0/1", show_default=True, help="Measure only every n-th op starting at i (i/n).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Table to write (JSON).")
@force_option
@json_option
def profile(space_name: str, runs: int | None, shard: str, out: str, force: bool, as_json: bool, backend: str,
            device: str, precision: str, batch: int, threads: int, **rest: Any) -> None:
    """Measure every op of a search space into a latency table (resumable: rerun after a kill)."""
    from nas2deploy.backends import BackendSettings
    from nas2deploy.backends.timing import TimingSettings
    from nas2deploy.fileio import check_name
    from nas2deploy.latency.profile import journal_path, profile_space
    from nas2deploy.spaces import make_space

    options = pop_backend_options(rest)
    sp = make_space(space_name, pop_options(space_name, rest, "space"))
    settings = BackendSettings(backend, device, precision, batch, threads, options)
    if any(o.name == "timing_cache" for o in settings.impl.options):  # one timing cache beside the table
        settings = BackendSettings(backend, device, precision, batch, threads,
                                   {**options, "timing_cache": str(Path(out).with_suffix(".timing-cache"))})
    resuming = journal_path(check_name(out)).exists()
    on_interrupt(f"the journal {journal_path(out)} keeps every op measured", "")
    with progress_bar(f"profiling {Path(out).name}") as progress:
        table, stats = profile_space(sp, settings, out, TimingSettings.for_device(settings.device, runs),
                                     parse_shard(shard), progress, force)
    result = {"table": out, "ops": len(table.entries), "wall_s": round(stats.wall_s, 2),
              "timed_fraction": round(stats.timed_fraction, 4), "remeasured": stats.remeasured,
              "resumed": stats.resumed, "warnings": warn_table(table)}
    emit(result, f"wrote {out}: {len(table.entries)} ops in {stats.wall_s:.1f} s "
         f"({stats.timed_fraction:.0%} inside timed runs, {stats.remeasured} re-measured for high CoV"
         + (f", {stats.resumed} resumed from the journal)" if resuming else ")"), as_json)
