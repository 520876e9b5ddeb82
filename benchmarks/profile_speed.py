"""How fast a whole search space is profiled, and where the wall time goes.

Target (issue 2): the full published DenseNAS 224 space on ONNX Runtime CPU with 100 timed runs
per op in at most 60 s wall, at least half of it inside timed runs.

    .venv/bin/python benchmarks/profile_speed.py [--input-size 224] [--runs 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from nas2deploy.backends import BackendSettings
from nas2deploy.backends.timing import TimingSettings
from nas2deploy.latency.profile import profile_space
from nas2deploy.spaces import make_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    space = make_space("densenas", {"input_size": args.input_size})
    with tempfile.TemporaryDirectory() as tmp:
        table, s = profile_space(space, BackendSettings(threads=args.threads), Path(tmp) / "t.json",
                                 TimingSettings(min_runs=args.runs))
    other = s.wall_s - s.load_s - s.warmup_s - s.timed_s
    print(f"space            densenas {args.input_size}: {s.ops} ops + reference op (x2)")
    print(f"backend          onnxruntime CPU, fp32, batch 1, {args.threads} thread(s), >= {args.runs} timed runs/op")
    print(f"wall             {s.wall_s:6.1f} s   (target <= 60 s)")
    print(f"  timed runs     {s.timed_s:6.1f} s   {s.timed_s / s.wall_s:5.1%} (target >= 50%)")
    print(f"  warm-up        {s.warmup_s:6.1f} s   {s.warmup_s / s.wall_s:5.1%}")
    print(f"  export+session {s.load_s:6.1f} s   {s.load_s / s.wall_s:5.1%}")
    print(f"  other          {other:6.1f} s   {other / s.wall_s:5.1%}")
    print(f"re-measured      {s.remeasured} ops (CoV above {TimingSettings().max_cov:.0%})")
    covs = sorted(e.stats.cov for e in table.entries.values())
    print(f"CoV              median {covs[len(covs) // 2]:.1%}, p90 {covs[int(len(covs) * 0.9)]:.1%}")


if __name__ == "__main__":
    main()
