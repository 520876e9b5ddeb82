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
    images = [plotting.heatmap(run / "alpha_head.png", head, head_rows, HEAD_OPS, "softmax(alpha): head layers", "probability")]
    if len(stack):
        stack_rows = [f"node {n} layer {i}" for n, i in net.stack_layers]
        images.append(plotting.heatmap(run / "alpha_stack.png", stack, stack_rows, STACK_OPS, "softmax(alpha): stacking layers",
                                       "probability"))
    nodes = net.space.tail_node + 1
    beta = np.full((nodes, nodes), np.nan)
    for i, e in enumerate(net.space.edges):
        beta[e.src, e.dst] = p[i]
    images.append(plotting.heatmap(run / "beta.png", beta, [f"from {i}" for i in range(nodes)], [f"to {j}" for j in range(nodes)],
                                   "path probabilities (softmax(beta) per source block)", "probability"))
    images.append(plotting.heatmap(run / "lut_head.png", model.head.numpy(), head_rows, HEAD_OPS,
                                   f"latency table: head candidates ({table.name})", "ms"))
    return images
