"""Peak memory and step time of the DCNAS supernet: the full supernet, path-level sampling, and
path plus channel-level sampling, at the same batch and resolution.

Target: path + channel sampling at least 4x lower peak memory than the full supernet,
and a faster step. Each mode runs in two processes of its own: one for memory, one for time.
Peak memory is the process's maximum resident size above its level before the supernet is
built, so it holds the weights, their gradients and momentum, the batch and the activations;
glibc is told to return freed blocks to the system (``LIVE_RSS``) so that the maximum follows the
live tensors rather than the allocator's high-water mark. Step times (default allocator) are
medians over the timed steps after one warm-up step. A step is what the search's weight step
does: sample the connections, forward, segmentation cross-entropy (ignore 255), backward, SGD
with momentum.

    .venv/bin/python benchmarks/dcnas_memory.py [--input-size 256] [--layers 12] [--base-width 32] [--batch 16]

The default size is a search-like one, where activations outweigh the ~200 MB of weights and
momentum that every mode holds; at 128x128, batch 4 (``--input-size 128 --batch 4``, ~1 min)
that fixed part is most of the peak and the ratio is lower (both are in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from nas2deploy.spaces.dcnas import CHANNEL_FRACTION, PATH_SAMPLES

#: glibc returns every block of 64 KiB or more to the system when it is freed, so the process's
#: resident size follows the live tensors and its high-water mark is the step's peak memory
#: (by default freed blocks stay in the heap and the high-water mark stays up).
LIVE_RSS = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
MODES = {"full": (0, 1.0), "path": (PATH_SAMPLES, 1.0), "channel": (0, CHANNEL_FRACTION),
         "path+channel": (PATH_SAMPLES, CHANNEL_FRACTION), "half the paths + channel": (-1, CHANNEL_FRACTION)}


def one_mode(mode: str, args: argparse.Namespace) -> dict[str, float]:
    """Run ``mode`` for ``args.steps`` + 1 steps; step time, saved activations and peak RSS growth."""
    import torch
    import torch.nn.functional as F

    from nas2deploy.objective import IGNORE
    from nas2deploy.spaces.dcnas.supernet import DCNASSupernet, PathSample
    from nas2deploy.spaces import make_space
    from nas2deploy.spaces.dcnas.space import DCNASSpace

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = make_space("dcnas", {"input_size": args.input_size, "layers": args.layers, "base_width": args.base_width,
                                 "num_classes": 6})
    path_samples, channel_fraction = MODES[mode]
    half = path_samples < 0  # the alternative measured for the docstring: half of each cell's connections
    assert isinstance(space, DCNASSpace)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net = DCNASSupernet(space, max(path_samples, 0), channel_fraction)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.input_size, args.input_size)
    y = torch.randint(0, 6, (args.batch, args.input_size, args.input_size))
    y[:, :2] = IGNORE
    times, saved = [], []
    for step in range(args.steps + 1):
        paths = net.sample_paths(torch.Generator().manual_seed(step))
        if half:
            g = torch.Generator().manual_seed(step)
            paths = PathSample({c: sorted(torch.randperm(len(k), generator=g)[: -(-len(k) // 2)].tolist())
                                for c, k in paths.kept.items()})
        stored: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            stored[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(net(x, paths), y, ignore_index=IGNORE)
        saved.append(sum(stored.values()) / 2**20)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"step_s": statistics.median(times[1:]), "peak_mb": (peak - base) / 1024, "saved_mb": statistics.median(saved[1:]),
            "cells": len(net.cells),
            "connections": len(net.beta)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--base-width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(one_mode(args.mode, args)))
        return
    results = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--mode", mode, *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "mode"]]

        def run(env: dict[str, str]) -> dict[str, float]:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env}).stdout
            return dict(json.loads(out.strip().splitlines()[-1]))

        results[mode] = {**run(LIVE_RSS), "step_s": run({})["step_s"]}
    full = results["full"]
    print(f"DCNAS supernet, {args.input_size}x{args.input_size}, {args.layers} layers, widths {args.base_width}x2^s, "
          f"{full['cells']} cells, {full['connections']} connections, batch {args.batch}, {args.threads} threads, weight step")
    print("  saved: activations autograd keeps for the backward pass; peak: max resident size above the process before the\n"
          "  supernet existed (weights, gradients, momentum, batch, activations)")
    print(f"  {'mode (paths per cell, channels)':<34}{'step':>9}{'saved':>10}{'peak':>9}   vs full: time, saved, peak")
    for mode, r in results.items():
        p, c = MODES[mode]
        paths = {0: "all", -1: "half"}.get(p, str(p))
        print(f"  {f'{mode} ({paths}, {c:g})':<34}{r['step_s']:>7.2f} s{r['saved_mb']:>7.0f} MB{r['peak_mb']:>6.0f} MB"
              f"   {full['step_s'] / r['step_s']:.1f}x, {full['saved_mb'] / r['saved_mb']:.1f}x, {full['peak_mb'] / max(r['peak_mb'], 1):.1f}x")
    print("  targets: path + channel sampling >= 4x lower peak memory than full, and a faster step")


if __name__ == "__main__":
    main()
