"""``report.md`` of a search run: the score (top-1 or mIoU), expected latency and lambda over the
epochs (from ``log.jsonl``), and the space's own heatmaps of alpha, beta and the latency table
(``plots`` of its registry entry, drawn from the checkpoint and its table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas2deploy import plotting
from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_bytes, read_capped
from nas2deploy.objective import LABEL
from nas2deploy.runs import open_run
from nas2deploy.validate import Field


#: A search log holds a record of a few kB per epoch: no run comes near this.
MAX_LOG_BYTES = 256 * 2**20


def read_log(run: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run, each field the report reads checked by its rule."""
    records = []
    text = read_capped(run / "log.jsonl", "search log", MAX_LOG_BYTES).decode("utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        try:
            doc = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UserError(f"report {run / 'log.jsonl'}: line {n} is not JSON; the log is corrupt") from None
        f = Field(doc, f"report {run / 'log.jsonl'} (line {n})", "the log is corrupt: search again or restore it")
        metric = f["metric"].str(tuple(LABEL)) if f.has("metric") else "top1"
        record = {"epoch": f["epoch"].int(1, 10**6), "phase": f["phase"].str(("warmup", "search", "single-path")), "metric": metric}
        for key in (f"train_{metric}", f"val_{metric}_argmax", "expected_ms", "lambda", "derived_ms", "alpha_entropy",
                    "beta_entropy"):
            record[key] = f[key].number(-1e9, 1e9)
        arch_score = f.get(f"arch_{metric}")
        record[f"arch_{metric}"] = arch_score.number(-1e9, 1e9) if arch_score else None
        derived = f["derived"]
        record["derived"] = {"blocks" if derived.has("blocks") else "cells":
                             derived["blocks" if derived.has("blocks") else "cells"].list(max_len=10**4)}
        records.append(record)
    if not records:
        raise UserError(f"report {run / 'log.jsonl'}: empty; the search has not finished an epoch")
    return records


def write_search_report(run: Path) -> Path:
    log = read_log(run)
    searched = open_run(run)
    metric = log[-1].get("metric", "top1")
    label = LABEL[metric]
    kept = searched.space_search.eval_label
    epochs = [r["epoch"] for r in log]
    images = [plotting.curves(run / "curves.png", epochs, [
        (label, {"train": [r[f"train_{metric}"] for r in log], "arch step (val)": [r[f"arch_{metric}"] for r in log],
                 f"val, {kept}": [r[f"val_{metric}_argmax"] for r in log]}, False),
        ("ms", {"expected latency": [r["expected_ms"] for r in log], "derived (predicted)": [r["derived_ms"] for r in log]}, False),
        ("lambda", {"lambda": [r["lambda"] for r in log]}, True),
        ("mean entropy per mixed op", {"alpha": [r.get("alpha_entropy") for r in log], "beta": [r.get("beta_entropy") for r in log]},
         False),
    ], {"ms": (searched.config.budget_ms, "budget")} if searched.config.budget_ms is not None else None)]
    if searched.entry.plots is not None:
        images += searched.entry.plots(run, searched.space_search, searched.table)
    last = log[-1]
    derived = last["derived"]
    size = f"{len(derived['blocks'])} blocks" if "blocks" in derived else f"{len(derived['cells'])} cells"
    lines = [
        f"# Search run `{run.name}`",
        "",
        f"Space {searched.config.space}, table {searched.table.name}, data {searched.config.data}; {len(log)} of "
        f"{searched.config.epochs} epochs ({searched.config.warmup_epochs} of weight warm-up); budget "
        f"{searched.config.budget_ms if searched.config.budget_ms is not None else 'none (fixed lambda)'} ms.",
        "",
        f"Last epoch: train {label} {last[f'train_{metric}']:.3f}, validation {label} ({kept}) {last[f'val_{metric}_argmax']:.3f}, "
        f"expected latency {last['expected_ms']:.3f} ms, lambda {last['lambda']:.4g}, derived architecture "
        f"{size} at {last['derived_ms']:.3f} ms predicted; "
        f"entropy of alpha {last['alpha_entropy']:.3f}, of beta {last['beta_entropy']:.3f}.",
        "",
        f"| epoch | phase | train {label} | val {label} | expected ms | lambda | derived ms |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['epoch']} | {r['phase']} | {r[f'train_{metric}']:.3f} | {r[f'val_{metric}_argmax']:.3f} | {r['expected_ms']:.3f} | "
              f"{r['lambda']:.4g} | {r['derived_ms']:.3f} |" for r in log]
    lines += [""] + [f"![{name}]({name})" for name in images]
    path = run / "report.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
