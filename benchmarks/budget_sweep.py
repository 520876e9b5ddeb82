"""DenseNAS search under three latency budgets on the built-in data, end to end on this CPU.

For each budget: search (budget mode, lambda adapting); derive the most probable architecture
whose predicted latency lies in [0.9, 1] x the budget (``--fill 0.9``, the default; the plain
most probable one that fits, ``--fill 0``, is shown for comparison) and measure it whole with
ONNX Runtime through the table's harness;
then derive in closed loop (``derive --measure``: tighten the target until the measured latency
fits) and train that network briefly, with ``--seeds`` seeds (top-1 is their mean: one 15-epoch
training varies by a few points from seed to seed). The weight warm-up is shared by the three
searches, as the paper does for its latency sweep (section 4.4). Uses the shipped table for the
built-in data's space (32x32, width x0.5, one stacking layer, 10 classes).

    .venv/bin/python benchmarks/budget_sweep.py [--budgets 0.40,0.50,0.65] [--epochs 6] [--warmup-epochs 2] [--seeds 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from nas2deploy.data import open_dataset
from nas2deploy.latency.validate import (
    DriftTracker,
    measure_arch,
    settings_from_table,
    timing_from_table,
)
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
    ap.add_argument("--seeds", type=int, default=2, help="trainings per network (top-1 is their mean)")
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
            plain = run.table.predict(derive_under_budget(run.net, run.model, budget, fill=0.0)).best_ms
            drift = tracker.update()
            measured = measure_arch(settings, arch, timing)
            closed = derive_measured(run.model, budget, name=f"budget-{budget}-measured")
            top1s = [train_arch(closed.arch, data, args.train_epochs, seed=seed)[1] for seed in range(args.seeds)]
            top1 = sum(top1s) / len(top1s)
            rows.append((budget, log["expected_ms"], log["lambda"], plain, pred.best_ms, drift, measured,
                         closed.measured_ms, closed.rounds, closed.arch, top1, top1s))
    print(f"table {Path(args.table).name}; fastest achievable {fastest:.3f} ms; search {args.epochs} epochs "
          f"({args.warmup_epochs} warm-up shared), {args.max_batches} batches of 32 per pass; train {args.train_epochs} epochs x {args.seeds} seeds")
    print("  fill 0: predicted latency of the most probable network that fits (no lower edge);")
    print("  table-only: derived on predictions (calibrated, fill 0.9), then measured whole (drift factor shown);")
    print("  closed loop: derive --measure; its network is the one trained (top-1 on the test split)")
    print(f"  {'budget':>8}{'E[lat]':>9}{'lambda':>8}{'fill 0':>9} | {'predicted':>9}{'measured':>9}{'drift':>7}{'x budget':>9} |"
          f"{'measured':>9}{'rounds':>7}{'x budget':>9}{'MACs':>7}{'top-1':>7}  per seed")
    for budget, expected, lam, plain, predicted, drift, measured, closed_ms, rounds, arch, top1, top1s in rows:
        macs = sum(spec.macs() for spec in arch.op_specs()) / 1e6
        print(f"  {budget:>6.3f}ms{expected:>7.3f}ms{lam:>8.3g}{plain:>7.3f}ms | {predicted:>7.3f}ms{measured:>7.3f}ms{drift:>7.3f}"
              f"{measured / budget:>9.2f} |{closed_ms:>7.3f}ms{rounds:>7}{closed_ms / budget:>9.2f}{macs:>6.1f}M{top1:>7.3f}  "
              + " ".join(f"{t:.3f}" for t in top1s))
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
