"""The DPC proxy's speed, and (with ``--fidelity K``) how well it ranks cells (issue 15, item 4).

1. **Speed**: the frozen backbone's features of the training and validation data cached once
   (timed), then one cell trained ``--epochs`` epochs on the cache (``train_cell``, early
   stopping off; the loss at full resolution and at the logits' resolution, the default)
   against the same network trained end to end for as many epochs (``train_arch``: backbone
   and cell) on the same data, in one run.
2. **Fidelity** (``--fidelity K``): K random cells of the dpc space scored by the proxy and by
   end-to-end training; Spearman's rho between the two rankings (the paper: 0.47). End to end
   means, by default, what the search's re-ranking does and the paper did (``--e2e pretrained``):
   the whole network fine-tuned from the pretrained backbone the features came from, the cell
   from scratch (``selection.pretrained``, the re-ranking's batch and learning rate);
   ``--e2e scratch`` trains every layer from scratch at ``train``'s learning rate.

    .venv/bin/python benchmarks/dpc_proxy.py [--size 128] [--data seg-synthetic:200] [--epochs 4] [--fidelity 10] [--e2e scratch]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nas2deploy.data import open_dataset
from nas2deploy.nets import load_arch
from nas2deploy.nets.dpc import DPCNet
from nas2deploy.spaces import make_space
from nas2deploy.spaces.dpc.proxy import build_cache, train_cell
from nas2deploy.spaces.dpc.study import RERANK_BATCH, RERANK_LR, pretrained
from nas2deploy.spaces.dpc.space import DPCSpace
from nas2deploy.train import save_weights, train_arch


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--data", default="seg-synthetic:200")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--fidelity", type=int, default=0, help="random cells ranked by both (0: speed only)")
    ap.add_argument("--e2e", choices=("pretrained", "scratch"), default="pretrained",
                    help="end-to-end training of the fidelity cells: from the pretrained backbone, or from scratch")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = open_dataset(args.data, args.size)
    published = load_arch("dpc-mnv2")
    assert isinstance(published, DPCNet)
    net = dataclasses.replace(published.at_input(args.size, args.size), num_classes=data.num_classes, name=f"dpc-mnv2-{args.size}")
    with tempfile.TemporaryDirectory() as tmp:
        # The backbone's weights: the end-to-end training of the published cell, as a user's
        # pretrained backbone (the paper's was pretrained on COCO).
        t0 = time.perf_counter()
        model, score = train_arch(net, data, args.epochs, batch_size=args.batch)
        e2e_s = time.perf_counter() - t0
        save_weights(model, Path(tmp) / "w.pt")
        print(f"end to end: {net.name}, {args.epochs} epochs on {args.data} at {args.size} px, batch {args.batch}: "
              f"{e2e_s:.1f} s (mIoU {score:.3f})", flush=True)
        t0 = time.perf_counter()
        cache = build_cache(net, Path(tmp) / "w.pt", data, args.data, Path(tmp) / "cache", batch_size=args.batch)
        cache_s = time.perf_counter() - t0
        print(f"feature cache: {cache_s:.1f} s once", flush=True)
        for full in (True, False):
            proxy = train_cell(net, cache, epochs=args.epochs, batch_size=args.batch, patience=args.epochs, full_resolution=full)
            print(f"proxy trial, loss at {'full' if full else 'the logits'} resolution: {proxy.seconds:.1f} s for "
                  f"{proxy.epochs} epochs (mIoU {proxy.miou:.3f}): {e2e_s / proxy.seconds:.1f}x faster than end to end "
                  f"({e2e_s / (proxy.seconds + cache_s):.1f}x with the cache's cost on one trial)", flush=True)
        if args.fidelity:
            space = make_space("dpc", {"input_size": max(128, args.size), "input_width": max(128, args.size),
                                       "num_classes": data.num_classes})
            assert isinstance(space, DPCSpace)
            rng = random.Random(0)
            proxy_scores, e2e_scores = [], []
            for i in range(args.fidelity):
                cell = space.sample_cell(rng)
                candidate = DPCNet(args.size, args.size, data.num_classes, net.backbone, cell, net.filters, f"cell-{i}")
                p = train_cell(candidate, cache, epochs=args.epochs, batch_size=args.batch).miou
                if args.e2e == "pretrained":
                    _, e = train_arch(candidate, data, args.epochs, RERANK_BATCH, RERANK_LR, seed=i,
                                      initial=pretrained(candidate, Path(tmp) / "w.pt"))
                else:
                    _, e = train_arch(candidate, data, args.epochs, batch_size=args.batch)
                proxy_scores.append(p)
                e2e_scores.append(e)
                print(f"  cell {i}: proxy mIoU {p:.3f}, end to end {e:.3f}", flush=True)
            print(f"fidelity: Spearman rho {spearman(proxy_scores, e2e_scores):.2f} over {args.fidelity} cells "
                  f"(end to end: {args.e2e})", flush=True)


if __name__ == "__main__":
    main()
