"""The real inputs an export is checked on: samples of the dataset the network was trained on,
or image files the user names. Random tensors would hide errors that only show on real
activations (a saturated ReLU6, a near-tie between two classes), so they are never used here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sized, cast

import numpy as np

from nas2deploy.nets import Network
from nas2deploy.data import builtin_data_for, open_dataset
from nas2deploy.data.folders import IMAGE_SUFFIXES
from nas2deploy.data.transforms import classification_eval
from nas2deploy.errors import UserError


def accuracy_inputs(arch: Network, data: str | None, images: str | None, count: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``count`` inputs of shape (count, 3, H, W), their labels (class indices, or masks for
    segmentation; None for image files) and a description of where they came from.

    ``images`` (a folder of image files, or one file) wins over ``data``; without either, the
    data the architecture was searched on (its ``meta.data``) is used.
    """
    if images:
        return _image_files(Path(images), arch.input_size, count), None, f"image files in {images}"
    spec = data or arch.meta.get("data")
    if not spec:
        builtin = builtin_data_for(arch)
        data_hint = f"--data {builtin} (the built-in set it can take), " if builtin else \
            f"--data with its own data ({arch.num_classes} classes; no built-in set has them), "
        raise UserError(f"arch {arch.name}: no data to check accuracy on; give {data_hint}or --images DIR (image files)")
    splits = open_dataset(str(spec), arch.input_size, fit=arch)
    n = min(count, len(cast(Sized, splits.test)))
    x = np.stack([np.asarray(splits.test[i][0], dtype=np.float32) for i in range(n)])
    labels = np.stack([np.asarray(splits.test[i][1], dtype=np.int64) for i in range(n)])
    return x, labels, f"the first {n} test images of {spec}"


def _image_files(path: Path, size: int, count: int) -> np.ndarray:
    if not path.exists():
        raise UserError(f"--images {path}: no such file or folder")
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise UserError(f"--images {path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    # as a network trained on an ImageFolder sees an image in evaluation
    return np.stack([classification_eval(f, size) for f in files[:count]])


def calibration_images(arch: Network, data: str | None, count: int, batch: int) -> np.ndarray:
    """``count`` images of the training split of ``data`` to calibrate an int8 quantisation:
    the data the network was trained on, never the test images its accuracy is checked on; too
    few, or data of another size or kind, is refused before any work."""
    from nas2deploy.backends.quantize import MIN_CALIBRATION_IMAGES

    if data is None:
        raise UserError("--precision int8 quantises on real images: give --calibration-data")
    need = max(MIN_CALIBRATION_IMAGES, batch)
    if count < need:
        raise UserError(f"--calibration-images {count}: the activations' ranges need at least {need} images")
    splits = open_dataset(data, arch.input_size, fit=arch)
    available = len(cast(Sized, splits.train))
    if available < count:
        raise UserError(f"--calibration-data {data}: {available} training images, fewer than --calibration-images "
                        f"{count}: give more data or fewer images")
    return np.stack([np.asarray(splits.train[i][0], dtype=np.float32) for i in range(count)])
