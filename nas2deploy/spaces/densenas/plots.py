"""The DenseNAS heatmaps of a search report: softmax(alpha) of the head and stacking layers, the
path probabilities, and the latency table over the same head layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas2deploy import plotting
from nas2deploy.latency.table import LatencyTable
from nas2deploy.spaces.densenas.search import DenseNASSearch
from nas2deploy.spaces.densenas.space import HEAD_OPS, STACK_OPS


def search_plots(run: Path, searched: DenseNASSearch, table: LatencyTable) -> list[str]:
    net, model = searched.net, searched.latency_model
    with torch.no_grad():
        head = torch.softmax(net.alpha_head, -1).numpy()
        stack = torch.softmax(net.alpha_stack, -1).numpy()
        p = net.path_probs().numpy()
    head_rows = [f"{e.src}->{e.dst}" for e in net.head_edges]
    images = [plotting.heatmap(run / "alpha_head.png", head, head_rows, HEAD_OPS, "softmax(alpha): head layers", "probability",
                               probability=True, uniform=1 / len(HEAD_OPS), xlabel="candidate op", ylabel="edge (block)")]
    if len(stack):
        stack_rows = [f"node {n} layer {i}" for n, i in net.stack_layers]
        images.append(plotting.heatmap(run / "alpha_stack.png", stack, stack_rows, STACK_OPS, "softmax(alpha): stacking layers",
                                       "probability", probability=True, uniform=1 / len(STACK_OPS), xlabel="candidate op",
                                       ylabel="stacking layer"))
    edges = net.space.edges
    sources = sorted({e.src for e in edges})  # the tail feeds nothing, the first block is fed by nothing
    targets = sorted({e.dst for e in edges})
    beta = np.full((len(sources), len(targets)), np.nan)
    for i, e in enumerate(edges):
        beta[sources.index(e.src), targets.index(e.dst)] = p[i]
    images.append(plotting.heatmap(run / "beta.png", beta, [str(s) for s in sources], [str(t) for t in targets],
                                   "path probabilities: softmax(beta) over the blocks each block feeds", "probability",
                                   probability=True, xlabel="to block", ylabel="from block"))
    images.append(plotting.heatmap(run / "lut_head.png", model.head.numpy(), head_rows, HEAD_OPS,
                                   f"latency table {Path(table.name).name}: head candidates", "ms", xlabel="candidate op",
                                   ylabel="edge (block)"))
    return images
