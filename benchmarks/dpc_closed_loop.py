"""A DPC search's network against its budget, measured after export (issue 15's target: the
exported network's measured latency 0.85-1.05x the budget after closed-loop derivation).

What a user types, run as commands (the CLI in this checkout), on this machine's CPU:

1. ``nas2deploy profile --space dpc`` at ``--size`` x ``--size`` (ONNX Runtime, one thread);
2. the backbone's weights: MobileNetV2 as a classification chain (fresh: accuracy is not what
   this measures);
3. for each budget (``--shares`` of the way from the cheapest to the dearest cell, on the table):
   ``nas2deploy search --space dpc ... --measure`` (the closed loop: the best cell whose network
   measures within the budget here), then ``nas2deploy export`` of its ``best.json`` with the
   table and the budget, which measures the exported ONNX network on ONNX Runtime.

Printed per budget: the chosen cell's prediction, its measurement in the closed loop, the
export's measurement, and the export's measurement over the budget (target 0.85-1.05).

    .venv/bin/python benchmarks/dpc_closed_loop.py [--size 256] [--trials 12] [--shares 0.3,0.7] [--out runs/dpc-closed-loop]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.spaces import make_space  # noqa: E402
from nas2deploy.spaces.tables import load_table  # noqa: E402
from nas2deploy.spaces.dpc.space import DPCSpace  # noqa: E402
from nas2deploy.train import save_weights  # noqa: E402

CLI = [sys.executable, "-m", "nas2deploy"]


def run(*args: str) -> dict | None:
    """The command's JSON result, or None after printing its one-line error."""
    done = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True)
    if done.returncode:
        print(f"  nas2deploy {args[0]}: {done.stderr.strip().splitlines()[-1]}", flush=True)
        return None
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--data", default="seg-synthetic:32")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--shares", default="0.3,0.7")
    ap.add_argument("--out", default="runs/dpc-closed-loop")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = str(args.size)
    table_path = out / "table.json"
    if not table_path.exists():
        t0 = time.perf_counter()
        if run("profile", "--space", "dpc", "--input-size", size, "--input-width", size, "--num-classes", "6",
               "--threads", "1", "--out", str(table_path)) is None:
            return
        print(f"profiled the dpc space at {size} x {size} in {time.perf_counter() - t0:.0f} s", flush=True)
    table = load_table(table_path)
    space = make_space("dpc", {"input_size": args.size, "input_width": args.size, "num_classes": 6})
    assert isinstance(space, DPCSpace)
    weights = out / "mobilenetv2.pt"
    if not weights.exists():
        save_weights(space.backbone.build(), weights)
    low, high = space.latency_range(table)
    print(f"cells reach {low:.2f}-{high:.2f} ms predicted (whole networks)", flush=True)
    for share in (float(s) for s in args.shares.split(",")):
        budget = round(low + share * (high - low), 3)
        run_dir, export_dir = out / f"search-{budget}", out / f"export-{budget}"
        found = run("search", "--space", "dpc", "--lut", str(table_path), "--input-size", size, "--input-width", size,
                    "--num-classes", "6", "--weights", str(weights), "--data", args.data, "--budget-ms", str(budget),
                    "--trials", str(args.trials), "--proxy-epochs", "1", "--measure", "--out", str(run_dir))
        if found is None:
            continue
        chosen = found["measured"][-1]
        exported = run("export", "--arch", found["best"]["arch"], "--out", str(export_dir), "--lut", str(table_path),
                       "--budget-ms", str(budget), "--samples", "4", "--force")
        if exported is None:
            continue
        ms = exported["latency"]["onnxruntime"]["median_ms"]
        print(f"budget {budget:.3f} ms: {found['complete']} cells trained of {found['trials']}; chosen trial "
              f"{found['best']['trial']} predicted {found['best']['latency_ms']:.3f} ms, measured in the loop "
              f"{chosen['measured_ms']:.3f} ms ({len(found['measured'])} measured); exported {ms:.3f} ms = "
              f"{ms / budget:.3f}x the budget (target 0.85-1.05)", flush=True)


if __name__ == "__main__":
    main()
