"""Throughput of the search's passes at the size a real search runs, and of the unoptimised port
measured in the same process as the baseline.

On a GPU (``--device cuda``): the DenseNAS-224 supernet (100 classes, ImageNet-100) at batch 64,
and the DCNAS supernet at 512x1024 crops (19 classes, Cityscapes) at batch 8 with path and
channel sampling. Each mode builds a fresh ``SearchRun`` and times the real loop
(``SearchRun._pass``: its loader, pinned copies, autocast, gradient averaging, clipping, SGD)
over ``--steps`` batches after ``--warmup`` batches; images/s are over the timed batches, the
memory is ``torch.cuda.max_memory_allocated``.

Modes:
- ``port``: the unoptimised port the issue measured, reconstructed: the sampled indices moved to
  the GPU by hand and read back with ``.tolist()`` in every mixed op (DenseNAS) or the
  connection probabilities read per cell (DCNAS; its forward's copy of host index lists to the
  GPU per cell is not reproduced, so its port figure flatters the port), the loss read with ``float`` after every step
  and the score with ``int`` after every batch. Same weights, data and optimiser.
- ``fp32``, ``bf16``, ``bf16+cl`` (channels-last): the search as it runs now.

From the measured images/s the script derives the GPU-hours of the published schedule (150
epochs, 50 of them warm-up; 104k weight and 26k architecture images a search epoch: ImageNet-100
split 80/20). The images come from a dataset that hands out one fixed tensor, so the figures are
the step's; ``benchmarks/data_throughput.py`` measures decoding separately.

    PYTHONPATH=. python benchmarks/search_step.py --device cuda [--space densenas|dcnas|both]
    .venv/bin/python benchmarks/search_step.py --device cpu --small   # the same code path, small
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.testing import random_table  # noqa: E402

from nas2deploy.data import Splits  # noqa: E402
from nas2deploy.objective import task_loss  # noqa: E402
from nas2deploy.search.config import SearchConfig  # noqa: E402
from nas2deploy.search.loop import SearchRun  # noqa: E402
from nas2deploy.search.run_folder import RunFolder  # noqa: E402
from nas2deploy.search.sampling import step_generator  # noqa: E402
from nas2deploy.spaces import get_space, make_space  # noqa: E402

SCHEDULE = {"epochs": 150, "warmup": 50, "weight_images": 104_000, "arch_images": 26_000}
SIZES: dict[tuple[str, bool], tuple[dict[str, Any], tuple[int, int], int]] = {  # space configuration, crop (H, W), batch
    ("densenas", False): ({"input_size": 224, "num_classes": 100}, (224, 224), 64),
    ("densenas", True): ({"input_size": 32, "width_mult": 0.5, "num_classes": 10}, (32, 32), 32),
    ("dcnas", False): ({"input_size": 512, "num_classes": 19}, (512, 1024), 8),
    ("dcnas", True): ({"input_size": 64, "layers": 6, "base_width": 16, "num_classes": 6, "head_width": 32}, (64, 128), 4),
}


class FixedImages(Dataset):
    """``n`` samples that are one fixed image and target: the step's cost without decoding."""

    def __init__(self, n: int, shape: tuple[int, int], task: str, classes: int):
        g = torch.Generator().manual_seed(0)
        self.n, self.image = n, torch.randn(3, *shape, generator=g)
        self.target: Any = (torch.randint(0, classes, shape, generator=g) if task == "segmentation" else 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        return self.image, self.target


def build(space_name: str, small: bool, device: str, amp: str, channels_last: bool, batch: int, folder: Path) -> SearchRun:
    shape_config, crop, _ = SIZES[(space_name, small)]
    entry = get_space(space_name)
    space = make_space(space_name, shape_config)
    table = random_table(space, 0)
    torch.manual_seed(0)
    search = entry.make_search(space, table, dict(entry.search_defaults))
    task = search.task
    classes = shape_config["num_classes"]
    n = batch * 64
    data = Splits(FixedImages(n, crop, task, classes), FixedImages(batch, crop, task, classes), classes,
                  shape_config["input_size"], "fixed", task)
    config = SearchConfig(table="random", space=space_name, epochs=2, warmup_epochs=0, batch_size=batch, device=device,
                          amp=amp, channels_last=channels_last, workers=0)
    return SearchRun(config, RunFolder(folder), table, search, data, device=device)


# -- the unoptimised port, reconstructed --------------------------------------------------------
def port_densenas_forward(net: Any, x: torch.Tensor, head: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
    """The supernet's forward as first ported: indices on the GPU, read per mixed op."""
    space = net.space
    p = net.path_probs()
    head_w = torch.softmax(net.alpha_head.gather(1, head), -1)
    stack_w = torch.softmax(net.alpha_stack.gather(1, stack), -1)
    outs: list[Any] = [None] * (space.tail_node + 1)
    outs[0] = net.stem(x)
    for node in range(1, space.tail_node + 1):
        acc = None
        for ei in net.in_edges[node]:
            e = space.edges[ei]
            if node == space.tail_node:
                y = net.tail_branches[net.tail_row[e]](outs[e.src])
            else:
                r = net.head_row[e]
                y = net.heads[r](outs[e.src], head[r].tolist(), head_w[r])  # a host sync per mixed op
            acc = p[ei] * y if acc is None else acc + p[ei] * y
        for r in net.stack_rows.get(node, []):
            acc = net.stacks[r](acc, stack[r].tolist(), stack_w[r])
        outs[node] = acc
    return net.classifier(outs[space.tail_node])


def port_dcnas_choice(net: Any, generator: torch.Generator, uniform: bool) -> Any:
    """Connections drawn as first ported: each cell's probabilities read from the GPU."""
    from nas2deploy.spaces.dcnas.supernet import PathSample

    kept = {}
    for cell in net.cells:
        probs = net.input_weights(cell).detach().cpu()  # a host sync per cell
        probs = torch.ones_like(probs) if uniform else probs
        k = net.path_samples or len(probs)
        kept[cell] = (list(range(len(probs))) if k >= len(probs)
                      else sorted(torch.multinomial(probs, k, replacement=False, generator=generator).tolist()))
    return PathSample(kept)


def port_pass(run: SearchRun, batches: int) -> dict[str, float]:
    """The weight pass as first ported (see the module docstring)."""
    net, search, device = run.net, run.space_search, run.device
    net.train()
    data = run.loaders["train"].dataset
    x1, y1 = data[(0, None)]
    start, seen = time.perf_counter(), 0
    for b in range(batches):
        x = x1.unsqueeze(0).expand(run.config.batch_size, *x1.shape).contiguous().to(device)
        y = (torch.as_tensor(y1).unsqueeze(0).expand(run.config.batch_size, *torch.as_tensor(y1).shape).contiguous()
             .to(device))
        g = step_generator(0, b)
        with run.precision.autocast():
            if run.space_search.task == "classification":
                choice = search.weight_choice(False, g)
                out = port_densenas_forward(net, x, choice.head.to(device), choice.stack.to(device))
            else:
                out = net(x, port_dcnas_choice(net, g, False))
        loss = task_loss(run.task, out.float(), y)
        run.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(search.weight_parameters(), run.config.grad_clip)
        run.w_opt.step()
        float(loss.detach())  # the loss read after every step
        int((out.argmax(1) == y).sum())  # and the score after every batch
        seen += len(y)
    wall = time.perf_counter() - start
    return {"images_per_s": seen / wall, "step_s": wall / batches}


def warm_every_candidate(run: SearchRun, port: bool, warmup: int) -> None:
    """Run every DenseNAS candidate once (candidate k of every mixed op at warm-up step k), so
    that cuDNN's kernel choice for each shape (``cudnn.benchmark``) happens before the timing,
    as it does in a real search's first steps; DCNAS runs all its candidates every step."""
    search = run.space_search
    net: Any = search.net
    if not hasattr(net, "alpha_head"):
        steps = warmup
    else:
        from nas2deploy.spaces.densenas.supernet import OpChoice

        n_head, n_stack = net.alpha_head.shape[1], net.alpha_stack.shape[1]
        steps = max(warmup, n_head, n_stack)
        counter = iter(range(steps))

        def cycling(warm: bool, generator: torch.Generator) -> OpChoice:
            k = next(counter)
            return OpChoice(torch.full((net.alpha_head.shape[0], 1), k % n_head),
                            torch.full((net.alpha_stack.shape[0], 1), k % n_stack))

        search.weight_choice = cycling  # type: ignore[method-assign]
    if port:
        port_pass(run, steps)
    else:
        run.samplers["train"].max_batches = steps
        run._pass("train", 0, lambda x, y, s: run._weight_step(x, y, s, False))
    if "weight_choice" in vars(search):
        del search.weight_choice


def timed(run: SearchRun, split: str, warmup: int, steps: int, port: bool) -> dict[str, float]:
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    if split == "train":
        warm_every_candidate(run, port, warmup)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    sync()
    if port:
        result = port_pass(run, steps)
        sync()
    else:
        step = (lambda x, y, s: run._weight_step(x, y, s, False)) if split == "train" else run._arch_step
        run.samplers[split].max_batches = warmup
        run._pass(split, 0, step)
        sync()
        run.samplers[split].max_batches = steps
        p = run._pass(split, 0, step)
        sync()
        result = {"images_per_s": p["images_per_s"], "step_s": p["wall_s"] / steps}
    result["memory_gb"] = (torch.cuda.max_memory_allocated(run.device) / 2**30) if run.device.type == "cuda" else float("nan")
    return result


def bench_space(space_name: str, args: argparse.Namespace) -> None:
    _, crop, batch = SIZES[(space_name, args.small)]
    batch = args.batch or batch
    device = args.device
    modes = [("port fp32", "off", False, True), ("port bf16", "bf16", False, True), ("fp32", "off", False, False),
             ("bf16", "bf16", False, False), ("bf16+cl", "bf16", True, False)]
    if device == "cpu":
        modes = [m for m in modes if m[1] == "off"]  # bf16 autocast on a CPU is an emulation, not a speed-up
    print(f"{space_name} supernet, {crop[0]}x{crop[1]}, batch {batch}, {device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device == 'cuda' else ''}; {args.steps} timed steps after {args.warmup}")
    print(f"  {'mode':<11}{'weight img/s':>14}{'step s':>9}{'GB':>7}{'arch img/s':>12}{'GB':>7}")
    figures: dict[str, dict[str, float]] = {}
    for name, amp, cl, port in modes:
        with tempfile.TemporaryDirectory() as tmp:
            run = build(space_name, args.small, device, amp, cl, batch, Path(tmp))
            weight = timed(run, "train", args.warmup, args.steps, port)
            arch = None if port else timed(run, "val", 1, max(1, args.steps // 4), False) if not args.small else None
            figures[name] = {"weight": weight["images_per_s"], "arch": arch["images_per_s"] if arch else float("nan")}
            arch_text = f"{arch['images_per_s']:>12.1f}{arch['memory_gb']:>7.1f}" if arch else f"{'-':>12}{'-':>7}"
            print(f"  {name:<11}{weight['images_per_s']:>14.1f}{weight['step_s']:>9.3f}{weight['memory_gb']:>7.1f}{arch_text}",
                  flush=True)
            del run
            if device == "cuda":
                torch.cuda.empty_cache()
    base = figures["port fp32"]["weight"]
    for name in figures:
        if not name.startswith("port"):
            print(f"  speed-up {name} vs port fp32: {figures[name]['weight'] / base:.2f}x")
    if space_name == "densenas" and not args.small:
        for name in ("fp32", "bf16", "bf16+cl"):
            if name in figures and figures[name]["arch"] == figures[name]["arch"]:
                s = SCHEDULE
                seconds = (s["epochs"] * s["weight_images"] / figures[name]["weight"]
                           + (s["epochs"] - s["warmup"]) * s["arch_images"] / figures[name]["arch"])
                print(f"  published schedule (150 epochs, ImageNet-100) at {name}: {seconds / 3600:.1f} GPU-hours "
                      "(target <= 8; DenseNAS reports 64)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--space", choices=["densenas", "dcnas", "both"], default="both")
    ap.add_argument("--small", action="store_true", help="Small spaces (a CPU check of the code path).")
    ap.add_argument("--batch", type=int, default=0, help="Override the batch (0: 64 DenseNAS, 8 DCNAS).")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("search_step: no CUDA GPU here; run with --device cpu --small for the code path")
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    for space_name in (["densenas", "dcnas"] if args.space == "both" else [args.space]):
        bench_space(space_name, args)


if __name__ == "__main__":
    main()
