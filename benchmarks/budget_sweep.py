"""DenseNAS search under three latency budgets on the built-in data, end to end on this CPU.

For each budget: search (budget mode, lambda adapting); derive the most probable architecture
whose predicted latency fits and measure it whole with ONNX Runtime through the table's harness;
then derive in closed loop (``derive --measure``: tighten the target until the measured latency
fits) and train that network briefly. The weight warm-up is shared by the three
searches, as the paper does for its latency sweep (section 4.4). Uses the shipped table for the
built-in data's space (32x32, width x0.5, one stacking layer, 10 classes).

    .venv/bin/python benchmarks/budget_sweep.py [--budgets 0.40,0.50,0.65] [--epochs 6] [--warmup-epochs 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from nas2deploy.data import open_dataset
from nas2deploy.latency.validate import DriftTracker, measure_arch, settings_from_table, timing_from_table
from nas2deploy.search.derive import derive_under_budget, fastest_latency
from nas2deploy.search.loop import Search, SearchConfig
from nas2deploy.search.verify import derive_measured
from nas2deploy.train import train_arch

TABLE = Path(__file__).parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--budgets", default="", help="comma-separated ms; default: 1.3x, 2x, 3x the fastest")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--max-batches", type=int, default=8)
    ap.add_argument("--train-epochs", type=int, default=15)
    args = ap.parse_args()
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp())
    base = dict(table=args.table, epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=32,
                max_batches=args.max_batches, a_lr=3e-3)
    warm = Search(SearchConfig(**base), tmp / "warmup")
    warm.run(until=args.warmup_epochs)
    fastest = fastest_latency(warm.model)
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else [round(fastest * f, 3) for f in (1.3, 2.0, 3.0)]
    data = open_dataset("synthetic")
    settings = settings_from_table(warm.table)
    timing = timing_from_table(warm.table)
    rows = []
    with DriftTracker(warm.table, settings, timing) as tracker:
        for budget in budgets:
            run = Search(SearchConfig(**base, budget_ms=budget), tmp / f"b{budget}")
            run.net.load_state_dict(warm.net.state_dict())  # shared warm-up
            run.w_opt.load_state_dict(copy.deepcopy(warm.w_opt.state_dict()))
            run.epoch, run.step, run.w_step = warm.epoch, warm.step, warm.w_step
            log = run.run()
            arch = derive_under_budget(run.net, run.model, budget, name=f"budget-{budget}")
            pred = run.table.predict(arch)
            drift = tracker.update()
            measured = measure_arch(settings, arch, timing)
            closed = derive_measured(run.model, budget, name=f"budget-{budget}-measured")
            _, top1 = train_arch(closed.arch, data, args.train_epochs)
            rows.append((budget, log["expected_ms"], log["lambda"], pred.best_ms, drift, measured,
                         closed.measured_ms, closed.rounds, len(closed.arch.blocks), top1))
    print(f"table {Path(args.table).name}; fastest achievable {fastest:.3f} ms; search {args.epochs} epochs "
          f"({args.warmup_epochs} warm-up shared), {args.max_batches} batches of 32 per pass; train {args.train_epochs} epochs")
    print("  table-only: derived on predictions (calibrated), then measured whole (drift factor shown);")
    print("  closed loop: derive --measure; its network is the one trained (top-1 on the test split)")
    print(f"  {'budget':>8}{'E[lat]':>9}{'lambda':>8} | {'predicted':>9}{'measured':>9}{'drift':>7}{'x budget':>9} |"
          f"{'measured':>9}{'rounds':>7}{'x budget':>9}{'blocks':>7}{'top-1':>7}")
    for budget, expected, lam, predicted, drift, measured, closed_ms, rounds, blocks, top1 in rows:
        print(f"  {budget:>6.3f}ms{expected:>7.3f}ms{lam:>8.3g} | {predicted:>7.3f}ms{measured:>7.3f}ms{drift:>7.3f}"
              f"{measured / budget:>9.2f} |{closed_ms:>7.3f}ms{rounds:>7}{closed_ms / budget:>9.2f}{blocks:>7}{top1:>7.3f}")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
