"""A built-in classification dataset generated deterministically in code: textured shapes.

Ten classes = five shapes (disc, square, triangle, ring, cross) x two stripe textures (coarse,
fine) painted on a background of other stripes and noise, at random scale (50-90% of the image),
position, rotation and colours (``render`` says which ranges and why); ``synthetic-small``
draws the same classes with smaller shapes (``RADIUS``), a harder set on which networks of one
latency differ. Telling the classes apart needs both shape (large receptive
field) and texture frequency (resolution kept long enough), so architecture choices (kernel
sizes, where to downsample, width) change the accuracy. Sample i is a pure function of
(seed, i): no download, identical on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from nas2deploy.data.splits import Splits
from nas2deploy.errors import UserError

SHAPES = ("disc", "square", "triangle", "ring", "cross")


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    if kind == 0:
        return u**2 + v**2 < r**2
    if kind == 1:
        return (np.abs(u) < r * 0.8) & (np.abs(v) < r * 0.8)
    if kind == 2:
        return (v > -r * 0.6) & (v < r * 0.9 - 1.7 * np.abs(u))
    if kind == 3:
        d = u**2 + v**2
        return (d < r**2) & (d > (0.55 * r) ** 2)
    return ((np.abs(u) < r * 0.3) | (np.abs(v) < r * 0.3)) & (np.abs(u) < r) & (np.abs(v) < r)


#: Shape radius as a share of the image, per built-in set: ``synthetic`` (the demo's: every
#: network of a latency window learns it to 94-96% in 4 epochs, so architecture hardly shows)
#: and ``synthetic-small`` (objects 9-17 px across at 32 px: four networks of one window reached
#: 61-74% in 4 epochs, so architecture shows; ``benchmarks/architecture_spread.py``).
RADIUS = {"synthetic": (0.25, 0.45), "synthetic-small": (0.14, 0.26)}


def render(index: int, size: int, seed: int, radius: tuple[float, float] = RADIUS["synthetic"]) -> tuple[np.ndarray, int]:
    """Sample ``index``: (image C x H x W normalised to about zero mean, unit spread; label).

    Measured choices (``benchmarks/supernet_learning.py``): shapes of radius 25-45% of the
    image, stripe periods in pixels (fine 2.5-3.5 px, above the 2 px Nyquist limit so they never
    alias into coarse ones; coarse 7-10 px) and stripes drawn in two colours of guaranteed
    contrast (near-complementary) over a half-contrast background. The earlier draw (radius
    15-45%, periods from 1.4 px, colour pairs that could coincide) left one network of the demo
    space at 30% top-1 after 300 steps where this draw gives 87%: many images showed no class.
    """
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(0, 2 * len(SHAPES)))
    kind, fine = label % len(SHAPES), label // len(SHAPES)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = rng.uniform(*radius)
    cx, cy = rng.uniform(r * 0.8, 1 - r * 0.8, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    mask = _shape_mask(kind, u, v, r)
    period_px = rng.uniform(2.5, 3.5) if fine else rng.uniform(7.0, 10.0)
    theta = rng.uniform(0, np.pi)
    fg = 0.5 + 0.5 * np.sin(2 * np.pi * (u * np.cos(theta) + v * np.sin(theta)) * size / period_px)
    bg_freq, bg_theta = rng.uniform(1.0, 7.0), rng.uniform(0, np.pi)
    bg = 0.5 + 0.5 * np.sin(2 * np.pi * bg_freq * (x * np.cos(bg_theta) + y * np.sin(bg_theta)) + rng.uniform(0, 6.3))
    fg_a = rng.uniform(0, 1, size=3)
    fg_b = np.clip(1 - fg_a + rng.normal(0, 0.15, size=3), 0, 1)
    bg_a, bg_b = rng.uniform(0.25, 0.75, size=(2, 3))
    img = np.where(mask[None], fg_a[:, None, None] * fg + fg_b[:, None, None] * (1 - fg),
                   0.5 * (bg_a[:, None, None] * bg + bg_b[:, None, None] * (1 - bg)))
    img = img + rng.normal(0, 0.08, size=img.shape)
    return ((img - 0.5) / 0.25).astype(np.float32), label


class ShapesDataset(Dataset):
    NUM_CLASSES = 2 * len(SHAPES)

    def __init__(self, length: int, size: int = 32, seed: int = 0, radius: tuple[float, float] = RADIUS["synthetic"]):
        self.length, self.size, self.seed = length, size, seed
        images, labels = zip(*(render(i, size, seed, radius) for i in range(length)))
        self.images = torch.from_numpy(np.stack(images))
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def shapes_splits(spec: str, image_size: int, test: int = 0) -> Splits:
    """The built-in set ``spec`` names (``NAME[:N]``, NAME a key of ``RADIUS``): N training images
    (default 4000; seed 0) and ``test`` test images (seed 1; 0: N/4, at least 10). Sample i
    depends on (seed, i) only, so a larger test split begins with the smaller one's images."""
    name, _, count = spec.partition(":")
    count = count or "4000"
    if not count.isdigit() or int(count) < 10:
        raise UserError(f"data {spec}: expected '{name}' or '{name}:N' with N >= 10 training images")
    train, radius = int(count), RADIUS[name]
    return Splits(ShapesDataset(train, image_size, seed=0, radius=radius),
                  ShapesDataset(test or max(10, train // 4), image_size, seed=1, radius=radius),
                  ShapesDataset.NUM_CLASSES, image_size, spec)
