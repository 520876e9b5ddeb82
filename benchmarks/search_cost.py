"""Step time and peak memory of the DenseNAS supernet: one sampled op per mixed op vs all ops.

Target: single-op sampling at least 4x lower peak memory and at least 4x faster steps
than evaluating every candidate, at the same batch. Each mode runs in its own process, so peak
memory (the process's max RSS above its level once the supernet and data exist) is its own;
step times are medians over the timed steps after one warm-up step.

    .venv/bin/python benchmarks/search_cost.py [--width-mult 0.5] [--batch 32] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def one_mode(mode: str, width_mult: float, batch: int, steps: int, threads: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from nas2deploy.search.sampling import sample_ops, step_generator
    from nas2deploy.spaces.densenas.supernet import DenseNASSupernet, OpChoice
    from nas2deploy.spaces.densenas.space import DenseNASConfig, DenseNASSpace

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = DenseNASSupernet(DenseNASSpace(DenseNASConfig(input_size=32, width_mult=width_mult, num_classes=10)))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for step in range(steps + 1):
        g = step_generator(0, step)
        if mode == "all":
            choice = OpChoice.all(net)
        else:
            choice = OpChoice(sample_ops(net.alpha_head, 1, False, g), sample_ops(net.alpha_stack, 1, False, g))
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x, choice), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"step_s": statistics.median(times[1:]), "peak_mb": (peak - base) / 1024,
            "mixed_ops": len(net.heads) + len(net.stacks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["all", "sampled"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(one_mode(args.mode, args.width_mult, args.batch, args.steps, args.threads)))
        return
    results = {}
    for mode in ("sampled", "all"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--width-mult", str(args.width_mult),
                              "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    s, a = results["sampled"], results["all"]
    print(f"DenseNAS supernet, 32x32 CIFAR strides, width x{args.width_mult}, {s['mixed_ops']} mixed ops, "
          f"batch {args.batch}, {args.threads} threads, weight step (forward + backward + SGD)")
    print(f"  {'':<22}{'step (median)':>14}{'peak memory':>14}")
    print(f"  {'one sampled op':<22}{s['step_s']:>12.2f} s{s['peak_mb']:>11.0f} MB")
    print(f"  {'all candidates':<22}{a['step_s']:>12.2f} s{a['peak_mb']:>11.0f} MB")
    print(f"  ratio all / sampled: {a['step_s'] / s['step_s']:.1f}x time, {a['peak_mb'] / max(s['peak_mb'], 1):.1f}x memory "
          "(targets >= 4x each)")


if __name__ == "__main__":
    main()
