"""The transforms of image files, seeded so that a sample's augmentation is a pure function of
(index, draw) whatever process decodes it (``nas2deploy.data.batches``).

Classification follows the standard ImageNet recipe (as timm and torchvision): training takes a
random-resized crop (area 8-100% of the image, aspect ratio 3/4-4/3, ten tries then a centre
crop) resized to ``size`` and flipped with probability 1/2; evaluation resizes the shorter side to
``size / 0.875`` (256 for 224) and takes the centre ``size`` x ``size``. Small inputs (below 128
px, where the DenseNAS space takes CIFAR strides) follow the CIFAR recipe instead (DARTS, DenseNAS'
CIFAR runs): the image resized to ``size`` x ``size``, padded by 4 black pixels on each side, a
random ``size`` crop of that and a flip with probability 1/2; evaluation is the resized image.

Segmentation follows DeepLab's Cityscapes recipe: the image is scaled by ``base`` (the network's
input size over the image's shorter side: 0.5 for Cityscapes' 1024x2048 at 512) times a factor
drawn uniformly from [0.5, 2.0], a random crop of ``crop`` is taken (padded where the scaled image
is smaller: zeros after normalisation, ``IGNORE`` in the mask) and flipped with probability 1/2;
evaluation scales by ``base`` and takes the centre crop. Only the cropped region is resized (PIL's
``box``), so a 512x1024 crop costs one decode and one crop-sized resize.

Real images are normalised by a per-channel mean and standard deviation: ImageNet's, the
statistics every pretrained backbone and deployment pipeline uses, for ImageNet-sized inputs;
the training images' own (computed by the loader) for small inputs, as CIFAR recipes do. The
built-in synthetic data keeps its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nas2deploy.errors import UserError
from nas2deploy.objective import IGNORE

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
EVAL_CROP = 0.875  # 224 / 256
SCALE_JITTER = (0.5, 2.0)
#: Below this input size classification takes the CIFAR recipe (the DenseNAS space's CIFAR strides).
SMALL_INPUT = 128
CIFAR_PAD = 4
#: A per-channel (mean, std) normalisation.
Stats = tuple[np.ndarray, np.ndarray]


def open_image(path: Path, rgb: bool = True) -> Any:
    """A PIL image (as RGB, or as stored), loaded; an unreadable file is a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB") if rgb else im.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"data {path}: cannot read the image ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """An image file's (width, height), read from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"data {path}: cannot read the image ({exc})") from None


def normalise(rgb: Any, stats: Stats = IMAGENET) -> np.ndarray:
    """A PIL RGB image as a (3, H, W) float32 array, normalised by ``stats`` (ImageNet's by default)."""
    arr = np.asarray(rgb, dtype=np.float32) / 255
    return ((arr - stats[0]) / stats[1]).transpose(2, 0, 1).copy()


def channel_stats(paths: list[Path], size: int) -> Stats:
    """The per-channel mean and standard deviation of ``paths`` resized to ``size`` (in [0, 1])."""
    from PIL import Image

    pixels = np.stack([np.asarray(open_image(p).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64) / 255
                       for p in paths]).reshape(-1, 3)
    return pixels.mean(0).astype(np.float32), np.maximum(pixels.std(0), 1e-3).astype(np.float32)


def random_resized_box(width: int, height: int, rng: np.random.Generator,
                       scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) of a random-resized crop, as torchvision draws it."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = width / height  # fallback: the whole image, clamped to the ratio range
    w, h = (width, height) if ratio[0] <= aspect <= ratio[1] else (
        (round(height * ratio[1]), height) if aspect > ratio[1] else (width, round(width / ratio[0])))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def classification_train(path: Path, size: int, rng: np.random.Generator, stats: Stats = IMAGENET) -> np.ndarray:
    from PIL import Image

    im = open_image(path)
    if size < SMALL_INPUT:  # the CIFAR recipe: resized, padded by 4 black pixels, a random crop
        padded = Image.new("RGB", (size + 2 * CIFAR_PAD, size + 2 * CIFAR_PAD))
        padded.paste(im.resize((size, size), Image.Resampling.BILINEAR) if im.size != (size, size) else im,
                     (CIFAR_PAD, CIFAR_PAD))
        left, top = (int(x) for x in rng.integers(0, 2 * CIFAR_PAD + 1, size=2))
        out = padded.crop((left, top, left + size, top + size))
    else:
        width, height = im.size
        out = im.resize((size, size), Image.Resampling.BILINEAR, box=random_resized_box(width, height, rng))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return normalise(out, stats)


def classification_eval(path: Path, size: int, stats: Stats = IMAGENET) -> np.ndarray:
    from PIL import Image

    im = open_image(path)
    if size < SMALL_INPUT:  # the CIFAR recipe: the whole image at the input size
        return normalise(im.resize((size, size), Image.Resampling.BILINEAR) if im.size != (size, size) else im, stats)
    width, height = im.size
    scale = size / EVAL_CROP / min(width, height)
    w, h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (w - size) / 2 / scale, (h - size) / 2 / scale  # the centre crop, in the file's pixels
    box = (left, top, left + size / scale, top + size / scale)
    return normalise(im.resize((size, size), Image.Resampling.BILINEAR, box=box), stats)


def read_labels(mask_path: Path, classes: int, void: int | None = None) -> tuple[Any, np.ndarray]:
    """A label map (PIL image) and its labels, ``void`` made ``IGNORE``; a label outside the
    classes (and ``IGNORE``) is refused naming the file."""
    mask = open_image(mask_path, rgb=False)
    if mask.mode not in ("P", "L"):
        mask = mask.convert("L")
    labels = np.asarray(mask)
    if void is not None:
        labels = np.where(labels == void, IGNORE, labels).astype(np.uint8)
    bad = np.unique(labels[(labels >= classes) & (labels != IGNORE)])
    if bad.size:
        allowed = f"0..{classes - 1}" + (f", {void} = void" if void is not None else "")
        raise UserError(f"mask {mask_path}: labels {', '.join(map(str, bad[:5]))} outside {allowed} "
                        f"(and {IGNORE} = ignore); use train IDs")
    return mask, labels


def segmentation_pair(image_path: Path, mask_path: Path, size: int, crop: tuple[int, int], classes: int,
                      rng: np.random.Generator | None, void: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (image, mask) of a training draw (``rng``) or of evaluation (``rng`` None); a label
    equal to ``void`` is ignored."""
    from PIL import Image

    im = open_image(image_path)
    mask, labels = read_labels(mask_path, classes, void)
    if mask.size != im.size:
        raise UserError(f"mask {mask_path}: {mask.size[0]}x{mask.size[1]} but its image {image_path.name} is "
                        f"{im.size[0]}x{im.size[1]}; masks must have their image's size")
    if void is not None:
        mask = Image.fromarray(labels)
    width, height = im.size
    scale = size / min(width, height)
    if rng is not None:
        scale *= rng.uniform(*SCALE_JITTER)
    ch, cw = crop
    sw, sh = round(width * scale), round(height * scale)
    w, h = min(cw, sw), min(ch, sh)  # the part of the crop the scaled image covers
    if rng is None:
        left, top = (sw - w) // 2, (sh - h) // 2
    else:
        left, top = int(rng.integers(0, sw - w + 1)), int(rng.integers(0, sh - h + 1))
    box = (left / scale, top / scale, min(width, (left + w) / scale), min(height, (top + h) / scale))
    flip = rng is not None and rng.random() < 0.5
    image_out = np.zeros((3, ch, cw), dtype=np.float32)
    mask_out = np.full((ch, cw), IGNORE, dtype=np.int64)
    rgb = im.resize((w, h), Image.Resampling.BILINEAR, box=box)
    lab = mask.resize((w, h), Image.Resampling.NEAREST, box=box)
    if flip:
        rgb, lab = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT), lab.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    oy, ox = (ch - h) // 2, (cw - w) // 2  # padding around a scaled image smaller than the crop
    image_out[:, oy:oy + h, ox:ox + w] = normalise(rgb)
    mask_out[oy:oy + h, ox:ox + w] = np.asarray(lab, dtype=np.int64)
    return image_out, mask_out


def draw_rng(index: int, draw: int) -> np.random.Generator:
    """The generator of sample ``index``'s augmentation in draw ``draw`` (a search's seed and epoch)."""
    return np.random.default_rng([draw, index, 11])
