"""A better sampler against random search on the DPC proxy (issue 15, item 5).

A backbone is trained first (the published cell end to end, ``--backbone-epochs``: a random
backbone's features leave every cell predicting background, so no sampler could show anything),
its features cached, then for each of ``--seeds`` seeds: a random-search study and a study of
each other sampler, the same number of trials on that cache (every cell within the budget), in
this process. Reported:
each study's best proxy mIoU, and for each other sampler the number of trials it needed to reach
the best cell random search found; target: at most half the trials (median over the seeds).

    .venv/bin/python benchmarks/dpc_samplers.py [--trials 24] [--seeds 3] [--samplers tpe] [--data seg-synthetic:200]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from nas2deploy.testing import random_table
from nas2deploy.data import open_dataset
from nas2deploy.nets import load_arch
from nas2deploy.nets.dpc import DPCNet
from nas2deploy.spaces import make_space
from nas2deploy.spaces.dpc.proxy import build_cache
from nas2deploy.spaces.dpc.space import DPCSpace
from nas2deploy.search.blackbox.study import open_study, run_trials
from nas2deploy.spaces.dpc.study import DPCCells, ProxyEvaluator
from nas2deploy.train import save_weights, train_arch



def best_so_far(study: object) -> list[float]:
    values = [t.value for t in sorted(study.trials, key=lambda t: t.number) if t.value is not None]  # type: ignore[attr-defined]
    out, best = [], float("-inf")
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samplers", default="tpe")
    ap.add_argument("--data", default="seg-synthetic:200")
    ap.add_argument("--backbone-epochs", type=int, default=6)
    ap.add_argument("--proxy-epochs", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = open_dataset(args.data, 128)
        space = make_space("dpc", {"input_size": 128, "input_width": 128, "num_classes": data.num_classes})
        assert isinstance(space, DPCSpace)
        table = random_table(space, 0)
        table.save(folder / "t.json")
        budget = space.latency_range(table)[1]
        published = load_arch("dpc-mnv2")
        assert isinstance(published, DPCNet)
        start = time.perf_counter()
        trained, score = train_arch(dataclasses.replace(published.at_input(128, 128), num_classes=data.num_classes),
                                    data, args.backbone_epochs, batch_size=8)
        save_weights(trained, folder / "w.pt")
        print(f"backbone: dpc-mnv2 trained end to end {args.backbone_epochs} epochs on {args.data} "
              f"(mIoU {score:.3f}, {time.perf_counter() - start:.0f} s)", flush=True)
        cache = build_cache(space.reference_net, folder / "w.pt", data, args.data, folder / "cache")
        proxy, cells = ProxyEvaluator(cache, data, str(folder / "w.pt"), args.proxy_epochs), DPCCells()
        needed: dict[str, list[int]] = {}
        for seed in range(args.seeds):
            curves = {}
            for k, sampler in enumerate(["random", *args.samplers.split(",")]):
                start = time.perf_counter()
                # each sampler its own seed: TPE starts with random trials, which with the same seed
                # would repeat random search's first cells and share its best
                study = open_study(space, table, proxy, budget, str(folder / f"{sampler}-{seed}.log"), "s", sampler,
                                   1000 * k + seed)
                run_trials(study, cells, space, table, proxy, budget, args.trials)
                curves[sampler] = best_so_far(study)
                print(f"seed {seed} {sampler:<7} best proxy mIoU {curves[sampler][-1]:.4f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
            target = curves["random"][-1]
            for sampler, curve in curves.items():
                if sampler != "random":
                    reached = next((i + 1 for i, v in enumerate(curve) if v >= target), args.trials + 1)
                    needed.setdefault(sampler, []).append(reached)
                    print(f"  {sampler} reached random search's best ({target:.4f}) in "
                          f"{reached if reached <= args.trials else 'more than ' + str(args.trials)} trials", flush=True)
        for sampler, counts in needed.items():
            print(f"{sampler}: median {statistics.median(counts)} trials to random search's best over {args.seeds} seeds "
                  f"(target <= {args.trials / 2:g})", flush=True)


if __name__ == "__main__":
    main()
