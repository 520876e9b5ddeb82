"""Search under three latency budgets on the built-in data, end to end on this CPU: DenseNAS on
synthetic shapes (``--task classification``, the default) or DCNAS on synthetic scenes
(``--task segmentation``); spaces, data and search settings are the demo's (``nas2deploy.demo.PLANS``).

For each budget: search (budget mode, lambda adapting); derive the most probable architecture
whose predicted latency lies in [0.9, 1] x the budget (``--fill 0.9``, the default; the plain
most probable one that fits, ``--fill 0``, is shown for comparison) and measure it whole with
ONNX Runtime through the table's harness;
then derive in closed loop (``derive --measure``: tighten the target until the measured latency
fits) and train that network briefly, with ``--seeds`` seeds (the score, top-1 or mIoU, is their
mean: one short training varies by a few points from seed to seed). The weight warm-up is shared
by the three searches, as the DenseNAS paper does for its latency sweep (section 4.4).
Classification uses the shipped table for the built-in data's space (32x32, width x0.5, one
stacking layer, 10 classes); segmentation profiles and calibrates the demo's DCNAS space here first (~30 s).

Default budgets: 1.3x, 2x and 3x the fastest network (DenseNAS, whose networks span 10x);
20%, 50% and 80% of the way from the fastest to the slowest network the derivation reaches
(DCNAS, whose networks span ~1.4x: the fixed output block is most of a small network's latency).

    .venv/bin/python benchmarks/budget_sweep.py [--task segmentation] [--budgets 0.40,0.50,0.65] [--epochs 6] [--seeds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from nas2deploy.backends import BackendSettings
from nas2deploy.data import open_dataset
from nas2deploy.demo import demo_entry, demo_search_config
from nas2deploy.latency.measure import DriftTracker, measure_network, settings_from_table, timing_from_table
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.fidelity import validate_table
from nas2deploy.objective import LABEL, METRIC
from nas2deploy.runs import start_search
from nas2deploy.search.config import SearchConfig
from nas2deploy.search.closed_loop import derive_measured
from nas2deploy.spaces import SPACES, make_space
from nas2deploy.spaces.tables import table_space
from nas2deploy.train import train_arch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted({e.task for e in SPACES.values() if e.demo}), default="classification")
    ap.add_argument("--table", help="default: the shipped table (classification) or one profiled here (segmentation)")
    ap.add_argument("--budgets", default="", help="comma-separated ms (default: see above)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--max-batches", type=int, default=8)
    ap.add_argument("--train-epochs", type=int, help="default: 15 (classification), 20 (segmentation, as the demo)")
    ap.add_argument("--seeds", type=int, default=2, help="trainings per network (the score is their mean)")
    args = ap.parse_args()
    entry = demo_entry(args.task)
    plan = entry.demo
    assert plan is not None
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp())
    table_path = args.table or (str(plan.shipped) if plan.shipped else "")
    if not table_path:
        table_path = str(tmp / plan.table_name)
        table, _ = profile_space(make_space(entry.name, plan.space_config), BackendSettings(), table_path)
        validate_table(table, table_space(table).sample_arch, 20)  # calibrates it, as the demo does
    train_epochs = args.train_epochs or (15 if args.task == "classification" else plan.train_epochs)

    def config(budget: float | None) -> SearchConfig:
        return dataclasses.replace(demo_search_config(entry, table_path, budget), epochs=args.epochs,
                                   warmup_epochs=args.warmup_epochs, max_batches=args.max_batches)

    warm = start_search(config(None), tmp / "warmup")
    warm.run(until=args.warmup_epochs)
    fastest, slowest = warm.space_search.latency_range()
    shares = [0.3, 1.0, 2.0] if args.task == "classification" else [0.2, 0.5, 0.8]
    scale = fastest if args.task == "classification" else slowest - fastest
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else [round(fastest + f * scale, 3) for f in shares]
    data = open_dataset(plan.data, make_space(entry.name, plan.space_config).config_dict()["input_size"])
    settings = settings_from_table(warm.table)
    timing = timing_from_table(warm.table)
    rows = []
    with DriftTracker(warm.table, settings, timing) as tracker:
        for budget in budgets:
            run = start_search(config(budget), tmp / f"b{budget}")
            run.continue_from(warm)  # the shared warm-up
            log = run.run()
            arch = run.space_search.derive(f"budget-{budget}", budget)
            pred = run.table.predict(arch)
            plain = run.table.predict(run.space_search.derive("plain", budget, fill=0.0)).best_ms
            drift = tracker.update()
            measured = measure_network(settings, arch, timing)
            closed = derive_measured(run.space_search, budget, name=f"budget-{budget}-measured")
            scores = [train_arch(closed.arch, data, train_epochs, batch_size=plan.train_batch, lr=plan.train_lr, seed=seed)[1]
                      for seed in range(args.seeds)]
            rows.append((budget, log["expected_ms"], log["lambda"], plain, pred.best_ms, drift, measured,
                         closed.measured_ms, closed.rounds, closed.arch, sum(scores) / len(scores), scores))
    metric = LABEL[METRIC[args.task]]
    print(f"{entry.name} on {plan.data}, table {Path(table_path).name}; derivation reaches {fastest:.3f}-{slowest:.3f} ms; search "
          f"{args.epochs} epochs ({args.warmup_epochs} warm-up shared), {args.max_batches} batches of "
          f"{warm.config.batch_size} per pass; train {train_epochs} epochs x {args.seeds} seeds")
    print("  fill 0: predicted latency of the most probable network that fits (no lower edge);")
    print("  table-only: derived on predictions (calibrated, fill 0.9), then measured whole (drift factor shown);")
    print(f"  closed loop: derive --measure; its network is the one trained ({metric} on the test split)")
    print(f"  {'budget':>8}{'E[lat]':>9}{'lambda':>8}{'fill 0':>9} | {'predicted':>9}{'measured':>9}{'drift':>7}{'x budget':>9} |"
          f"{'measured':>9}{'rounds':>7}{'x budget':>9}{'MACs':>8}{metric:>7}  per seed")
    for budget, expected, lam, plain, predicted, drift, measured, closed_ms, rounds, arch, score, scores in rows:
        macs = sum(spec.macs() for spec in arch.op_specs()) / 1e6
        print(f"  {budget:>6.3f}ms{expected:>7.3f}ms{lam:>8.3g}{plain:>7.3f}ms | {predicted:>7.3f}ms{measured:>7.3f}ms{drift:>7.3f}"
              f"{measured / budget:>9.2f} |{closed_ms:>7.3f}ms{rounds:>7}{closed_ms / budget:>9.2f}{macs:>7.1f}M{score:>7.3f}  "
              + " ".join(f"{t:.3f}" for t in scores))
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
