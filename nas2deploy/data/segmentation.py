"""Segmentation data: a built-in dataset generated in code, and the Cityscapes, PASCAL VOC and
CamVid layouts (the metrics, mIoU and pixel accuracy, are in ``nas2deploy.objective``).

Built-in (``seg-synthetic`` / ``seg-synthetic:N``): 1-3 objects per image, each one of five
shapes (the classes 1-5; 0 is background) at a random scale (8-45% of the image side), position
and rotation, filled with its own stripes and colours and painted over a striped, noisy
background; later objects occlude earlier ones. As in PASCAL VOC, a one-pixel band along every
object boundary is labelled 255 (ignored by the loss and the metrics). Small objects need high
resolution, large ones need context, so where a network keeps resolution and how far it looks
change the mIoU. Sample i is a pure function of (seed, i).

Every dataset yields ``(image, mask)``: a float (3, H, W) tensor and an int64 (H, W) mask. The
built-in data is normalised as the built-in classification data ((x - 0.5) / 0.25); Cityscapes,
VOC and CamVid files are decoded lazily, in the search's worker processes, with DeepLab's
scale-jitter random crops for training (``nas2deploy.data.transforms``).

CamVid (SegNet's 11-class split: ``train/``, ``val/``, ``test/`` frames with ``trainannot/``,
``valannot/``, ``testannot/`` label maps, 11 = void, ignored): the training images are ``train/``
and ``val/`` (468 frames; a search carves its architecture and validation splits out of them),
the test split is ``test/`` (233 frames). Networks take square inputs: a frame's shorter side is
scaled to the input size (192 for half resolution: 360 x 480 frames become 192 x 256) and
training draws scale jitter, square crops and flips; evaluation takes the centre square. Every
label map is read once when the folder is opened, so a label outside 0..11 or a missing map is
refused, naming the file, before any training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from nas2deploy.data.splits import Splits
from nas2deploy.data.synthetic import SHAPES, _shape_mask
from nas2deploy.data.transforms import draw_rng, image_size, read_labels, segmentation_pair
from nas2deploy.errors import UserError
from nas2deploy.objective import IGNORE

CITYSCAPES_CLASSES = 19
VOC_CLASSES = 21
CAMVID_CLASSES, CAMVID_VOID = 11, 11


def render_scene(index: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, index, 7])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg_freq, bg_theta = rng.uniform(1.0, 7.0), rng.uniform(0, np.pi)
    bg = 0.5 + 0.5 * np.sin(2 * np.pi * bg_freq * (x * np.cos(bg_theta) + y * np.sin(bg_theta)) + rng.uniform(0, 6.3))
    bg_a, bg_b = rng.uniform(0, 1, size=(2, 3))
    img = 0.5 * (bg_a[:, None, None] * bg + bg_b[:, None, None] * (1 - bg))
    label = np.zeros((size, size), dtype=np.int64)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, len(SHAPES)))
        r = rng.uniform(0.08, 0.45)
        cx, cy = rng.uniform(0.1, 0.9, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        mask = _shape_mask(kind, u, v, r)
        freq, theta = rng.uniform(1.5, 7.0), rng.uniform(0, np.pi)
        fg = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (u * np.cos(theta) + v * np.sin(theta)) / (2 * r))
        fg_a, fg_b = rng.uniform(0, 1, size=(2, 3))
        img = np.where(mask[None], fg_a[:, None, None] * fg + fg_b[:, None, None] * (1 - fg), img)
        label[mask] = kind + 1
    edge = np.zeros_like(label, dtype=bool)  # pixels whose 4-neighbourhood holds another class
    edge[1:] |= label[1:] != label[:-1]
    edge[:-1] |= label[1:] != label[:-1]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[:, :-1] |= label[:, 1:] != label[:, :-1]
    label[edge] = IGNORE
    img = img + rng.normal(0, 0.08, size=img.shape)
    return ((img - 0.5) / 0.25).astype(np.float32), label


class SegShapesDataset(Dataset):
    NUM_CLASSES = 1 + len(SHAPES)

    def __init__(self, length: int, size: int = 64, seed: int = 0):
        scenes = [render_scene(i, size, seed) for i in range(length)]
        self.images = torch.from_numpy(np.stack([s[0] for s in scenes]))
        self.masks = torch.from_numpy(np.stack([s[1] for s in scenes]))

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i]


class SegmentationFiles(Dataset):
    """(image, mask) file pairs decoded when read: ``dataset[i]`` is the evaluation view (scaled to
    the network's input size, centre crop), ``get(i, draw)`` a training draw (scale jitter, random
    crop, flip; ``nas2deploy.data.transforms``). Masks are checked as they are decoded."""

    def __init__(self, pairs: list[tuple[Path, Path]], size: int, crop: tuple[int, int], classes: int,
                 void: int | None = None):
        self.pairs, self.size, self.crop, self.classes, self.void = pairs, size, crop, classes, void

    def __len__(self) -> int:
        return len(self.pairs)

    def _pair(self, i: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = segmentation_pair(*self.pairs[i], self.size, self.crop, self.classes, rng, self.void)
        return torch.from_numpy(image), torch.from_numpy(mask)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pair(i, None)

    def get(self, i: int, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pair(i, draw_rng(i, draw))


def synthetic_segmentation(count: int, size: int) -> Splits:
    return Splits(SegShapesDataset(count, size, seed=0), SegShapesDataset(max(4, count // 4), size, seed=1),
                  SegShapesDataset.NUM_CLASSES, size, f"seg-synthetic:{count}", task="segmentation")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"data {path}: missing folder ({what})")
    return path


def _layout(root: Path, size: int, crop: tuple[int, int] | None, classes: int, name: str,
            find: Callable[[str], tuple[list[tuple[Path, Path]], str]]) -> Splits:
    """Train and val splits of a folder layout; ``find(split)`` gives its (image, mask) pairs and
    the error to raise when there are none. Training crops are ``crop`` (default: the input
    size, square); the test split is seen at the network's input size (``size`` x ``size``),
    as an export is checked."""
    splits = []
    for split, view in (("train", crop or (size, size)), ("val", (size, size))):
        pairs, empty = find(split)
        if not pairs:
            raise UserError(empty)
        splits.append(SegmentationFiles(pairs, size, view, classes))
    return Splits(splits[0], splits[1], classes, size, f"{name}:{root}", task="segmentation")


def open_cityscapes(root: Path, size: int, crop: tuple[int, int] | None = None) -> Splits:
    """``leftImg8bit/{train,val}/CITY/*_leftImg8bit.png`` with ``gtFine/{split}/CITY/*_gtFine_labelTrainIds.png``."""

    def find(split: str) -> tuple[list[tuple[Path, Path]], str]:
        images = _require_dir(root / "leftImg8bit" / split, f"Cityscapes images, leftImg8bit/{split}")
        labels = _require_dir(root / "gtFine" / split, f"Cityscapes labels, gtFine/{split}")
        pairs = []
        for image in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            mask = labels / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
            if not mask.exists():
                raise UserError(f"data {mask}: missing label file for {image.name} (create labelTrainIds with cityscapesScripts)")
            pairs.append((image, mask))
        return pairs, f"data {images}: no *_leftImg8bit.png images in its city folders"

    return _layout(root, size, crop, CITYSCAPES_CLASSES, "cityscapes", find)


def open_voc(root: Path, size: int, crop: tuple[int, int] | None = None) -> Splits:
    """``JPEGImages/ID.jpg``, ``SegmentationClass/ID.png`` (palette indices = classes, 255 = boundary)
    and ``ImageSets/Segmentation/{train,val}.txt``."""
    images = _require_dir(root / "JPEGImages", "VOC images, JPEGImages")
    masks = _require_dir(root / "SegmentationClass", "VOC labels, SegmentationClass")
    lists = _require_dir(root / "ImageSets" / "Segmentation", "VOC split lists, ImageSets/Segmentation")

    def find(split: str) -> tuple[list[tuple[Path, Path]], str]:
        listing = lists / f"{split}.txt"
        if not listing.exists():
            raise UserError(f"data {listing}: missing split list")
        pairs = []
        for name in listing.read_text(encoding="utf-8").split():
            image, mask = images / f"{name}.jpg", masks / f"{name}.png"
            for f in (image, mask):
                if not f.exists():
                    raise UserError(f"data {f}: listed in {listing.name} but missing")
            pairs.append((image, mask))
        return pairs, f"data {listing}: lists no images"

    return _layout(root, size, crop, VOC_CLASSES, "voc", find)


def open_camvid(root: Path, size: int, crop: tuple[int, int] | None = None) -> Splits:
    """SegNet's CamVid layout (module docstring): ``SPLIT/NAME.jpg`` (or ``.png``) with
    ``SPLITannot/NAME.png`` for the splits train, val and test."""

    def pairs(split: str) -> list[tuple[Path, Path]]:
        images = _require_dir(root / split, f"CamVid frames, {split}/")
        labels = _require_dir(root / f"{split}annot", f"CamVid label maps of {split}/, {split}annot/")
        found = []
        for image in sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            mask = labels / f"{image.stem}.png"
            if not mask.exists():
                raise UserError(f"data {mask}: missing label map for {image.name} (CamVid layout: {split}annot/NAME.png)")
            found.append((image, mask))
        if not found:
            raise UserError(f"data {images}: no frames (.jpg, .png) in it")
        return found

    train, test = pairs("train") + pairs("val"), pairs("test")
    for image, mask in train + test:  # every label map, before any training
        label_map, _ = read_labels(mask, CAMVID_CLASSES, CAMVID_VOID)
        if label_map.size != (frame := image_size(image)):
            raise UserError(f"mask {mask}: {label_map.size[0]}x{label_map.size[1]} but its frame {image.name} is "
                            f"{frame[0]}x{frame[1]}; label maps must have their frame's size")
    return Splits(SegmentationFiles(train, size, crop or (size, size), CAMVID_CLASSES, CAMVID_VOID),
                  SegmentationFiles(test, size, (size, size), CAMVID_CLASSES, CAMVID_VOID), CAMVID_CLASSES, size,
                  f"camvid:{root}", task="segmentation")
