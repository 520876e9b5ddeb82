"""Datasets: a built-in one generated in code, and loaders for real formats.

``open_dataset("synthetic")`` needs no download (``synthetic:N`` makes N training images
instead of 4000, and N/4 test images; ``synthetic-small`` the same classes as smaller shapes, a
harder set); a folder path is read as the CIFAR-10 binary
format when it holds ``data_batch_*.bin`` / ``test_batch.bin``, otherwise as an ImageFolder
(one sub-folder per class, optionally under ``train/`` and ``val/`` or ``test/``: CIFAR-10 as
image files), decoded lazily with the ImageNet or, below 128 px, the CIFAR transforms
(``nas2deploy.data.transforms``).

Segmentation: ``seg-synthetic`` (``seg-synthetic:N``) is the built-in scene dataset; a folder
with ``leftImg8bit/`` + ``gtFine/`` is read as Cityscapes, one with ``JPEGImages/`` +
``SegmentationClass/`` as PASCAL VOC, one with ``trainannot/`` (SegNet's layout) as CamVid
(``nas2deploy.data.segmentation``). A command that knows its task (a search's space, a
network's) refuses a folder of the other task's layout, naming the layouts it reads.
"""

from __future__ import annotations

from pathlib import Path

from nas2deploy.data.segmentation import SegShapesDataset, open_camvid, open_cityscapes, open_voc, synthetic_segmentation
from nas2deploy.data.splits import FIT_FIX, Splits, require_fit, split_train_val
from nas2deploy.data.synthetic import RADIUS, ShapesDataset, shapes_splits
from nas2deploy.nets import Network
from nas2deploy.errors import UserError


def open_dataset(spec: str, image_size: int = 32, classes: int = 0, crop: tuple[int, int] | None = None,
                 fit: Network | None = None, task: str | None = None, fix: str = FIT_FIX) -> Splits:
    """The dataset ``spec`` at ``image_size``; ``classes`` keeps the first classes of an
    ImageFolder (0: all), ``crop`` is the (height, width) of segmentation training crops from
    Cityscapes, VOC or CamVid folders (None: the input size, square). Options the data cannot
    use, a folder of another ``task`` (or of network ``fit``'s task) than the one asked for, and
    built-in data that network ``fit`` cannot take, are refused before anything is read or
    generated (rendering 224 px shapes takes half a minute); a folder ``fit`` cannot take (its
    classes, its size) as soon as it is open. Either refusal says ``fix``."""
    kind = _kind(spec)
    wanted = task or (fit.task if fit is not None else None)
    if wanted is not None and TASKS[kind] != wanted:
        raise UserError(f"data {spec} is {TASKS[kind]} data ({KINDS[kind]}), not {wanted} data; {wanted} data is "
                        f"{LAYOUTS[wanted]}")
    if classes and kind != "imagefolder":
        raise UserError(f"--data-classes {classes}: only an ImageFolder tree has classes to choose; data {spec} does not")
    if crop and (TASKS[kind] != "segmentation" or kind == "seg-synthetic"):
        raise UserError(f"--crop {crop[0]}x{crop[1]}: only Cityscapes, VOC and CamVid folders are cropped; data {spec} is "
                        "not one")
    if fit is not None and kind in BUILTIN_CLASSES:
        require_fit(fit, spec, *BUILTIN_CLASSES[kind], image_size, fix)
    if kind == "shapes":
        return shapes_splits(spec, image_size)
    if kind == "seg-synthetic":
        count = spec.partition(":")[2] or "800"
        if not count.isdigit() or int(count) < 4:
            raise UserError(f"data {spec}: expected 'seg-synthetic' or 'seg-synthetic:N' with N >= 4 training images")
        return synthetic_segmentation(int(count), image_size)
    splits = _open_folder(kind, Path(spec), image_size, classes, crop)
    if fit is not None:  # a folder's classes and size are known once it is open
        splits.require_fit(fit, fix)
    return splits


def _open_folder(kind: str, path: Path, image_size: int, classes: int, crop: tuple[int, int] | None) -> Splits:
    from nas2deploy.data.folders import open_cifar10, open_image_folder

    if kind == "cityscapes":
        return open_cityscapes(path, image_size, crop)
    if kind == "voc":
        return open_voc(path, image_size, crop)
    if kind == "camvid":
        return open_camvid(path, image_size, crop)
    if kind == "cifar10":
        return open_cifar10(path)
    return open_image_folder(path, image_size, classes)


#: The task of each kind of data, what it is called, and a task's layouts as a user is told them.
TASKS = {"shapes": "classification", "cifar10": "classification", "imagefolder": "classification",
         "seg-synthetic": "segmentation", "cityscapes": "segmentation", "voc": "segmentation", "camvid": "segmentation"}
KINDS = {"shapes": "the built-in shapes", "cifar10": "a CIFAR-10 binary folder", "imagefolder": "read as an ImageFolder",
         "seg-synthetic": "the built-in scenes", "cityscapes": "a Cityscapes folder", "voc": "a PASCAL VOC folder",
         "camvid": "a CamVid folder"}
LAYOUTS = {"classification": "'synthetic', a CIFAR-10 binary folder (data_batch_*.bin) or an ImageFolder "
                             "(a folder of images per class, or train/ with val/ or test/ holding them)",
           "segmentation": "'seg-synthetic', a Cityscapes folder (leftImg8bit/, gtFine/), a PASCAL VOC folder "
                           "(JPEGImages/, SegmentationClass/) or a CamVid folder (train/, trainannot/, val/, valannot/, "
                           "test/, testannot/)"}
#: The built-in data kinds: (task, classes), known without generating them.
BUILTIN_CLASSES = {"shapes": ("classification", ShapesDataset.NUM_CLASSES),
                   "seg-synthetic": ("segmentation", SegShapesDataset.NUM_CLASSES)}


def builtin_data_for(arch: Network) -> str | None:
    """The built-in data set ``arch`` can take (its task and class count), if any."""
    for kind, spec in (("shapes", "synthetic"), ("seg-synthetic", "seg-synthetic")):
        if BUILTIN_CLASSES[kind] == (arch.task, arch.num_classes):
            return spec
    return None


def _kind(spec: str) -> str:
    """Which loader ``spec`` names, from its name or its folder's layout, without reading it."""
    if spec.partition(":")[0] in RADIUS:
        return "shapes"
    if spec == "seg-synthetic" or spec.startswith("seg-synthetic:"):
        return "seg-synthetic"
    path = Path(spec)
    if not path.exists():
        raise UserError(f"data {spec}: no such folder; use 'synthetic' or a CIFAR-10 binary / ImageFolder folder")
    if not path.is_dir():
        raise UserError(f"data {spec}: not a folder; expected a CIFAR-10 binary folder or an ImageFolder tree")
    if (path / "leftImg8bit").exists() or (path / "gtFine").exists():
        return "cityscapes"
    if (path / "JPEGImages").exists() or (path / "SegmentationClass").exists():
        return "voc"
    if any((path / f"{split}annot").exists() for split in ("train", "val", "test")):
        return "camvid"
    if list(path.glob("data_batch_*.bin")) or (path / "test_batch.bin").exists():
        return "cifar10"
    return "imagefolder"


__all__ = ["Splits", "open_dataset", "split_train_val"]
