"""What equality holds between N ranks and one process: a tiny search run by two torchrun ranks
and by one process that runs the same global batch as two micro-batches (``accumulate=2``: what
each rank's BatchNorm sees), both from the same seed.

On the CPU (gloo) the arithmetic is identical and so are the results, bit for bit. On a GPU the
two ranks share it over gloo (NCCL wants a GPU per rank); cuDNN chooses kernels per process and
reduces in its own order, so the figure printed is the largest difference of an architecture
parameter after the run, against the tolerance the GPU test asserts (``TOLERANCE``). The ranks
themselves must agree exactly: they apply the same all-reduced gradients.

    .venv/bin/python benchmarks/rank_equality.py [--device cpu|cuda] [--space densenas|dcnas|both]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_exactness import random_table  # noqa: E402

from nas2deploy.spaces import make_space  # noqa: E402

WORKER = str(Path(__file__).with_name("rank_worker.py"))
SPACES: dict[str, dict[str, Any]] = {"densenas": {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1},
          "dcnas": {"input_size": 64, "layers": 4, "base_width": 8, "num_classes": 6, "head_width": 16}}
#: The largest difference allowed on a GPU between two ranks and one process, after the run's
#: steps (architecture updates are ~a_lr = 0.05 each).
TOLERANCE = 1e-3


def compare(space: str, device: str, folder: Path) -> dict[str, float]:
    """Run both ways; the largest difference between the ranks, and between rank 0 and one process."""
    table = folder / "t.json"
    random_table(make_space(space, SPACES[space]), 0).save(table)
    for name in ("dist", "single"):
        (folder / name).mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's workers run one thread each: so does the single run
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           WORKER, str(table), str(folder / "dist"), "1", space, device],
                          capture_output=True, text=True, timeout=600, env=env)
    if dist.returncode:
        raise RuntimeError(f"two ranks failed: {dist.stderr[-2000:]}")
    single = subprocess.run([sys.executable, WORKER, str(table), str(folder / "single"), "2", space, device],
                            capture_output=True, text=True, timeout=600, env=env)
    if single.returncode:
        raise RuntimeError(f"one process failed: {single.stderr[-2000:]}")
    r0, r1, one = (torch.load(folder / d / f"arch_rank{r}.pt", weights_only=True)
                   for d, r in (("dist", 0), ("dist", 1), ("single", 0)))
    return {"ranks": max(float((a - b).abs().max()) for a, b in zip(r0, r1)),
            "vs_single": max(float((a - c).abs().max()) for a, c in zip(r0, one)),
            "moved": max(float(c.abs().max()) for c in one)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--space", choices=["densenas", "dcnas", "both"], default="both")
    args = ap.parse_args()
    failed = False
    for space in (["densenas", "dcnas"] if args.space == "both" else [args.space]):
        with tempfile.TemporaryDirectory() as tmp:
            d = compare(space, args.device, Path(tmp))
        allowed = 0.0 if args.device == "cpu" else TOLERANCE
        ok = d["ranks"] == 0 and (d["vs_single"] == 0 if allowed == 0 else d["vs_single"] < allowed)
        failed |= not ok
        print(f"{space} on {args.device}, 2 ranks vs 1 process (accumulate 2): ranks differ by {d['ranks']:.3g}, "
              f"rank 0 vs one process {d['vs_single']:.3g} (largest parameter {d['moved']:.3g}; allowed "
              f"{'0: bit-exact' if allowed == 0 else f'{allowed:g}'}) {'ok' if ok else 'FAILED'}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
