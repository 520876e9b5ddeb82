"""``report.md`` of a search run: the score (top-1 or mIoU), expected latency and lambda over the
epochs (from ``log.jsonl``), alpha and beta as heatmaps and the latency table over the same
layers (from the checkpoint and its table); DenseNAS and DCNAS runs each get their own heatmaps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_bytes
from nas2deploy.objective import LABEL
from nas2deploy.report import plots
from nas2deploy.search.dcnas_supernet import DCNASSupernet
from nas2deploy.search.supernet import DenseNASSupernet
from nas2deploy.nets.cells import STEM
from nas2deploy.spaces.densenas import HEAD_OPS, STACK_OPS
from nas2deploy.validate import Field

if TYPE_CHECKING:
    from nas2deploy.search.loop import SearchedModel


def read_log(run: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run, each field the report reads checked by its rule."""
    records = []
    for n, line in enumerate((run / "log.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            doc = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UserError(f"report {run / 'log.jsonl'}: line {n} is not JSON; the log is corrupt") from None
        f = Field(doc, f"report {run / 'log.jsonl'} (line {n})", "the log is corrupt: search again or restore it")
        metric = f["metric"].str(tuple(LABEL)) if f.has("metric") else "top1"
        record = {"epoch": f["epoch"].int(1, 10**6), "phase": f["phase"].str(("warmup", "search")), "metric": metric}
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


def _densenas_plots(run: Path, searched: SearchedModel) -> list[str]:
    net, model = searched.searched.net, searched.searched.model
    assert isinstance(net, DenseNASSupernet)
    with torch.no_grad():
        head = torch.softmax(net.alpha_head, -1).numpy()
        stack = torch.softmax(net.alpha_stack, -1).numpy()
        p = net.path_probs().numpy()
    head_rows = [f"{e.src}->{e.dst}" for e in net.head_edges]
    images = [plots.heatmap(run / "alpha_head.png", head, head_rows, HEAD_OPS, "softmax(alpha): head layers", "probability")]
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
    return images


def _dcnas_plots(run: Path, searched: SearchedModel) -> list[str]:
    net, model = searched.searched.net, searched.searched.model
    assert isinstance(net, DCNASSupernet)
    ops = list(net.space.config.ops)
    rows = [f"layer {l} 1/{4 * 2**s}" for l, s in net.cells]
    sources = [STEM, *net.cells]
    fusion = np.full((len(net.cells), len(sources)), np.nan)
    with torch.no_grad():
        alpha = torch.softmax(net.alpha, -1).numpy()
        for i, cell in enumerate(net.cells):
            for src, w in zip(net.space.inputs[cell], net.input_weights(cell).tolist()):
                fusion[i, sources.index(src)] = w
    columns = ["stem"] + [f"{l}/{s}" for l, s in net.cells]
    return [
        plots.heatmap(run / "alpha.png", alpha, rows, ops, "softmax(alpha): mixture layers", "probability"),
        plots.heatmap(run / "beta.png", fusion, rows, columns, "fusion weights (softmax(beta) per cell) by source layer/scale",
                      "probability"),
        plots.heatmap(run / "lut_ops.png", model.ops.numpy(), rows, ops, f"latency table: candidates ({searched.table.name})", "ms"),
    ]


def write_search_report(run: Path) -> Path:
    from nas2deploy.search.loop import open_run

    log = read_log(run)
    metric = log[-1].get("metric", "top1")
    label = LABEL[metric]
    kept = "argmax ops" if metric == "top1" else "top connections"
    epochs = [r["epoch"] for r in log]
    images = [plots.curves(run / "curves.png", epochs, [
        (label, {"train": [r[f"train_{metric}"] for r in log], "arch step (val)": [r[f"arch_{metric}"] for r in log],
                 f"val, {kept}": [r[f"val_{metric}_argmax"] for r in log]}, False),
        ("ms", {"expected latency": [r["expected_ms"] for r in log], "derived (predicted)": [r["derived_ms"] for r in log]}, False),
        ("lambda", {"lambda": [r["lambda"] for r in log]}, True),
    ])]
    searched = open_run(run)
    images += _dcnas_plots(run, searched) if searched.config.space == "dcnas" else _densenas_plots(run, searched)
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
