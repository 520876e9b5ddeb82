"""The train / test pair every loader returns, and the search's train / validation split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from nas2deploy.errors import UserError
from nas2deploy.nets import Network


#: What to do about data a network cannot take, where the network is fixed (its weights were
#: trained for its input size and classes).
FIT_FIX = "give the data it was trained on"


@dataclass
class Splits:
    train: Dataset
    test: Dataset
    num_classes: int
    image_size: int
    name: str
    task: str = "classification"  # or "segmentation": samples are (image, mask), 255 = ignore

    def require_fit(self, arch: Network, fix: str = FIT_FIX) -> None:
        """Refuse data a network cannot take: another task, class count or input size."""
        require_fit(arch, self.name, self.task, self.num_classes, self.image_size, fix)


def require_fit(arch: Network, name: str, task: str, num_classes: int, image_size: int, fix: str = FIT_FIX) -> None:
    """Refuse data (described by its task, classes and image size) that ``arch`` cannot take;
    ``fix`` says what to do (the caller knows: give other data, or adapt the network)."""
    if task != arch.task:
        raise UserError(f"arch {arch.name} is a {arch.task} network, data {name} is {task} data")
    _, height, width = arch.input_shape
    if num_classes != arch.num_classes or (image_size, image_size) != (height, width):
        size = f"{height}px" if height == width else f"{height}x{width}"
        raise UserError(
            f"arch {arch.name} expects {size} inputs and {arch.num_classes} classes, data {name} "
            f"has {image_size}px images and {num_classes} classes; {fix.format(size=image_size, classes=num_classes)}"
        )


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of n training samples: weights train on one part, architecture on the other
    (DenseNAS: 80% / 20%)."""
    if n < 2:
        raise UserError("the training data needs at least 2 samples to split into train and validation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return order[n_val:], order[:n_val]


class Part(Subset):
    """Some of a dataset's samples that keep its training draws (``get(i, draw)``, which the
    batch loader augments through) beside its evaluation view (``part[i]``)."""

    def get(self, i: int, draw: int) -> Any:
        get = getattr(self.dataset, "get", None)
        return get(self.indices[i], draw) if get is not None else self.dataset[self.indices[i]]


def split_train_val(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Part, Part]:
    """``split_indices`` as two parts of ``dataset``."""
    train, val = split_indices(len(dataset), val_fraction, seed)  # type: ignore[arg-type]
    return Part(dataset, train), Part(dataset, val)


def validation_splits(data: Splits, val_fraction: float, seed: int) -> Splits:
    """``data`` as a search that chooses by score must see it: the training images split
    (``split_indices``) into what trains and a validation part that takes the place of the test
    split, so that the test images are scored only for the final networks."""
    train, val = split_train_val(data.train, val_fraction, seed)
    return dataclasses.replace(data, train=train, test=val, name=f"{data.name}[validation {val_fraction:g}]")
