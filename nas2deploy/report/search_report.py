"""``report.md`` of a search run: accuracy, expected latency and lambda over the epochs (from
``log.jsonl``), alpha and beta as heatmaps and the latency table over the same layers (from the
checkpoint and its table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_bytes
from nas2deploy.report import plots
from nas2deploy.spaces.densenas import HEAD_OPS, STACK_OPS


def read_log(run: Path) -> list[dict[str, Any]]:
    records = []
    for n, line in enumerate((run / "log.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"report {run / 'log.jsonl'}: line {n} is not JSON; the log is corrupt") from None
    if not records:
        raise UserError(f"report {run / 'log.jsonl'}: empty; the search has not finished an epoch")
    return records


def write_search_report(run: Path) -> Path:
    from nas2deploy.search.loop import open_run

    log = read_log(run)
    epochs = [r["epoch"] for r in log]
    images = [plots.curves(run / "curves.png", epochs, [
        ("top-1", {"train": [r["train_top1"] for r in log], "arch step (val)": [r["arch_top1"] for r in log],
                   "val, argmax ops": [r["val_top1_argmax"] for r in log]}, False),
        ("ms", {"expected latency": [r["expected_ms"] for r in log], "derived (predicted)": [r["derived_ms"] for r in log]}, False),
        ("lambda", {"lambda": [r["lambda"] for r in log]}, True),
    ])]
    searched = open_run(run)
    net, model = searched.net, searched.model
    with torch.no_grad():
        head = torch.softmax(net.alpha_head, -1).numpy()
        stack = torch.softmax(net.alpha_stack, -1).numpy()
        p = net.path_probs().numpy()
    head_rows = [f"{e.src}->{e.dst}" for e in net.head_edges]
    images.append(plots.heatmap(run / "alpha_head.png", head, head_rows, HEAD_OPS, "softmax(alpha): head layers", "probability"))
    if len(stack):
        stack_rows = [f"node {n} layer {i}" for n, i in net.stack_layers]
        images.append(plots.heatmap(run / "alpha_stack.png", stack, stack_rows, STACK_OPS, "softmax(alpha): stacking layers", "probability"))
    nodes = net.space.tail_node + 1
    beta = np.full((nodes, nodes), np.nan)
    for i, e in enumerate(net.space.edges):
        beta[e.src, e.dst] = p[i]
    images.append(plots.heatmap(run / "beta.png", beta, [f"from {i}" for i in range(nodes)], [f"to {j}" for j in range(nodes)],
                                "path probabilities (softmax(beta) per source block)", "probability"))
    images.append(plots.heatmap(run / "lut_head.png", model.head.numpy(), head_rows, HEAD_OPS,
                                f"latency table: head candidates ({searched.table.name})", "ms"))
    last = log[-1]
    lines = [
        f"# Search run `{run.name}`",
        "",
        f"Table {searched.table.name}; {len(log)} of {searched.config.epochs} epochs "
        f"({searched.config.warmup_epochs} of weight warm-up); budget "
        f"{searched.config.budget_ms if searched.config.budget_ms is not None else 'none (fixed lambda)'} ms.",
        "",
        f"Last epoch: train top-1 {last['train_top1']:.3f}, validation top-1 (argmax ops) {last['val_top1_argmax']:.3f}, "
        f"expected latency {last['expected_ms']:.3f} ms, lambda {last['lambda']:.4g}, derived architecture "
        f"{len(last['derived']['blocks'])} blocks at {last['derived_ms']:.3f} ms predicted; "
        f"entropy of alpha {last['alpha_entropy']:.3f}, of beta {last['beta_entropy']:.3f}.",
        "",
        "| epoch | phase | train top-1 | val top-1 | expected ms | lambda | derived ms |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['epoch']} | {r['phase']} | {r['train_top1']:.3f} | {r['val_top1_argmax']:.3f} | {r['expected_ms']:.3f} | "
              f"{r['lambda']:.4g} | {r['derived_ms']:.3f} |" for r in log]
    lines += [""] + [f"![{name}]({name})" for name in images]
    path = run / "report.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
