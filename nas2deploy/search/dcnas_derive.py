"""Derivation of a DCNAS network: per cell the ``derive_inputs`` strongest connections (largest
softmax(beta); ties to the earlier input) and the argmax op (ties to the first in ``ops``
order); then the cells that do not reach the output block are pruned (``DCNASSpace.arch_from``).
"""

from __future__ import annotations

import torch

from nas2deploy.search.dcnas_supernet import DCNASSupernet
from nas2deploy.seg_arch import SegArch


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
