"""Networks trained with several seeds and scored on the test split, journaled so that a killed
comparison resumes (``benchmarks/search_vs_random.py``, ``benchmarks/architecture_spread.py``).

Each finished training appends one JSON line to ``scores.jsonl`` in the benchmark's folder, keyed
by the network's body (its JSON without name and meta), the training recipe, the data and the
seed; a rerun with the same recipe reuses every line it finds and trains only what is missing. A
line cut short by a kill is skipped. One writer: the comparison holds ``scores.jsonl.lock``.

The test split can be larger than the data spec's (``test_images``): the spread of one network's
score over seeds includes the sampling error of the test set (about 1.1 points of top-1 at 85%
with 1000 images, 0.6 with 4000), which a comparison asking whether seeds drown architecture
should not add. The optimiser, batch and learning rate stay the demo's; the data and epochs are
``benchmark_training``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nas2deploy.data import Splits, open_dataset
from nas2deploy.data.splits import Part
from nas2deploy.data.synthetic import RADIUS, shapes_splits
from nas2deploy.fileio import append_line
from nas2deploy.nets import Network
from nas2deploy.spaces.entry import DemoPlan
from nas2deploy.train import train_arch


#: The data and epochs a comparison trains with where ``--data`` is not given: the harder variant
#: of a space's built-in set where there is one (on ``synthetic`` every network of a window reaches
#: 94-96%), drawn large and seen once. Measured on two networks of one window, 3 seeds each, the
#: same 500 steps: 4,000 images seen 8 times gave seed stds of 5.7 and 3.9 points (means 0.792,
#: 0.736); 32,000 images seen once 1.1 and 2.6 points (means 0.845, 0.826). Repeated images let
#: each seed overfit its own way; fresh ones do not (the shapes are rendered, so they are free).
HARDER = {"synthetic": ("synthetic-small:32000", 1)}


def benchmark_training(plan: DemoPlan, data: str, epochs: int) -> tuple[str, int]:
    """(data spec, epochs) of a comparison: ``data`` and ``epochs`` where given (0: not given);
    otherwise the ``HARDER`` variant of the plan's data and its epochs, or the plan's own."""
    if data:
        return data, epochs or plan.train_epochs
    spec, default_epochs = HARDER.get(plan.data, (plan.data, plan.train_epochs))
    return spec, epochs or default_epochs


def benchmark_data(spec: str, image_size: int, test_images: int, train_images: int = 0) -> Splits:
    """``open_dataset(spec)``, the built-in classes with their test split enlarged to
    ``test_images`` (0: the spec's own; its images are the first of the larger split); other
    data keeps its own test split. ``train_images`` (0: all) keeps a seeded subset of the
    training images (a real set's comparison sized to a CPU's hours; the name says so)."""
    if test_images and spec.partition(":")[0] in RADIUS:
        data = dataclasses.replace(shapes_splits(spec, image_size, test_images), name=f"{spec}+test{test_images}")
    else:
        data = open_dataset(spec, image_size)
    if train_images and train_images < len(data.train):  # type: ignore[arg-type]
        keep = sorted(torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:train_images].tolist())  # type: ignore[arg-type]
        data = dataclasses.replace(data, train=Part(data.train, keep), name=f"{data.name}+train{train_images}")
    return data


def network_body(arch: dict[str, Any]) -> str:
    """A network's JSON without its name and meta: what makes two networks the same."""
    return json.dumps({k: v for k, v in arch.items() if k not in ("name", "meta")}, sort_keys=True)


@dataclass
class Recipe:
    """The training every network of a comparison gets (the demo's, except for the epochs)."""

    epochs: int
    batch_size: int
    lr: float
    lr_warmup: float = 0.1  # train_arch's ramp (a changed ramp retrains every network: it is in the key)
    channels_last: bool = True  # 1.6x faster on the development CPU (depthwise convolutions); same maths
    device: str = "cpu"

    def key(self, arch: Network, data: Splits, seed: int) -> str:
        recipe = f"{self.epochs}/{self.batch_size}/{self.lr}/{data.name}/{seed}" + (f"/w{self.lr_warmup}" if self.lr_warmup else "")
        return hashlib.sha256(f"{network_body(arch.to_dict())}|{recipe}".encode()).hexdigest()[:20]


#: Where a worker process keeps the data it trains on (opened once per process, by ``_open``).
_WORKER_DATA: dict[str, Splits] = {}


def _open(source: tuple[Any, ...], parent: int) -> None:
    torch.set_num_threads(1)
    _exit_with(parent)
    _WORKER_DATA["data"] = benchmark_data(*source)


def _exit_with(parent: int) -> None:
    """A pool's workers stop only when their parent shuts the pool down: after a kill they would
    train on for minutes, beside the benchmark run again to resume, and slow its trainings and
    disturb its latency measurements. Each worker checks every second that its parent lives
    (a dead parent's children are handed to another process) and exits when it does not."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def train_score(arch: Network, data: Splits, seed: int, recipe: Recipe) -> float:
    """The test score of ``arch`` trained on ``data`` with ``recipe`` and ``seed``."""
    r = recipe
    return train_arch(arch, data, r.epochs, batch_size=r.batch_size, lr=r.lr, seed=seed, device=r.device,
                      channels_last=r.channels_last, lr_warmup=r.lr_warmup)[1]


def _train(arch: Network, seed: int, recipe: Recipe) -> float:
    return train_score(arch, _WORKER_DATA["data"], seed, recipe)


class ScoreJournal:
    """Test scores of (network, recipe, seed), read from and appended to ``path``.

    ``fill`` trains what is missing in ``jobs`` processes of one thread each, each opening the
    data from ``source`` (the arguments of ``benchmark_data``) once: the small networks of these
    comparisons use a second thread poorly, so two one-thread trainings side by side finish
    sooner than two two-thread trainings one after the other (``benchmarks/training_speed.py``
    measures it). The parent is the journal's one writer."""

    def __init__(self, path: Path, data: Splits, recipe: Recipe, source: tuple[Any, ...] | None = None):
        self.path, self.data, self.recipe, self.source = path, data, recipe, source
        self.known: dict[str, float] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    score = float(row["score"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill, or not ours
                if 0.0 <= score <= 1.0:
                    self.known[str(row["key"])] = score

    def fill(self, archs: list[Network], seeds: int, jobs: int, say: Callable[[str], None] = print) -> None:
        """Train every (network, seed) not journaled yet, ``jobs`` at a time (1: in this process)."""
        pairs = {self.recipe.key(a, self.data, s): (a, s) for a in archs for s in range(seeds)}  # one per body
        todo = [(key, pair) for key, pair in pairs.items() if key not in self.known]
        if jobs <= 1 or len(todo) <= 1 or self.source is None:
            for arch in archs:
                self.scores(arch, seeds)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), initializer=_open,
                                 initargs=(self.source, os.getpid())) as pool:
            running = {pool.submit(_train, arch, seed, self.recipe): (key, arch, seed) for key, (arch, seed) in todo}
            for n, done in enumerate(as_completed(running), 1):
                key, arch, seed = running[done]
                self.record(key, arch, seed, done.result())
                say(f"    trained {n}/{len(todo)}: {arch.name} seed {seed}: {self.known[key]:.3f}")

    def record(self, key: str, arch: Network, seed: int, score: float) -> None:
        append_line(self.path, json.dumps({"key": key, "name": arch.name, "seed": seed, "score": score}))
        self.known[key] = score

    def scores(self, arch: Network, seeds: int) -> list[float]:
        """The network's test score for seeds 0..seeds-1, training those not journaled yet."""
        out = []
        for seed in range(seeds):
            key = self.recipe.key(arch, self.data, seed)
            if key not in self.known:
                self.record(key, arch, seed, train_score(arch, self.data, seed, self.recipe))
            out.append(self.known[key])
        return out


def spread(scores: list[float]) -> tuple[float, float]:
    """(mean, sample std; 0 for one seed)."""
    return statistics.mean(scores), statistics.stdev(scores) if len(scores) > 1 else 0.0


def pooled_std(rows: list[dict[str, Any]]) -> float:
    """The root mean square of the rows' seed stds: one network's typical seed spread."""
    return float(statistics.mean(r["std"] ** 2 for r in rows) ** 0.5) if rows else 0.0
