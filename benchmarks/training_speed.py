"""Where the time of a training step goes on this CPU, and what makes it faster, side by side in
one run: stand-alone training of a random network of the small DenseNAS space at 32 px (width
x0.5, one stacking layer, 10 classes; batch 64) and the supernet's weight step of the same space
(the search's own ``SearchRun`` step, batch 64).

Modes (each a fresh model from one seed, ``--warmup`` steps then the median of ``--steps``):
- ``nchw``: the default memory format, all cores (``train``'s and ``search``'s default before
  channels-last became it);
- ``channels-last``: images and weights in channels-last order (oneDNN's depthwise kernels);
- ``channels-last x2 jobs``: two one-thread processes training side by side (what
  ``--jobs 2`` of the comparison benchmarks does), as images per second of both together;
- ``compiled``: ``torch.compile`` (Inductor) over channels-last, its compile time printed apart;
- ``bf16``: autocast to bfloat16 on the CPU (oneDNN's AMX or AVX-512 bf16 kernels where the CPU
  has them).
With ``--profile`` the operators taking most of a step are listed per mode.

    .venv/bin/python benchmarks/training_speed.py [--steps 10] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.nets import Network  # noqa: E402
from nas2deploy.objective import task_loss  # noqa: E402
from nas2deploy.spaces import make_space  # noqa: E402

SPACE = {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1}
TABLE = Path(__file__).resolve().parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"
BATCH = 64


def network() -> Network:
    return make_space("densenas", SPACE).sample_arch(random.Random(0))


def standalone_step(mode: str) -> Callable[[], None]:
    """One SGD step of the random network in ``mode``."""
    torch.manual_seed(0)
    model = network().build().train()
    x, y = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    if mode != "nchw":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    forward: Any = torch.compile(model) if mode == "compiled" else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = task_loss("classification", forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def supernet_step(mode: str, folder: Path) -> Callable[[], object]:
    """One weight step of the supernet search (``SearchRun._weight_step``) in ``mode``."""
    from nas2deploy.runs import start_search
    from nas2deploy.search.config import SearchConfig

    config = SearchConfig(table=str(TABLE), data="synthetic:512", epochs=2, warmup_epochs=1, batch_size=BATCH,
                          max_batches=1, channels_last=mode != "nchw", amp="bf16" if mode == "bf16" else "off")
    run = start_search(config, folder / mode)
    run.samplers["train"].max_batches = 1
    return lambda: run._pass("train", 0, lambda x, y, s: run._weight_step(x, y, s, False))


def timed(step: Callable[[], object], warmup: int, steps: int, profile: bool) -> tuple[float, str]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    top = ""
    if profile:
        with torch.autograd.profiler.profile() as prof:
            step()
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:5]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top = ", ".join(f"{e.key.removeprefix('aten::')} {100 * e.self_cpu_time_total / total:.0f}%" for e in rows)
    return statistics.median(times), top


def worker(kind: str, warmup: int, steps: int) -> None:
    """A one-thread process of the side-by-side mode: prints its median step in seconds."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        step = standalone_step("channels-last") if kind == "standalone" else supernet_step("channels-last", Path(tmp))
        print(json.dumps(timed(step, warmup, steps, False)[0]), flush=True)


def side_by_side(kind: str, warmup: int, steps: int) -> float:
    """Images per second of two one-thread processes stepping at once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", kind, "--warmup", str(warmup), "--steps", str(steps)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    medians = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(BATCH / m for m in medians)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="List the operators taking most of a step, per mode.")
    ap.add_argument("--worker", choices=["standalone", "supernet"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.warmup, args.steps)
        return
    cores = torch.get_num_threads()
    print(f"DenseNAS small space at 32 px, batch {BATCH}, {cores} threads; median of {args.steps} steps after {args.warmup}")
    for kind in ("standalone", "supernet"):
        print(f"{kind}: {'a random network' if kind == 'standalone' else 'the supernet weight step'}")
        base = None
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("nchw", "channels-last", "compiled", "bf16"):
                if kind == "supernet" and mode == "compiled":
                    continue  # a supernet draws another sub-network every step: each would compile again
                start = time.perf_counter()
                step = standalone_step(mode) if kind == "standalone" else supernet_step(mode, Path(tmp))
                if mode == "compiled":
                    step()
                    print(f"  (compile: {time.perf_counter() - start:.0f} s)")
                median, top = timed(step, args.warmup, args.steps, args.profile)
                rate = BATCH / median
                base = base or rate
                print(f"  {mode:<24}{median * 1000:>8.0f} ms a step {rate:>7.0f} img/s  {rate / base:.2f}x"
                      + (f"   [{top}]" if top else ""), flush=True)
        rate = side_by_side(kind, args.warmup, args.steps)
        print(f"  {'channels-last x2 jobs':<24}{'':>8}   both  {rate:>7.0f} img/s  {rate / (base or rate):.2f}x", flush=True)


if __name__ == "__main__":
    main()
