"""Trainings side by side against one after the other (``--jobs`` of the comparisons).

``--networks`` random networks of the demo's DenseNAS space (the comparisons' tight window
does not matter here: any networks of the space), each trained with ``--seeds`` seeds on the
comparisons' recipe (``nas2deploy.evaluation.scores``: 32,000 images of ``synthetic-small`` seen once),
first one after the other in this process at two threads, then ``--jobs`` at a time in worker
processes of one thread each, in one run; prints both wall times and their ratio.

    .venv/bin/python benchmarks/training_jobs.py [--networks 2] [--seeds 1] [--jobs 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas2deploy.evaluation.scores import Recipe, ScoreJournal, benchmark_data, benchmark_training  # noqa: E402

from nas2deploy.demo import demo_entry, demo_search_config, demo_table  # noqa: E402
from nas2deploy.runs import space_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    entry = demo_entry("classification")
    assert entry.demo is not None
    with tempfile.TemporaryDirectory() as tmp:
        table = demo_table(entry, Path(tmp), lambda line: None)
        config = demo_search_config(entry, str(table.path), None)
        space = space_for(table, config.space, config.space_config)
        rng = random.Random(0)
        archs = [space.sample_arch(rng) for _ in range(args.networks)]
        spec, epochs = benchmark_training(entry.demo, "", 0)
        source = (spec, space.config_dict()["input_size"], 4000)
        data = benchmark_data(*source)
        recipe = Recipe(epochs, entry.demo.train_batch, entry.demo.train_lr)
        torch.set_num_threads(2)
        start = time.perf_counter()
        ScoreJournal(Path(tmp) / "one.jsonl", data, recipe, source).fill(archs, args.seeds, jobs=1)
        serial = time.perf_counter() - start
        start = time.perf_counter()
        ScoreJournal(Path(tmp) / "side.jsonl", data, recipe, source).fill(archs, args.seeds, args.jobs)
        side = time.perf_counter() - start
    n = args.networks * args.seeds
    print(f"{n} trainings ({recipe.epochs} epoch of {spec}): one after the other at 2 threads {serial:.0f} s, "
          f"{args.jobs} side by side at 1 thread {side:.0f} s (data opened once per worker included): "
          f"{serial / side:.2f}x", flush=True)


if __name__ == "__main__":
    main()
