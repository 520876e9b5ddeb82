"""The DCNAS heatmaps of a search report: softmax(alpha) per cell, the fusion weights per cell by
source, and the candidates' latencies per cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas2deploy import plotting
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets.cells import STEM
from nas2deploy.spaces.dcnas.search import DCNASSearch


def search_plots(run: Path, searched: DCNASSearch, table: LatencyTable) -> list[str]:
    net, model = searched.net, searched.latency_model
    ops = list(net.space.config.ops)
    rows = [f"layer {l} 1/{4 * 2**s}" for l, s in net.cells]
    feeding = {src for cell in net.cells for src in net.space.inputs[cell]}
    sources = [s for s in [STEM, *net.cells] if s in feeding]  # the last layer's cells feed only the head
    fusion = np.full((len(net.cells), len(sources)), np.nan)
    with torch.no_grad():
        alpha = torch.softmax(net.alpha.detach(), -1).cpu().numpy()
        for i, cell in enumerate(net.cells):
            for src, w in zip(net.space.inputs[cell], net.input_weights(cell).tolist()):
                fusion[i, sources.index(src)] = w
    columns = ["stem" if s == STEM else f"{s[0]}/{s[1]}" for s in sources]
    return [
        plotting.heatmap(run / "alpha.png", alpha, rows, ops, "softmax(alpha): mixture layers", "probability",
                         probability=True, uniform=1 / len(ops), xlabel="candidate op", ylabel="cell (layer, scale)"),
        plotting.heatmap(run / "beta.png", fusion, rows, columns, "fusion weights: softmax(beta) over each cell's inputs",
                         "probability", probability=True, xlabel="input (layer/scale)", ylabel="cell (layer, scale)"),
        plotting.heatmap(run / "lut_ops.png", model.ops.numpy(), rows, ops,
                         f"latency table {Path(table.name).name}: candidates per cell", "ms", xlabel="candidate op",
                         ylabel="cell (layer, scale)"),
    ]
