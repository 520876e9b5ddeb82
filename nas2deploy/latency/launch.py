"""How an eager GPU network overlaps its host and its kernels: the launch pipeline.

Eager PyTorch on a GPU is two workers in a row. The host dispatches each op's kernels (Python,
the dispatcher, the launches: ``LaunchCosts.host_ms``), and the GPU runs them in the order they
were queued (``kernel_ms``); the GPU never waits for an op's dispatch when the host is ahead, and
idles when the host is behind. A network's time is then the finish time of a two-stage flow shop
over its ops in execution order, not a sum: at batch 1 the host is the bottleneck (the network
costs about the sum of dispatch times), at batch 32 the kernels are (about their sum), and in
between each op pays the slower of the two, plus the start and drain of the pipeline. A sum of
per-op eager times, each measured alone, counts every op's pipeline start and drain and so
cannot describe either end (measured on an H200: DenseNAS-C 5.06 ms eager at batch 1 against a
2.6 ms op sum).
"""

from __future__ import annotations

from typing import Sequence

from nas2deploy.backends.timing import LaunchCosts


def pipeline_ms(costs: Sequence[LaunchCosts], start: float = 1.0) -> float:
    """The finish time of a network whose ops cost ``costs``, in execution order: the GPU starts
    an op once it has finished the previous one and the host has dispatched ``start`` of the op
    (1.0: all of it; an op's first kernel can start earlier, while its later ones are still
    being dispatched), and the run ends when both have finished."""
    host = gpu = 0.0
    for c in costs:
        gpu = max(gpu, host + start * c.host_ms) + c.kernel_ms
        host += c.host_ms
    return max(gpu, host)
