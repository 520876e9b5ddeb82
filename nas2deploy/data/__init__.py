"""Datasets: a built-in one generated in code, and loaders for real formats.

``open_dataset("synthetic")`` needs no download; a folder path is read as the CIFAR-10 binary
format when it holds ``data_batch_*.bin`` / ``test_batch.bin``, otherwise as an ImageFolder
(one sub-folder per class, optionally under ``train/`` and ``val/``).
"""

from __future__ import annotations

from pathlib import Path

from nas2deploy.data.splits import Splits, split_train_val
from nas2deploy.errors import UserError


def open_dataset(spec: str, image_size: int = 32) -> Splits:
    if spec == "synthetic":
        from nas2deploy.data.synthetic import ShapesDataset

        return Splits(ShapesDataset(4000, image_size, seed=0), ShapesDataset(1000, image_size, seed=1),
                      ShapesDataset.NUM_CLASSES, image_size, "synthetic")
    path = Path(spec)
    if not path.exists():
        raise UserError(f"data {spec}: no such folder; use 'synthetic' or a CIFAR-10 binary / ImageFolder folder")
    if not path.is_dir():
        raise UserError(f"data {spec}: not a folder; expected a CIFAR-10 binary folder or an ImageFolder tree")
    from nas2deploy.data.folders import open_cifar10, open_image_folder

    if list(path.glob("data_batch_*.bin")) or (path / "test_batch.bin").exists():
        return open_cifar10(path)
    return open_image_folder(path, image_size)


__all__ = ["Splits", "open_dataset", "split_train_val"]
