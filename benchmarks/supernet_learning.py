"""Does anything learn within a CPU's minutes? The built-in data and the DenseNAS supernet, each
against what it replaced, measured in one run (with the earlier classes and weights the demo's supernet stayed at chance).

1. **Data**: one network of the small space (a fixed random draw, affine BN, as deployed) trained
   for ``--steps`` SGD steps (batch 32, lr 0.05 cosine, label smoothing 0.1) on the built-in
   classes as drawn now (``nas2deploy.data.synthetic.render``) and as drawn before
   (``previous_render`` below, kept here only as the baseline); test top-1 on 1000 images.
2. **Supernet**: the small space's supernet (32 px, width x0.5, one stacking layer per block)
   trained for ``--supernet-steps`` weight steps as the
   search's warm-up does (uniform single-op sampling, every route weighted by its path
   probability; the search's SGD, momentum, weight decay and gradient clipping), once with
   candidates that share weights (the default) and once with independent candidates as published
   (``--separate-op-weights``), and the demo's space (the same without stacking layers: half the
   depth) with shared weights; reported: training top-1 of the last quarter's steps and the top-1
   of the argmax ops on 500 test images.

    .venv/bin/python benchmarks/supernet_learning.py [--steps 300] [--supernet-steps 150]
    .venv/bin/python benchmarks/supernet_learning.py --no-data --supernets demo   # one row

Two threads; about 11 minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas2deploy.testing import random_table  # noqa: E402

import nas2deploy.data.synthetic as synthetic  # noqa: E402
from nas2deploy.objective import task_loss  # noqa: E402
from nas2deploy.search.config import SearchConfig  # noqa: E402
from nas2deploy.search.sampling import step_generator  # noqa: E402
from nas2deploy.spaces import get_space, make_space  # noqa: E402

#: The demo-sized DenseNAS space with one stacking layer per block (the demo itself has none).
SMALL_SPACE = {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1}


#: (name, independent candidate weights, stacking layers per block)
SUPERNETS = (("shared weights", False, 1), ("separate (published)", True, 1), ("demo, shared, no stacking", False, 0))


def quarters(n: int) -> str:
    return "/".join(str(n * q // 4) for q in range(1, 5))


def previous_render(index: int, size: int, seed: int) -> tuple[np.ndarray, int]:
    """The built-in classes as first drawn: radius 15-45% of the image, stripe
    frequencies in cycles per shape (fine periods down to 1.4 px: aliased at 32 px), foreground
    colour pairs drawn independently (often nearly equal: stripes invisible)."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(0, 2 * len(synthetic.SHAPES)))
    kind, fine = label % len(synthetic.SHAPES), label // len(synthetic.SHAPES)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = rng.uniform(0.15, 0.45)
    cx, cy = rng.uniform(r * 0.8, 1 - r * 0.8, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    mask = synthetic._shape_mask(kind, u, v, r)
    freq = rng.uniform(5.5, 7.0) if fine else rng.uniform(1.5, 2.5)
    theta = rng.uniform(0, np.pi)
    fg = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (u * np.cos(theta) + v * np.sin(theta)) / (2 * r))
    bg_freq, bg_theta = rng.uniform(1.0, 7.0), rng.uniform(0, np.pi)
    bg = 0.5 + 0.5 * np.sin(2 * np.pi * bg_freq * (x * np.cos(bg_theta) + y * np.sin(bg_theta)) + rng.uniform(0, 6.3))
    fg_a, fg_b, bg_a, bg_b = rng.uniform(0, 1, size=(4, 3))
    img = np.where(mask[None], fg_a[:, None, None] * fg + fg_b[:, None, None] * (1 - fg),
                   0.5 * (bg_a[:, None, None] * bg + bg_b[:, None, None] * (1 - bg)))
    img = img + rng.normal(0, 0.08, size=img.shape)
    return ((img - 0.5) / 0.25).astype(np.float32), label


def tensors(render: Callable[[int, int, int], tuple[np.ndarray, int]], count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(render(i, 32, seed) for i in range(count)))
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def top1(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(sum(int((net(x[i:i + 100]).argmax(-1) == y[i:i + 100]).sum()) for i in range(0, len(x), 100))) / len(x)


def data_learnability(render: Callable[[int, int, int], tuple[np.ndarray, int]], steps: int) -> list[float]:
    """Test top-1 of one fixed demo-space network at each quarter of ``steps``."""
    x, y = tensors(render, 4000, 0)
    tx, ty = tensors(render, 1000, 1)
    space = make_space("densenas", SMALL_SPACE)
    torch.manual_seed(0)
    net = space.sample_arch(random.Random(2)).build()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)
    draw, scores = torch.Generator().manual_seed(0), []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 0.025 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(x), (32,), generator=draw)
        loss = task_loss("classification", net(x[idx]), y[idx], 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % (steps // 4) == 0:
            net.eval()
            scores.append(top1(net, tx, ty))
            net.train()
    return scores


def supernet_learning(separate: bool, stack_layers: int, steps: int) -> tuple[list[float], list[float], float]:
    """(training top-1 per quarter, argmax test top-1 per quarter, seconds per step)."""
    x, y = tensors(synthetic.render, 4000, 0)  # the training images of open_dataset("synthetic")
    tx, ty = tensors(synthetic.render, 500, 1)  # its first 500 test images
    space = make_space("densenas", {**SMALL_SPACE, "max_stack_layers": stack_layers})
    torch.manual_seed(0)
    search = get_space("densenas").make_search(space, random_table(space, 0), {"separate_op_weights": separate})
    net, config = search.net, SearchConfig(table="")
    params = search.weight_parameters()
    opt = torch.optim.SGD(params, lr=0.05, momentum=config.w_momentum, weight_decay=config.w_weight_decay)
    draw, train_scores, test_scores, correct, seen = torch.Generator().manual_seed(0), [], [], 0, 0
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 0.025 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(x), (32,), generator=draw)
        out = net(x[idx], search.weight_choice(True, step_generator(0, step)))
        loss = task_loss("classification", out, y[idx])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        correct, seen = correct + int((out.argmax(-1) == y[idx]).sum()), seen + len(idx)
        if (step + 1) % (steps // 4) == 0:
            train_scores.append(correct / seen)
            correct = seen = 0
            test_scores.append(top1(lambda b: net(b, search.eval_choice()), tx, ty))  # batch statistics, as the search's
    return train_scores, test_scores, (time.perf_counter() - start) / steps


def data_part(steps: int) -> None:
    print(f"1. one network of the small space, test top-1 after {quarters(steps)} steps (chance 0.10)")
    for name, render in (("previous draw", previous_render), ("current draw", synthetic.render)):
        print(f"   {name:14s} " + "  ".join(f"{s:.3f}" for s in data_learnability(render, steps)), flush=True)


def supernet_part(args: argparse.Namespace) -> None:
    print(f"2. supernet, after {quarters(args.supernet_steps)} weight steps: training top-1 (last quarter) | "
          "argmax-ops test top-1")
    for name, separate, stack_layers in SUPERNETS:
        if name.split()[0].rstrip(",") not in args.supernets.split(","):
            continue
        train, test, per_step = supernet_learning(separate, stack_layers, args.supernet_steps)
        print(f"   {name:26s} " + "  ".join(f"{s:.3f}" for s in train) + "  |  " + "  ".join(f"{s:.3f}" for s in test)
              + f"   ({per_step:.2f} s/step)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of the fixed network")
    parser.add_argument("--supernet-steps", type=int, default=150, help="weight steps of the supernet")
    parser.add_argument("--supernets", default="shared,separate,demo", help="which supernets (default: all three)")
    parser.add_argument("--no-data", action="store_true", help="skip part 1")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not args.no_data:
        data_part(args.steps)
    supernet_part(args)


if __name__ == "__main__":
    main()
