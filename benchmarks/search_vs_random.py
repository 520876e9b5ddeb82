"""Does the search beat chance? Searched networks against random networks of the same latency.

For each space (DenseNAS on the harder built-in shapes, ``synthetic-small:32000``; DCNAS on the
built-in scenes, or ``--data``: CIFAR-10, CamVid; the demo's spaces and tables:
``nas2deploy.demo.demo_table`` profiles one here when the shipped table was measured on another
CPU or the data has other classes than the demo's, CamVid's 11) and two budgets:

1. the gradient strategy: one search per budget (budget mode, lambda adapting), the weight
   warm-up shared by the two (as the DenseNAS paper does for its latency sweep); the log's
   alpha/beta entropy and expected latency at the warm-up's end and at the last epoch are printed;
   its networks: ``derive --budget-ms`` on the table (``searched``) and in closed loop
   (``derive --measure``: measured to fit, ``closed loop``, kept in ``OUT/TASK/closed-BUDGET.json``);
2. with ``--strategies gradient,evolution``, the evolution strategy too (``search --strategy
   evolution``): one single-path supernet trained for as many weight epochs as a gradient search
   has (or ``--supernet-epochs``), then ``--trials`` networks per budget scored by inherited weights (``evolution``);
3. ``--random`` networks from the same window of the same space the search searched (``nas2deploy
   space sample`` with the search's space options: the space's sampler, rejection to
   [fill x budget, budget]);
4. every network trained ``--seeds`` times with the same recipe (the demo's optimiser, batch and
   learning rate, channels-last; by default 32,000 images of ``synthetic-small`` seen once,
   ``nas2deploy.evaluation.scores.HARDER`` says why; a data folder: the demo's epochs on
   ``--train-images`` of its training images) and scored on the test split (top-1 on
   ``--test-images`` images, or mIoU), and measured whole on the table's device.

Statistics per budget: each network's mean and std over seeds; the random networks' mean and
the pooled seed std; each searched network's rank among all; a one-sided Mann-Whitney U test of
the searched network's seed scores against the random networks' mean scores (alternative:
greater); a bootstrap of the difference of means (10,000 resamples of random networks and of the
searched network's seeds). The target: searched mean >= random mean + 2 pooled seed stds, and
p < 0.05. A PNG per space plots score against measured latency (random networks with their seed
std, searched points, the budget window).

Searches resume from their run folders and trainings from ``OUT/TASK/scores.jsonl``
(``nas2deploy.evaluation.scores``): a killed benchmark picks up where it stopped, and trainings that
``architecture_spread.py`` journaled with the same recipe in that file are reused.

    .venv/bin/python benchmarks/search_vs_random.py [--tasks classification,segmentation] [--out runs/svr]
    .venv/bin/python benchmarks/search_vs_random.py --tasks classification --data DIR/cifar10 --train-images 10000 \
        --strategies gradient,evolution --random 8 --seeds 2 --jobs 2 --out runs/svr-cifar
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas2deploy.evaluation.scores import Recipe, ScoreJournal, benchmark_data, benchmark_training, spread  # noqa: E402
from nas2deploy.evaluation.significance import SEARCHED, compare  # noqa: E402

from nas2deploy import plotting  # noqa: E402
from nas2deploy.random_networks import sample_window  # noqa: E402
from nas2deploy.fileio import atomic_write_json, exclusive  # noqa: E402
from nas2deploy.demo import demo_entry, demo_search_config, demo_table, with_classes  # noqa: E402
from nas2deploy.latency.measure import measure_network, settings_from_table, timing_from_table  # noqa: E402
from nas2deploy.objective import LABEL, METRIC  # noqa: E402
from nas2deploy.runs import evolve, open_run, search_after_warmup, start_search  # noqa: E402
from nas2deploy.nets import Network, load_arch, save_arch  # noqa: E402
from nas2deploy.search.config import SearchConfig  # noqa: E402
from nas2deploy.search.loop import SearchRun  # noqa: E402
from nas2deploy.search.closed_loop import derive_measured  # noqa: E402


def plot(path: Path, title: str, metric: str, rows: list[dict[str, Any]], budgets: list[float], fill: float) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {"random": "#9a9a9a", "searched": "#d62728", "closed loop": "#1f77b4", "evolution": "#ff7f0e"}
    for kind in colours:
        pts = [r for r in rows if r["kind"] == kind]
        if not pts:
            continue
        ax.errorbar([p["measured_ms"] for p in pts], [p["mean"] for p in pts], yerr=[p["std"] for p in pts],
                    fmt="o" if kind == "random" else "D", color=colours[kind], alpha=0.7 if kind == "random" else 1,
                    label=kind, capsize=2, ms=4 if kind == "random" else 7)
    for b in budgets:
        ax.axvspan(fill * b, b, color="#2ca02c", alpha=0.08)
        ax.axvline(b, color="#2ca02c", lw=1, ls="--")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return plotting.save(fig, path)


def say(line: str) -> None:
    """A step's progress, indented under its task's lines."""
    print("  " + line, flush=True)


def searched(config: SearchConfig, folder: Path, warm: SearchRun | None) -> tuple[SearchRun, dict[str, Any]]:
    """The search of ``config`` in ``folder`` (``search_after_warmup``) and its log's last line."""
    run = search_after_warmup(config, folder, warm)
    return run, json.loads((folder / "log.jsonl").read_text().splitlines()[-1])


def closed_loop(run: SearchRun, budget: float, path: Path) -> Network:
    """The closed-loop network (``derive --measure``), derived once and kept in ``path``: each
    derivation measures anew, so a resumed benchmark deriving again would train another network."""
    if path.exists():
        return load_arch(path)
    # its rounds printed: a network kept far under the budget says why in the log
    closed = derive_measured(run.space_search, budget, name=path.stem, say=say).arch
    save_arch(closed, path)
    return closed


def bench_task(task: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    entry = demo_entry(task)
    plan = entry.demo
    assert plan is not None
    spec, epochs = benchmark_training(plan, args.data, args.train_epochs)
    source = (spec, plan.space_config["input_size"], args.test_images, args.train_images)
    data = benchmark_data(*source)
    entry = with_classes(entry, data.num_classes)  # a real data set's classes: a table of its own
    table = demo_table(entry, out, say)
    table_path = str(table.path)
    metric = LABEL[METRIC[task]]
    recipe = Recipe(epochs, plan.train_batch, plan.train_lr, device=args.device)
    journal = ScoreJournal(out / "scores.jsonl", data, recipe, source)

    def config(budget: float | None) -> SearchConfig:
        base = demo_search_config(entry, table_path, budget)
        return dataclasses.replace(base, data=spec, epochs=args.search_epochs, warmup_epochs=args.warmup_epochs,
                                   max_batches=args.max_batches, device=args.device, a_lr=args.a_lr or base.a_lr)

    t0 = time.time()
    warm, warm_log = searched(config(None), out / "warmup", None)
    one_shot = None
    if "evolution" in args.strategies:
        t1 = time.time()
        one_shot = dataclasses.replace(config(None), strategy="evolution", warmup_epochs=0,
                                       epochs=args.supernet_epochs or args.search_epochs)
        start_search(one_shot, out / "one-shot", resume=(out / "one-shot" / "checkpoint.pt").exists()).run()
        print(f"{entry.name}: single-path supernet, {one_shot.epochs} epochs in {time.time() - t1:.0f} s", flush=True)
    fastest, slowest = warm.space_search.latency_range()
    shares = [float(s) for s in args.shares.split(",")]
    budgets = [round(fastest + s * (slowest - fastest), 4) for s in shares]
    print(f"{entry.name}: warm-up {args.warmup_epochs} epochs in {time.time() - t0:.0f} s; the space reaches "
          f"{fastest:.3f}-{slowest:.3f} ms; budgets {budgets} ms", flush=True)
    settings, timing = settings_from_table(table), timing_from_table(table)
    results: dict[str, Any] = {"space": entry.name, "metric": metric, "data": data.name, "recipe": dataclasses.asdict(recipe),
                               "budgets": []}
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for budget in budgets:
        t1 = time.time()
        run, last = searched(config(budget), out / f"search-{budget}", warm)
        found = run.space_search.derive(f"searched-{budget}", budget)
        closed = closed_loop(run, budget, out / f"closed-{budget}.json")
        # the baseline is drawn from the space the search searched (the demo's, narrowed from the table's)
        randoms = sample_window(table_path, budget, args.fill, args.random, seed=args.seed,
                                space_config=run.config.space_config).networks
        search_s = time.time() - t1
        networks: list[tuple[str, Network]] = [("searched", found), ("closed loop", closed)]
        if one_shot is not None:
            study = evolve(open_run(out / "one-shot"), out / "one-shot", budget, out / f"evolution-{budget}",
                           trials=args.trials, say=say)
            networks.append(("evolution", load_arch(study["best"]["arch"]).renamed(f"evolution-{budget}")))
        networks += [("random", a) for a in randoms]
        budget_rows = []
        journal.fill([arch for _, arch in networks], args.seeds, args.jobs, lambda line: print(line, flush=True))
        for kind, arch in networks:
            scores = journal.scores(arch, args.seeds)
            mean, std = spread(scores)
            row: dict[str, Any] = {"kind": kind, "name": arch.name, "budget_ms": budget, "scores": scores, "mean": mean,
                                   "std": std, "predicted_ms": table.predict(arch).best_ms,
                                   "measured_ms": measure_network(settings, arch, timing), "arch": arch.to_dict()}
            budget_rows.append(row)
            print(f"    {kind:<12}{arch.name:<22}{row['measured_ms']:>8.3f} ms  {metric} {mean:.3f} +- {std:.3f}"
                  f"  ({' '.join(f'{s:.3f}' for s in scores)})", flush=True)
        summary = compare(budget_rows, rng)
        summary.update({"budget_ms": budget, "search_s": search_s, "expected_ms": last["expected_ms"],
                        "entropy": {k: (warm_log.get(k), last.get(k)) for k in last if k.endswith("entropy")},
                        "argmax": last.get(f"val_{METRIC[task]}_argmax")})
        results["budgets"].append(summary)
        rows += budget_rows
    results["plot"] = plot(out / f"search_vs_random_{entry.name}.png",
                           f"{entry.name}: {args.search_epochs}-epoch search vs {args.random} random networks per window, "
                           f"{args.seeds} seeds x {recipe.epochs} epochs", metric, rows, budgets, args.fill)
    results["rows"] = rows
    results["wall_s"] = time.time() - t0
    return results


def report(results: dict[str, Any]) -> None:
    metric = results["metric"]
    print(f"{results['space']} ({results['wall_s']:.0f} s; plot {results['plot']})")
    for b in results["budgets"]:
        ent = ", ".join(f"{k} {v[0]:.4f}->{v[1]:.4f}" for k, v in b["entropy"].items() if v[0] is not None)
        print(f"  budget {b['budget_ms']:.3f} ms: random {metric} mean {b['random_mean']:.3f} "
              f"(best {b['random_best']:.3f}, worst {b['random_worst']:.3f}), pooled seed std {b['pooled_seed_std']:.3f}; "
              f"search {b['search_s']:.0f} s, argmax {b['argmax']}, E[lat] {b['expected_ms']:.3f} ms; {ent}")
        for kind in SEARCHED:
            if kind not in b:
                continue
            s = b[kind]
            test_p = s["mannwhitney_p"] if s["mannwhitney_p"] is not None else s["bootstrap_p"]
            verdict = "beats" if s["margin_in_pooled_std"] >= 2 and test_p < 0.05 else "does not beat"
            u_test = f"{s['mannwhitney_p']:.3f}" if s["mannwhitney_p"] is not None else "n/a (no scipy)"
            same = " (the searched network)" if kind != "searched" and s.get("same_as_searched") else ""
            print(f"    {kind:<12} {metric} {s['mean']:.3f}{same}, rank {s['rank']}/{s['of']}, "
                  f"{s['margin_in_pooled_std']:+.2f} pooled stds, Mann-Whitney p {u_test}, "
                  f"bootstrap p {s['bootstrap_p']:.3f}: {verdict} random (target: +2 stds, p < 0.05)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="classification,segmentation")
    ap.add_argument("--shares", default="0.25,0.6", help="budgets as shares of the way from the fastest to the slowest")
    ap.add_argument("--fill", type=float, default=0.9)
    ap.add_argument("--search-epochs", type=int, default=12)
    ap.add_argument("--warmup-epochs", type=int, default=4)
    ap.add_argument("--max-batches", type=int, default=16)
    ap.add_argument("--a-lr", type=float, default=0.0, help="the architecture's learning rate (0: the demo's)")
    ap.add_argument("--train-epochs", type=int, default=0, help="0: with the default data 1 (32,000 images seen once), else the demo's")
    ap.add_argument("--strategies", default="gradient", type=lambda v: v.split(","),
                    help="gradient, or gradient,evolution: the evolution strategy's network beside the gradient's")
    ap.add_argument("--supernet-epochs", type=int, default=0,
                    help="the single-path supernet's epochs (0: as many as a gradient search's); a single-path step "
                         "costs about a fifth of the gradient supernet's, so equal compute is about 5x its epochs")
    ap.add_argument("--trials", type=int, default=200, help="networks the evolution strategy scores per budget")
    ap.add_argument("--train-images", type=int, default=0, help="a data folder's training images each network trains on (0: all)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--random", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="", help="default: the harder variant of the space's built-in data (synthetic-small:32000), or that data")
    ap.add_argument("--test-images", type=int, default=4000,
                    help="test images of the built-in classes (their spec's own: 1000); 0 keeps the spec's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="trainings side by side, one thread each (2 on this 2-core CPU)")
    ap.add_argument("--out", default="runs/search_vs_random")
    ap.add_argument("--statistics-only", action="store_true",
                    help="recompute the statistics from OUT/TASK/results.json (no search, training or measurement)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        folder = out / task
        folder.mkdir(exist_ok=True)
        with exclusive(folder / "benchmark.lock", "search_vs_random"):
            if args.statistics_only:
                results = json.loads((folder / "results.json").read_text())
                rng = np.random.default_rng(0)
                for summary in results["budgets"]:
                    rows = [r for r in results["rows"] if r["budget_ms"] == summary["budget_ms"]]
                    summary.update(compare(rows, rng))
            else:
                results = bench_task(task, args, folder)
        atomic_write_json(folder / "results.json", results)
        report(results)


if __name__ == "__main__":
    main()
