"""Loaders for real data on disk: the CIFAR-10 binary format and ImageFolder trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nas2deploy.data.splits import Splits, split_train_val
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


def load_image(path: Path, size: int) -> np.ndarray:
    """An image file as the network sees it: RGB, resized to size x size, (x - 0.5) / 0.25, CHW."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"data {path}: cannot read the image ({exc})") from None
    return ((arr - 0.5) / 0.25).transpose(2, 0, 1)


def _read_folder(root: Path, classes: list[str], size: int) -> TensorDataset:
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise UserError(f"data {root}: class folder {name}/ is missing")
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            images.append(load_image(f, size))
            labels.append(label)
    if not images:
        raise UserError(f"data {root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    return TensorDataset(torch.from_numpy(np.stack(images)), torch.tensor(labels))


def open_image_folder(path: Path, size: int) -> Splits:
    """``path/CLASS/*.png`` (then the test split is carved out of it by the caller's seed), or
    ``path/train/CLASS/...`` with ``path/val/CLASS/...``."""
    train: Dataset
    test: Dataset
    if (path / "train").is_dir():
        root = path / "train"
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not (path / "val").is_dir():
            raise UserError(f"data {path}: has train/ but no val/ folder")
        train, test = _read_folder(root, classes, size), _read_folder(path / "val", classes, size)
    else:
        classes = sorted(p.name for p in path.iterdir() if p.is_dir())
        if not classes:
            raise UserError(f"data {path}: unknown format: no class sub-folders, no CIFAR-10 *.bin batches")
        whole = _read_folder(path, classes, size)
        train, test = split_train_val(whole, 0.2, seed=0)
    return Splits(train, test, len(classes), size, f"imagefolder:{path}")
