"""Derivation of a DCNAS network.

``derive_topk`` (the default): per cell the ``derive_inputs`` strongest connections (largest
softmax(beta); ties to the earlier input) and the argmax op (ties to the first in ``ops``
order); then the cells that do not reach the output block are pruned (``DCNASSpace.arch_from``).

``derive_viterbi`` (Auto-DeepLab's decode, as an option): the single best scale path, one cell
per layer from the stem, each cell fed only by the path's cell of the previous layer, maximising
the sum of log softmax(beta) of the transitions taken (ties to the finer scale). The output block
then reads that one cell of the last layer.
"""

from __future__ import annotations

import torch

from nas2deploy.search.dcnas_supernet import DCNASSupernet
from nas2deploy.seg_arch import STEM, Cell, SegArch


def derive_topk(net: DCNASSupernet, name: str = "derived") -> SegArch:
    space = net.space
    chosen, ops = {}, {}
    with torch.no_grad():
        for i, cell in enumerate(net.cells):
            w = net.input_weights(cell).tolist()
            k = min(space.config.derive_inputs, len(w))
            order = sorted(range(len(w)), key=lambda j: (-w[j], j))[:k]
            chosen[cell] = tuple(space.inputs[cell][j] for j in sorted(order))
            ops[cell] = space.config.ops[int(torch.argmax(net.alpha[i]))]
    return space.arch_from(chosen, ops, name)


def derive_viterbi(net: DCNASSupernet, name: str = "derived") -> SegArch:
    space = net.space
    with torch.no_grad():
        logw = {cell: torch.log(net.input_weights(cell)).tolist() for cell in net.cells}
    score: dict[tuple[int, int], float] = {STEM: 0.0}
    back: dict[tuple[int, int], tuple[int, int]] = {}
    for layer in range(space.config.layers):
        for cell in [c for c in net.cells if c[0] == layer]:
            options = [(score[src] + logw[cell][i], src) for i, src in enumerate(space.inputs[cell])
                       if src in score and src[0] == layer - 1]
            if options:  # best score; ties to the finer source scale (max keeps the first seen)
                best = max(options, key=lambda o: (o[0], -o[1][1]))
                score[cell], back[cell] = best
    last = [c for c in net.cells if c[0] == space.config.layers - 1 and c in score]
    node = max(last, key=lambda c: (score[c], -c[1]))
    path = []
    while node != STEM:
        path.append(node)
        node = back[node]
    ops = {c: space.config.ops[int(torch.argmax(net.alpha[net.cells.index(c)]))] for c in path}
    cells = tuple(Cell(c[0], c[1], ops[c], (back[c],)) for c in reversed(path))
    return SegArch(space.config.input_size, space.config.num_classes, space.config.scale_widths, cells,
                   space.config.head_width, space.config.resize_mode, space.config.align_corners, name)
