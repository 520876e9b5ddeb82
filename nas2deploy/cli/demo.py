"""``demo``: the whole chain on built-in data."""

from __future__ import annotations

from pathlib import Path

import click

from nas2deploy.cli.common import compute_params, emit, json_option, log, on_interrupt, start_threads, with_params
from nas2deploy.spaces import SPACES


@click.command()
@click.option("--out", type=click.Path(file_okay=False), help="Search run, architecture and weights [default: runs/demo/TASK].")
@click.option("--export-dir", type=click.Path(file_okay=False),
              help="Export folder, replaced on each run [default: export/demo/TASK].")
@click.option("--task", type=click.Choice(sorted({e.task for e in SPACES.values() if e.demo})), default="classification",
              show_default=True, help="The demo of the space that searches this task: "
              + ", ".join(f"{e.task}: {e.name} on {e.demo.data}" for e in SPACES.values() if e.demo) + ".")
@with_params(compute_params)
@json_option
def demo(out: str | None, export_dir: str | None, task: str, device: str, amp: str, workers: int,
         channels_last: bool, compute_threads: int, as_json: bool) -> None:
    """The whole chain on built-in data: table, search under a budget, derive, train, export, check, measure."""
    from nas2deploy.demo import default_folders, run_demo

    default_out, default_export = default_folders(task)
    out, export_dir = out or default_out, export_dir or default_export
    log(start_threads(compute_threads))
    on_interrupt("the demo's folder keeps its table, its search's checkpoint and what it finished", "")
    found = run_demo(out, export_dir, log, task, device, amp, workers, channels_last)
    reports = {"report": str(Path(export_dir) / "report.md"), "search_report": str(Path(out) / "search" / "report.md")}
    emit({**found, **reports}, f"report: {reports['report']} (search: {reports['search_report']})", as_json)
