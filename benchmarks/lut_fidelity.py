"""How well a latency table predicts whole networks, in the same run and in a later process.

Targets, ONNX Runtime CPU fp32 batch 1:
- calibrated prediction on 100 random architectures measured in the same run: >= 95% within
  10%, median absolute error <= 4%, Kendall tau >= 0.9 (raw figures reported too);
- a table built in one process predicts networks measured in another process minutes later
  within 10% after reference-op drift correction.

Steps: (1) profile a fresh table in a subprocess (or take --table), (2) `lut validate` it in a
second subprocess (same-run figures, calibration stored), (3) after --delay seconds, here in a
third process, measure --cross-samples new networks (another seed) and compare each with the
table's drift-corrected prediction.

    .venv/bin/python benchmarks/lut_fidelity.py [--input-size 224] [--samples 100] [--delay 120]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nas2deploy.latency.measure import DriftTracker, measure_network, settings_from_table, timing_from_table
from nas2deploy.latency.fidelity import fidelity
from nas2deploy.spaces.tables import load_table, table_space

CLI = [sys.executable, "-m", "nas2deploy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="an existing table to use instead of profiling a fresh one")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--cross-samples", type=int, default=20)
    ap.add_argument("--delay", type=float, default=120.0, help="seconds between validation and the cross-process check")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    path = Path(tmp) / "table.json"
    t0 = time.time()
    if args.table:  # validated on a copy: the user's table keeps its own calibration
        shutil.copy(args.table, path)
    else:
        subprocess.run([*CLI, "profile", "--input-size", str(args.input_size), "--out", str(path)], check=True)
    built_at = time.time()
    out = subprocess.run([*CLI, "lut", "validate", str(path), "--samples", str(args.samples), "--json"],
                         check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    print(f"same run: {args.samples} random networks, table {path.name}")
    for kind in ("raw", "calibrated"):
        m = report[kind]
        print(f"  {kind:<11} MAPE {m['mape']:5.2f}%  median {m['median_ape']:5.2f}%  max {m['max_ape']:5.1f}%  "
              f"within 5% {m['within_5pct']:5.1f}%  within 10% {m['within_10pct']:5.1f}%  "
              f"Kendall tau {m['kendall_tau']:.3f}  Pearson r {m['pearson_r']:.3f}")
    c = report["calibration"]
    print(f"  calibration: measured = {c['scale']:.4f} x sum {c['offset_ms']:+.4f} ms {c['per_op_ms']:+.4f} ms/op")

    time.sleep(max(0.0, args.delay))
    table = load_table(path)
    settings = settings_from_table(table)
    timing = timing_from_table(table)
    space = table_space(table)
    rng = random.Random(12345)
    raw, cal, measured, drifts = [], [], [], []
    with DriftTracker(table, settings, timing) as tracker:
        for _ in range(args.cross_samples):
            arch = space.sample_arch(rng)
            drift = tracker.update()
            measured.append(measure_network(settings, arch, timing))
            pred = table.predict(arch, drift)
            raw.append(pred.raw_ms)
            cal.append(pred.best_ms)
            drifts.append(drift)
    minutes = (time.time() - built_at) / 60
    print(f"another process, {minutes:.1f} min after the table was profiled or copied: {args.cross_samples} new networks")
    print(f"  drift factor (reference op now / in table): median {statistics.median(drifts):.3f}, "
          f"range {min(drifts):.3f}..{max(drifts):.3f}")
    for kind, predicted in (("raw+drift", raw), ("calibrated", cal)):
        m = fidelity(predicted, measured)
        print(f"  {kind:<11} MAPE {m['mape']:5.2f}%  median {m['median_ape']:5.2f}%  max {m['max_ape']:5.1f}%  "
              f"within 10% {m['within_10pct']:5.1f}%  Kendall tau {m['kendall_tau']:.3f}")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
