"""Several workers on one DPC study (issue 15, item 5), through the command line, one thread each.

1. One worker runs a ``--trials`` study alone; two workers started on one journal file run a
   study of the same size: the two wall times and their ratio (target: at most 0.6).
2. Two workers again, one killed with SIGKILL a third of the way in and a replacement started:
   the study must end with exactly ``--trials`` trials, each complete, pruned or failed (the
   killed worker's one), none running and none lost.

Each worker has its own ``--out`` (one writer per output: its cache and best.json); the budget
is the table's slowest cell, so every trial trains (pruned trials cost nothing and would flatter
the speed-up).

    .venv/bin/python benchmarks/dpc_workers.py [--trials 40] [--proxy-epochs 4]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nas2deploy.testing import random_table
from nas2deploy.data import open_dataset
from nas2deploy.spaces import make_space
from nas2deploy.spaces.dpc.space import DPCSpace
from nas2deploy.train import save_weights

DATA = "seg-synthetic:32"


def worker(folder: Path, storage: Path, name: str, out: str, trials: int, epochs: int, budget: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas2deploy", "--quiet", "search", "--space", "dpc", "--lut",
                             str(folder / "t.json"), "--weights", str(folder / "w.pt"), "--data", DATA, "--budget-ms",
                             str(budget), "--trials", str(trials), "--proxy-epochs", str(epochs), "--storage", str(storage),
                             "--study", name, "--out", str(folder / out), "--json"], env=env, stdout=subprocess.DEVNULL)


def states(storage: Path, name: str) -> dict[str, int]:
    import optuna

    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))))
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--proxy-epochs", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = open_dataset(DATA, 128)
        space = make_space("dpc", {"input_size": 128, "input_width": 128, "num_classes": data.num_classes})
        assert isinstance(space, DPCSpace)
        table = random_table(space, 0)
        table.save(folder / "t.json")
        budget = space.latency_range(table)[1]
        torch.manual_seed(0)
        save_weights(space.backbone.build(), folder / "w.pt")
        walls = {}
        for n in (1, 2):
            start = time.perf_counter()
            procs = [worker(folder, folder / f"j{n}.log", f"s{n}", f"w{n}-{i}", args.trials, args.proxy_epochs, budget)
                     for i in range(n)]
            codes = [p.wait() for p in procs]
            walls[n] = time.perf_counter() - start
            print(f"{n} worker(s): {args.trials}-trial study in {walls[n]:.1f} s, exit codes {codes}, "
                  f"trials {states(folder / f'j{n}.log', f's{n}')}", flush=True)
        print(f"two workers / one: {walls[2] / walls[1]:.2f} of the wall time (target <= 0.6)", flush=True)
        procs = [worker(folder, folder / "k.log", "k", f"k-{i}", args.trials, args.proxy_epochs, budget) for i in range(2)]
        time.sleep(walls[2] / 3)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        print(f"killed a worker after {walls[2] / 3:.0f} s: trials then {states(folder / 'k.log', 'k')}", flush=True)
        replacement = worker(folder, folder / "k.log", "k", "k-2", args.trials, args.proxy_epochs, budget)
        codes = [procs[1].wait(), replacement.wait()]
        final = states(folder / "k.log", "k")
        print(f"after the replacement finished (exit codes {codes}): {final}; {sum(final.values())} trials in all, "
              f"{final.get('RUNNING', 0)} running (target: {args.trials} in all, none running)", flush=True)


if __name__ == "__main__":
    random.seed(0)
    main()
