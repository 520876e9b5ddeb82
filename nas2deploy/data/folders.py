"""Loaders for real data on disk: the CIFAR-10 binary format (small: read into memory) and
ImageFolder trees (listed at open, decoded by the workers that batch them): ImageNet-sized ones
with the ImageNet recipe, and small ones (a network input below 128 px, such as CIFAR-10 as image
files) with the CIFAR recipe and the training images' own per-channel statistics
(``nas2deploy.data.transforms``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nas2deploy.data.splits import Splits, split_indices
from nas2deploy.data.transforms import IMAGENET, SMALL_INPUT, Stats, channel_stats, classification_eval, classification_train, draw_rng
from nas2deploy.errors import UserError

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}
RECORD = 1 + 3 * 32 * 32


class TensorDataset(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def _read_cifar(files: list[Path]) -> TensorDataset:
    images, labels = [], []
    for f in files:
        raw = np.fromfile(f, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD:
            raise UserError(f"data {f}: not a CIFAR-10 binary batch (size {raw.size} is not a multiple of {RECORD} bytes)")
        records = raw.reshape(-1, RECORD)
        if records[:, 0].max() > 9:
            raise UserError(f"data {f}: labels above 9; not a CIFAR-10 binary batch")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    x = (np.concatenate(images).astype(np.float32) / 255 - CIFAR_MEAN[:, None, None]) / CIFAR_STD[:, None, None]
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(np.concatenate(labels)))


def open_cifar10(path: Path) -> Splits:
    train = sorted(path.glob("data_batch_*.bin"))
    test = path / "test_batch.bin"
    if not train:
        raise UserError(f"data {path}: no data_batch_*.bin files (CIFAR-10 binary layout)")
    if not test.exists():
        raise UserError(f"data {path}: test_batch.bin is missing (CIFAR-10 binary layout)")
    return Splits(_read_cifar(train), _read_cifar([test]), 10, 32, f"cifar10:{path}")


class ImageFiles(Dataset):
    """Labelled image files, decoded when read: ``dataset[i]`` is the evaluation view,
    ``get(i, draw)`` a training draw (``nas2deploy.data.transforms``)."""

    def __init__(self, files: list[Path], labels: list[int], size: int, stats: Stats = IMAGENET):
        self.files, self.labels, self.size, self.stats = files, labels, size, stats

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(classification_eval(self.files[i], self.size, self.stats)), self.labels[i]

    def get(self, i: int, draw: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(classification_train(self.files[i], self.size, draw_rng(i, draw), self.stats)), self.labels[i]


def _list_folder(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise UserError(f"data {root}: class folder {name}/ is missing")
        found = [f for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise UserError(f"data {folder}: a class folder with no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            "an ImageFolder holds one folder of images per class")
        files += found
        labels += [label] * len(found)
    return files, labels


def _class_subset(path: Path, classes: list[str], count: int) -> list[str]:
    """The first ``count`` classes in sorted order (DenseNAS's ImageNet-100: the first 100 synsets)."""
    if count > len(classes):
        raise UserError(f"--data-classes {count}: data {path} has only {len(classes)} classes")
    return classes[:count] if count else classes


#: Training images whose statistics normalise a small-image folder (a seeded sample of them).
STATS_SAMPLE = 1000


def open_image_folder(path: Path, size: int, class_count: int = 0) -> Splits:
    """``path/CLASS/*.png`` (then a seeded 20% of it is the test split), or
    ``path/train/CLASS/...`` with ``path/val/CLASS/...`` or ``path/test/CLASS/...`` (CIFAR-10's
    image files); ``class_count`` keeps the first classes. Below ``SMALL_INPUT`` px the images are
    normalised by the statistics of up to ``STATS_SAMPLE`` training images (a seeded sample)."""
    if (path / "train").is_dir():
        root = path / "train"
        classes = _class_subset(path, sorted(p.name for p in root.iterdir() if p.is_dir()), class_count)
        held_out = next((path / name for name in ("val", "test") if (path / name).is_dir()), None)
        if held_out is None:
            raise UserError(f"data {path}: has train/ but no val/ or test/ folder (the held-out images, one folder "
                            "per class as in train/)")
        train, test = _list_folder(root, classes), _list_folder(held_out, classes)
    else:
        classes = _class_subset(path, sorted(p.name for p in path.iterdir() if p.is_dir()), class_count)
        if not classes:
            raise UserError(f"data {path}: unknown format: no class sub-folders, no CIFAR-10 *.bin batches")
        files, labels = _list_folder(path, classes)
        keep, held = split_indices(len(files), 0.2, seed=0)
        train = [files[i] for i in keep], [labels[i] for i in keep]
        test = [files[i] for i in held], [labels[i] for i in held]
    stats = IMAGENET
    if size < SMALL_INPUT:
        sample = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE].tolist()
        stats = channel_stats([train[0][i] for i in sorted(sample)], size)
    return Splits(ImageFiles(*train, size, stats), ImageFiles(*test, size, stats), len(classes), size, f"imagefolder:{path}")
