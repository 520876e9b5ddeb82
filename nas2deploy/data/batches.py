"""Seeded batches for a search: the same global batches on every rank, each rank its share,
decoded in worker processes.

``RankBatches`` draws the order of a pass as ``torch.randperm(n)`` from a generator seeded by the
caller (per epoch and pass), cuts it into whole global batches (a short last batch could leave a
rank or a micro-batch empty), keeps at most ``max_batches``, and yields rank r's rows r, r +
world, ... of each. The order is the one ``DataLoader(shuffle=True, generator=g)`` draws, so a
one-process run sees exactly the batches it always did.

Every index it yields carries the draw of its augmentation: ``Keyed`` hands ``(index, draw)``
to a dataset that augments (``get(index, draw)``: random crops and flips drawn from (draw,
index)), or reads ``dataset[index]`` (the evaluation view) when the draw is None. So the
augmentation is the same whatever the number of workers, and persistent workers, which keep their
copy of the dataset across epochs, still see each epoch's draw.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nas2deploy.errors import UserError


Key = tuple[int, "int | None"]


class RankBatches(Sampler[list[Key]]):
    """``whole=False`` keeps a short last batch (one process training a network, not a search)."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, max_batches: int = 0, whole: bool = True):
        if not whole and world != 1:
            raise ValueError("a short last batch cannot be shared between ranks")
        self.n, self.batch_size, self.rank, self.world, self.max_batches = n, batch_size, rank, world, max_batches
        self.whole = whole
        self.seed: int = 0
        self.draw: int | None = None

    def start(self, seed: int, draw: int | None) -> None:
        """The next pass's order (seeded by ``seed``) and its augmentation's draw (None: none)."""
        self.seed, self.draw = seed, draw

    def __len__(self) -> int:
        full = self.n // self.batch_size if self.whole else -(-self.n // self.batch_size)
        return min(full, self.max_batches) if self.max_batches else full

    def __iter__(self) -> Iterator[list[Key]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        for b in range(len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(i, self.draw) for i in batch[self.rank::self.world]]


class Keyed(Dataset):
    """A dataset (or a subset of one, by ``indices``) addressed by ``(index, draw)``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None = None):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Any:
        index, draw = key
        i = self.indices[index] if self.indices is not None else index
        get = getattr(self.dataset, "get", None)
        return get(i, draw) if get is not None and draw is not None else self.dataset[i]


def batch_loader(dataset: Dataset, indices: Sequence[int] | None, sampler: RankBatches, workers: int,
                 pin_memory: bool) -> DataLoader:
    """A DataLoader of ``sampler``'s batches, decoded by ``workers`` processes that persist across
    passes, into pinned memory when the batches go to a GPU."""
    return DataLoader(Keyed(dataset, indices), batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0)


def decoded(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches; a UserError met while decoding in a worker process (a bad file)
    arrives as its one line, where the DataLoader folds the worker's traceback into it."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except UserError as exc:
            if not loader.num_workers:
                raise
            lines = str(exc).strip().splitlines()
            last, marker = (lines[-1] if lines else ""), f"{UserError.__name__}: "
            raise UserError(last.split(marker, 1)[1] if marker in last else last) from None
        yield batch
