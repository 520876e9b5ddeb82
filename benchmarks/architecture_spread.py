"""Does architecture matter more than the seed on the built-in benchmark?

``--networks`` random networks of one latency window of the demo's space (``nas2deploy space
sample``'s sampler, rejection to [fill x budget, budget]; the budget ``--share`` of the way from
the space's fastest to its slowest network) are each trained ``--seeds`` times with the recipe of
``search_vs_random.py`` and scored on the test split (the demo's table, profiled here when the
shipped one was measured on another CPU, as ``search_vs_random.py`` does). Printed: every
network's mean and seed std, the best minus the worst mean, the pooled and the largest seed
std. Target: best - worst >= 10 points while one network's seed std stays <= 2 points; only then
can a comparison of a searched network against random ones tell a search that chooses from one
that does not.

Trainings are journaled (``nas2deploy.evaluation.scores``): a killed run resumes. Given the task folder of a
``search_vs_random.py`` run as ``--out`` (``runs/svr32k/classification``), it takes that run's table
and trainings: the first random networks of its lower budget's window are these, trained with the
same recipe.

    .venv/bin/python benchmarks/architecture_spread.py [--networks 20] [--seeds 3] [--out runs/svr32k/classification]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas2deploy.evaluation.scores import Recipe, ScoreJournal, benchmark_data, benchmark_training, pooled_std, spread  # noqa: E402

from nas2deploy.random_networks import sample_window  # noqa: E402
from nas2deploy.demo import demo_entry, demo_search_config, demo_table, with_classes  # noqa: E402
from nas2deploy.fileio import atomic_write_json, exclusive  # noqa: E402
from nas2deploy.objective import LABEL, METRIC  # noqa: E402
from nas2deploy.runs import prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="classification")
    ap.add_argument("--share", type=float, default=0.25, help="the budget, as a share of the way from fastest to slowest")
    ap.add_argument("--fill", type=float, default=0.9)
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="of the network sampler")
    ap.add_argument("--train-epochs", type=int, default=0, help="0: with the default data 1 (32,000 images seen once), else the demo's")
    ap.add_argument("--test-images", type=int, default=4000, help="as search_vs_random.py's")
    ap.add_argument("--data", default="", help="default: the harder variant of the space's built-in data (synthetic-small:32000), or that data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="trainings side by side, one thread each (2 on this 2-core CPU)")
    ap.add_argument("--out", default="runs/architecture_spread")
    args = ap.parse_args()
    torch.set_num_threads(2)
    entry = demo_entry(args.task)
    plan = entry.demo
    assert plan is not None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec, epochs = benchmark_training(plan, args.data, args.train_epochs)
    data = benchmark_data(spec, plan.space_config["input_size"], args.test_images)
    entry = with_classes(entry, data.num_classes)  # as search_vs_random's: a real set's classes, its own table
    table = demo_table(entry, out, lambda line: print("  " + line, flush=True))
    config = demo_search_config(entry, str(table.path), None)
    prepared = prepare(config)
    fastest, slowest = prepared.space_search.latency_range()
    budget = round(fastest + args.share * (slowest - fastest), 4)
    networks = sample_window(config.table, budget, args.fill, args.networks, args.seed,
                             space_config=config.space_config).networks
    recipe = Recipe(epochs, plan.train_batch, plan.train_lr, device=args.device)
    metric = LABEL[METRIC[args.task]]
    print(f"{len(networks)} random networks of {entry.name} in [{args.fill * budget:.3f}, {budget:.3f}] ms "
          f"(the space reaches {fastest:.3f}-{slowest:.3f}); {args.seeds} seeds x {recipe.epochs} epochs on {data.name}",
          flush=True)
    rows: list[dict[str, Any]] = []
    start = time.time()
    with exclusive(out / "benchmark.lock", "architecture_spread"):
        journal = ScoreJournal(out / "scores.jsonl", data, recipe, (spec, prepared.space.config_dict()["input_size"], args.test_images))
        journal.fill(networks, args.seeds, args.jobs, lambda line: print(line, flush=True))
        for arch in networks:
            scores = journal.scores(arch, args.seeds)
            mean, std = spread(scores)
            rows.append({"name": arch.name, "scores": scores, "mean": mean, "std": std,
                         "predicted_ms": prepared.table.predict(arch).best_ms, "arch": arch.to_dict()})
            print(f"  {arch.name:<12}{rows[-1]['predicted_ms']:>7.3f} ms  {metric} {mean:.3f} +- {std:.3f}  "
                  f"({' '.join(f'{s:.3f}' for s in scores)})", flush=True)
        means = [float(r["mean"]) for r in rows]
        summary = {"budget_ms": budget, "fill": args.fill, "data": data.name, "recipe": dataclasses.asdict(recipe),
                   "best_minus_worst": max(means) - min(means), "mean": statistics.mean(means),
                   "pooled_seed_std": pooled_std(rows), "largest_seed_std": max(float(r["std"]) for r in rows),
                   "wall_s": time.time() - start, "rows": rows}
        atomic_write_json(out / "spread.json", summary)  # beside search_vs_random.py's results.json, not over it
    met = summary["best_minus_worst"] >= 0.10 and summary["largest_seed_std"] <= 0.02
    print(f"best - worst {100 * summary['best_minus_worst']:.1f} points (target >= 10); seed std pooled "
          f"{100 * summary['pooled_seed_std']:.1f}, largest {100 * summary['largest_seed_std']:.1f} points (target <= 2): "
          f"{'met' if met else 'not met'} ({summary['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
