"""Searching on the INT8 table against searching on the fp32 table and quantising afterwards, for
one INT8 deployment budget, side by side in one run.

``--strategy gradient`` (the default strategy of ``search``): ``--run`` is a DenseNAS run folder
whose weight warm-up is done (``search_vs_random.py``'s ``OUT/classification/warmup``). Both
searches start from that warm-up, as searches under several budgets do, and differ only in the
table their latency loss and derivation read:

- **int8 table**: searched at the budget on the INT8 table (``--int8-lut``), derived in closed
  loop (``derive --measure``: the network measured quantised on this CPU until it fits).
- **fp32 table, closed loop on int8**: what a user with only an fp32 table does for an INT8
  target: search the fp32 table at the budget scaled by the fp32 / int8 ratio of the two tables
  (the median over 200 random networks), then derive in closed loop at the deployment budget with
  each candidate quantised and measured (``derive_measured`` with the int8 measurement): the
  same closed loop as the int8 search's, only the table differs.
- **fp32 table at the deployment budget**: the naive use: the same fp32 search derived at the
  INT8 budget by its own table, quantised as it is.

``--strategy evolution``: ``--run`` is a ``search --strategy evolution`` run folder (its trained
single-path supernet: the supernet does not depend on the table, only the evolutionary search of
the budget's window does, so both searches score networks with the same inherited weights):

- **int8 table**: the window [fill x budget, budget] of the INT8 table, the best candidates
  measured quantised on this CPU until one fits (the closed loop, ``--measure``).
- **fp32 table, then quantised**: search the fp32 table at the scaled budget, quantise the
  network, measure it and, while it measures over the budget (or under the window), scale the
  fp32 budget by budget / measured and search again (at most 3 rounds; the last network within
  the budget is kept).
- **fp32 table at the deployment budget**: the fp32 network of the deployment budget, quantised.

Each network is trained stand-alone (``--epochs`` on ``--train-images`` CIFAR-10 images, the demo's
optimiser, batch and learning rate, ``--seeds`` seeds) and exported by ``Exporter`` as ``nas2deploy
export --precision int8 --lut INT8`` does (512 calibration images, MinMax): printed per network
are the int8 latency measured against the budget, its fp32 top-1 on the test split, the int8 drop
on ``--test-images`` test images (all of them by default: the int8 top-1 is the first less the
second), the mean over seeds. A killed run resumes: searches from their checkpoints or studies,
closed-loop networks and trainings from the files they left.

    .venv/bin/python benchmarks/int8_search.py --run runs/svr-cifar/classification/warmup --data DIR/cifar10 \\
        --budget-ms 0.35 [--strategy gradient|evolution] [--trials 100] [--train-images 10000] [--epochs 6] \\
        [--seeds 2] [--out runs/int8-search]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.demo import demo_entry  # noqa: E402
from nas2deploy.deploy.export import CheckFailed, Exporter, ExportOptions  # noqa: E402
from nas2deploy.evaluation.scores import benchmark_data  # noqa: E402
from nas2deploy.latency.measure import measure_network, settings_from_table, timing_from_table  # noqa: E402
from nas2deploy.nets import Network, load_arch, save_arch  # noqa: E402
from nas2deploy.runs import SearchSetup, evolve, open_run, search_after_warmup  # noqa: E402
from nas2deploy.search.closed_loop import derive_measured  # noqa: E402
from nas2deploy.search.loop import SearchRun  # noqa: E402
from nas2deploy.spaces.tables import load_table, table_space  # noqa: E402
from nas2deploy.train import save_weights, train_arch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INT8_TABLE = ROOT / "latency_tables" / "densenas32_small_c10_ort_cpu_int8_b1.json"


def on_table(setup: SearchSetup, path: str) -> SearchSetup:
    """The run's search with another table: the evolution strategy's study prices and windows by it."""
    return dataclasses.replace(setup, table=load_table(path), config=dataclasses.replace(setup.config, table=path))


def say(line: str) -> None:
    """A step's progress, indented under the benchmark's lines."""
    print("  " + line, flush=True)


def searched(setup: SearchSetup, run: str, budget: float, out: Path, trials: int, fill: float,
             measure: bool = False) -> Network:
    study = evolve(setup, run, budget, out, trials, fill=fill, measure=measure,
                   say=say)
    return load_arch(study["best"]["arch"])


def ratio(fp32: Any, int8: Any, setup: SearchSetup) -> float:
    """The median fp32 / int8 prediction over 200 random networks of the run's space."""
    rng = random.Random(0)
    nets = [setup.space.sample_arch(rng) for _ in range(200)]
    return statistics.median(fp32.predict(n).best_ms / int8.predict(n).best_ms for n in nets)


def kept(path: Path, derive: Callable[[], Network]) -> Network:
    """The network in ``path``, derived once: a closed loop measures anew each time, so a resumed
    benchmark deriving again could train another network."""
    if not path.exists():
        save_arch(derive(), path)
    return load_arch(path)


def by_evolution(args: argparse.Namespace, setup: SearchSetup, int8_setup: SearchSetup, scale: float,
                 quantised_ms: Callable[[Network], float]) -> dict[str, Network]:
    out, budget = Path(args.out), args.budget_ms
    # the int8 search in closed loop (``search --measure``): its candidates measured quantised here
    networks = {"int8 table": searched(int8_setup, args.run, budget, out / "int8", args.trials, args.fill, measure=True)}
    fp32_budget, fits = budget * scale, None
    for round_ in range(3):
        net = searched(setup, args.run, round(fp32_budget, 4), out / f"fp32-{round(fp32_budget, 4)}", args.trials, args.fill)
        ms = quantised_ms(net)
        print(f"  fp32 search at {fp32_budget:.4f} ms: quantised {ms:.4f} ms (budget {budget:g})", flush=True)
        if ms <= budget:
            fits = net
            if ms >= args.fill * budget:
                break
        fp32_budget *= budget / ms
    networks["fp32 table, scaled"] = fits if fits is not None else net
    networks["fp32 table, same budget"] = searched(setup, args.run, budget, out / f"fp32-{budget:g}", args.trials, args.fill)
    return networks


def by_gradient(args: argparse.Namespace, setup: SearchSetup, int8_setup: SearchSetup, scale: float,
                quantised_ms: Callable[[Network], float]) -> dict[str, Network]:
    out, budget = Path(args.out), args.budget_ms
    warm = search_after_warmup(setup.config, args.run, None)  # done already: its weights and optimiser

    def search(on: SearchSetup, at: float) -> SearchRun:
        # the run's space, which may be narrower than the table's (the demo leaves out stacking layers)
        table = on.config.table
        own = table_space(on.table).config_dict()
        narrowed = {k: v for k, v in setup.space.config_dict().items() if own.get(k) != v}
        config = dataclasses.replace(setup.config, table=table, budget_ms=at,
                                     space_config={**setup.config.space_config, **narrowed})
        folder = out / f"gradient-{Path(table).stem}-{at:g}"
        t0 = time.time()
        run = search_after_warmup(config, folder, warm)
        print(f"  gradient search on {Path(table).name} at {at:g} ms: {time.time() - t0:.0f} s", flush=True)
        return run

    int8_run = search(int8_setup, budget)
    fp32_run = search(setup, round(budget * scale, 4))
    return {
        "int8 table": kept(out / "int8-table.json", lambda: derive_measured(
            int8_run.space_search, budget, name="int8-table", say=say, fill=args.fill).arch),
        "fp32 table, closed loop on int8": kept(out / "fp32-table-int8-loop.json", lambda: derive_measured(
            fp32_run.space_search, budget, name="fp32-table-int8-loop", say=say, fill=args.fill, measure=quantised_ms,
            runner="the int8 ONNX Runtime runner").arch),
        "fp32 table, same budget": kept(out / "fp32-table-same-budget.json", lambda: fp32_run.space_search.derive(
            "fp32-table-same-budget", budget, args.fill)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="gradient: a DenseNAS run folder whose warm-up is done; "
                        "evolution: a search --strategy evolution run folder (its trained supernet)")
    parser.add_argument("--strategy", choices=("gradient", "evolution"), default="gradient")
    parser.add_argument("--data", required=True, help="the CIFAR-10 folder the run searched")
    parser.add_argument("--budget-ms", type=float, required=True, help="the INT8 deployment budget")
    parser.add_argument("--int8-lut", default=str(INT8_TABLE))
    parser.add_argument("--fill", type=float, default=0.9)
    parser.add_argument("--trials", type=int, default=100, help="evolution: trials per search")
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--test-images", type=int, default=10000, help="the export's check (10000: the whole test split, "
                        "the images the fp32 top-1 is scored on)")
    parser.add_argument("--out", default="runs/int8-search")
    args = parser.parse_args()
    out, budget = Path(args.out), args.budget_ms
    setup = open_run(args.run)
    int8_setup = on_table(setup, args.int8_lut)
    int8_settings, int8_timing = settings_from_table(int8_setup.table), timing_from_table(int8_setup.table)
    quantised_ms = lambda net: measure_network(int8_settings, net, int8_timing)  # noqa: E731
    scale = ratio(setup.table, int8_setup.table, setup)
    print(f"fp32 / int8 predictions: median ratio {scale:.3f} over 200 random networks", flush=True)

    t0 = time.time()
    networks = (by_gradient if args.strategy == "gradient" else by_evolution)(args, setup, int8_setup, scale, quantised_ms)
    search_s = time.time() - t0

    data = benchmark_data(args.data, 32, 0, args.train_images)
    plan = demo_entry("classification").demo  # the demo's batch and learning rate, as search_vs_random.py trains
    assert plan is not None
    rows = []
    for kind, net in networks.items():
        folder = out / kind.replace(" ", "-").replace(",", "")
        folder.mkdir(parents=True, exist_ok=True)
        figures = []
        for seed in range(args.seeds):
            done = folder / f"seed{seed}.json"
            if done.exists():  # a killed benchmark resumes at the training it was doing
                figures.append(json.loads(done.read_text()))
                continue
            model, top1 = train_arch(net, data, args.epochs, plan.train_batch, plan.train_lr, seed=seed)
            save_weights(model, folder / f"seed{seed}.pt")
            options = ExportOptions(data=args.data, samples=args.test_images, precision="int8", calibration_data=args.data,
                                    lut=args.int8_lut, budget_ms=budget, force=True)
            try:
                report = Exporter(net, str(folder / f"seed{seed}.pt"), folder / f"export{seed}", options).run()
            except CheckFailed:
                report = json.loads((folder / f"export{seed}" / "report.json").read_text())
            check = {c["candidate"]: c for c in report["accuracy"]["comparisons"]}["onnxruntime"]
            row = {"top1_fp32": top1, "drop": check["accuracy_drop"],
                   "int8_ms": report["latency"]["onnxruntime"]["timing"]["median_ms"]}
            done.write_text(json.dumps(row))
            figures.append(row)
        mean = {k: statistics.fmean(f[k] for f in figures) for k in figures[0]}
        rows.append((kind, net, mean, [f["top1_fp32"] - f["drop"] / 100 for f in figures]))
        print(f"{kind}: done", flush=True)

    print(f"\nINT8 budget {budget:g} ms (window {args.fill:g}x); {args.strategy} searches {search_s:.0f} s; {args.seeds} seeds x "
          f"{args.epochs} epochs on {args.train_images} images; int8 top-1 on {args.test_images} test images\n")
    print("| searched on | int8 predicted ms | int8 measured ms | x budget | fp32 top-1 | int8 drop (points) | int8 top-1 (seeds) |")
    print("|---|---|---|---|---|---|---|")
    for kind, net, mean, int8_top1 in rows:
        print(f"| {kind} | {int8_setup.table.predict(net).best_ms:.4f} | {mean['int8_ms']:.4f} | {mean['int8_ms'] / budget:.2f} | "
              f"{mean['top1_fp32']:.3f} | {mean['drop']:+.2f} | {statistics.fmean(int8_top1):.3f} "
              f"({' '.join(f'{s:.3f}' for s in int8_top1)}) |")


if __name__ == "__main__":
    main()
