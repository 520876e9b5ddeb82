"""How fast a whole search space is profiled, where the wall time goes, and what the table is
worth, with the fixed-run-count harness and the adaptive one, in one run on one machine.

Three profiles of the same space, one after the other:

- ``before``: the fixed harness (``TimingSettings()``: 10 warm-up runs and 20 ms, at least 100
  runs and 50 ms, re-measured up to twice for a CoV above 10%), each op exported in the timing
  process;
- ``after``: the CPU policy (``TimingSettings.for_device("cpu")``: adaptive run counts against the
  median's confidence interval, re-measured only when that stays wide), the next ops exported
  in a helper process (``latency.prefetch``);
- ``after, no helper``: the same policy with every op exported in the timing process, so that
  the helper's interference with the timed runs shows as the ratio of the two tables' op
  medians.

Printed per profile: the wall, the share of timed runs, warm-up, export + session and the rest,
the ops re-measured, the median CoV and confidence interval, the reference op's drift, and the
table's fidelity on the same ``--networks`` random networks (``lut validate``: raw and
calibrated within 10%, Kendall tau). Targets: the 224 space on ONNX Runtime CPU in at
most 30 s, at least 70% inside timed runs, calibrated within 10% >= 99% and tau >= 0.95.
With ``--load``, a CPU-bound process runs beside every step (the loaded-machine target).

    .venv/bin/python benchmarks/profile_speed.py [--input-size 224] [--networks 100] [--load]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
from pathlib import Path
from typing import Any

from nas2deploy.backends import BackendSettings
from nas2deploy.backends.timing import TimingSettings
from nas2deploy.latency.profile import ProfileStats, profile_space
from nas2deploy.latency.summary import table_warnings
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.fidelity import validate_table
from nas2deploy.spaces import make_space


def spin() -> None:
    """A CPU-bound process: the load of a busy machine."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


def report(name: str, table: LatencyTable, s: ProfileStats, fidelity: dict[str, Any] | None) -> None:
    other = s.wall_s - s.load_s - s.warmup_s - s.timed_s
    covs = sorted(e.stats.cov for e in table.entries.values())
    cis = sorted(e.stats.ci_rel for e in table.entries.values() if e.stats.ci_rel is not None)
    runs = sorted(e.stats.runs for e in table.entries.values())
    drift = [r for _, r in table.meta["profile"]["drift"]]
    print(f"{name}")
    print(f"  wall             {s.wall_s:6.1f} s")
    for label, part in (("timed runs", s.timed_s), ("warm-up", s.warmup_s), ("export+session", s.load_s), ("other", other)):
        print(f"    {label:<15}{part:6.1f} s  {part / s.wall_s:6.1%}")
    print(f"  re-measured      {s.remeasured} of {s.ops} ops; runs per op median {runs[len(runs) // 2]}, "
          f"range {runs[0]}-{runs[-1]}")
    print(f"  spread           CoV median {statistics.median(covs):.1%}; median's 95% CI median "
          f"{statistics.median(cis):.2%}, p90 {cis[int(len(cis) * 0.9)]:.2%}" if cis else
          f"  spread           CoV median {statistics.median(covs):.1%}")
    if drift:
        print(f"  reference drift  {min(drift):.3f}-{max(drift):.3f} over {len(drift)} checks")
    for line in table_warnings(table):
        print(f"  warning          {line}")
    if fidelity is not None:
        for kind in ("raw", "calibrated"):
            f = fidelity[kind]
            print(f"  {kind:<16} within 10% {f['within_10pct']:5.1f}%, MAPE {f['mape']:.2f}%, Kendall tau {f['kendall_tau']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--networks", type=int, default=100, help="validated per table (0: skip the fidelity)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--load", action="store_true", help="a CPU-bound process runs beside every step")
    ap.add_argument("--only", default="before,after,after-no-helper")
    args = ap.parse_args()
    space = make_space("densenas", {"input_size": args.input_size})
    settings = BackendSettings(threads=args.threads)
    runs = {"before": (TimingSettings(), False), "after": (TimingSettings.for_device("cpu"), True),
            "after-no-helper": (TimingSettings.for_device("cpu"), False)}
    print(f"densenas {args.input_size}: {len(space.op_specs())} ops; onnxruntime CPU, fp32, batch 1, {args.threads} thread(s)"
          + ("; a CPU-bound process beside" if args.load else ""))
    loader = multiprocessing.Process(target=spin, daemon=True) if args.load else None
    if loader is not None:
        loader.start()
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            timing, overlap = runs[name]
            table, stats = profile_space(space, settings, Path(tmp) / f"{name}.json", timing, overlap=overlap)
            fidelity = validate_table(table, space.sample_arch, args.networks, seed=0) if args.networks else None
            report(name, table, stats, fidelity)
            tables[name] = table
    if loader is not None:
        loader.terminate()
    if {"after", "after-no-helper"} <= set(tables):
        ratios = sorted(tables["after"].entries[k].stats.median_ms / e.stats.median_ms
                        for k, e in tables["after-no-helper"].entries.items())
        n = len(ratios)
        print(f"helper's interference: op medians with / without it: median {ratios[n // 2]:.3f}, "
              f"p10 {ratios[n // 10]:.3f}, p90 {ratios[9 * n // 10]:.3f}")
    if {"before", "after"} <= set(tables):
        ratios = sorted(tables["after"].entries[k].stats.median_ms / e.stats.median_ms for k, e in tables["before"].entries.items())
        n = len(ratios)
        print(f"after / before op medians: median {ratios[n // 2]:.3f}, p10 {ratios[n // 10]:.3f}, p90 {ratios[9 * n // 10]:.3f}")


if __name__ == "__main__":
    main()
