"""How well a trained supernet ranks networks: the question every weight-sharing search depends on.

1. A supernet: a one-shot run (``search --strategy evolution``'s training: single paths drawn
   uniformly) of ``--table``'s space (DenseNAS or DCNAS) trained here on ``--data``
   (``OUT/supernet``, resumed after a kill), or a one-shot run folder given with ``--run``.
2. ``--networks`` distinct random networks of one latency window of the table
   (``oneshot.window_routes``: the space's sampler, kept where the table predicts them in
   [fill x budget, budget]).
3. Each scored twice: with the supernet's inherited weights (``runs.inherited_scores``, as the
   evolution strategy scores: batch norms recalibrated on 512 training images, top-1 or mIoU on
   the validation split carved from the training images, on as many of its images as each of
   ``--validation-images`` says: fewer images, more noise in the supernet's order), and trained
   stand-alone from scratch with one fixed recipe (``--seeds`` seeds, journaled in
   ``OUT/scores.jsonl``, ``--jobs`` side by side) and scored on the test split. The inherited
   scores are kept in ``OUT/inherited.json``: a killed run resumes where its trainings stopped.
4. Kendall's tau and Spearman's rho between the two, with bootstrap 95% intervals over the
   networks (``evaluation.significance.rank_agreement``).

With ``--trained`` (and ``--run``, the comparison's one-shot run) steps 2 and 3's training are
replaced by the networks a comparison has trained: ``search_vs_random.py``'s
``OUT/TASK/results.json`` (each network's mean stand-alone score over its seeds), ranked per
budget window and all together. No training: minutes, not hours. Those networks record no route
through the supernet (``OneShotSearch.routes_of`` finds them: a DCNAS network's cells are its one
route; in DenseNAS, rounded widths that repeat make several routes build one network): each is
scored as the mean over up to ``--max-routes`` of them.

    .venv/bin/python benchmarks/supernet_ranking.py --data DIR/cifar10 [--train-images 10000] [--networks 20] \
        [--supernet-epochs 30] [--train-epochs 10] [--jobs 2] --out runs/ranking
    .venv/bin/python benchmarks/supernet_ranking.py --table DCNAS_TABLE --data DIR/camvid --batch 8 ... --out runs/ranking-camvid
    .venv/bin/python benchmarks/supernet_ranking.py --run runs/svr-cifar/classification/one-shot \
        --trained runs/svr-cifar/classification/results.json --out runs/ranking-trained
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.evaluation.scores import Recipe, ScoreJournal, benchmark_data, network_body  # noqa: E402
from nas2deploy.evaluation.significance import rank_agreement  # noqa: E402
from nas2deploy.fileio import atomic_write_json, read_json, sha256_file  # noqa: E402
from nas2deploy.nets import Network, network_from_field  # noqa: E402
from nas2deploy.runs import SearchSetup, inherited_scores, open_run, start_search  # noqa: E402
from nas2deploy.search.config import VALIDATION, SearchConfig  # noqa: E402
from nas2deploy.search.interface import OneShotSearch  # noqa: E402
from nas2deploy.search.oneshot import window_routes  # noqa: E402
from nas2deploy.spaces.tables import load_table, table_space  # noqa: E402
from nas2deploy.validate import Field  # noqa: E402

TABLE = Path(__file__).resolve().parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"


def supernet(args: argparse.Namespace, out: Path) -> tuple[SearchSetup, Path]:
    """The supernet scored with and its run folder: ``--run``'s, or a one-shot one trained here (resumed)."""
    if args.run:
        return open_run(args.run), Path(args.run)
    table = load_table(args.table)
    folder = out / "supernet"
    config = SearchConfig(table=args.table, space=table_space(table).name, data=args.data, strategy="evolution",
                          epochs=args.supernet_epochs, batch_size=args.supernet_batch or args.batch,
                          max_batches=args.max_batches, w_lr=args.w_lr,
                          val_fraction=args.val_fraction, seed=args.seed, device=args.device,
                          space_config=json.loads(args.space_config))
    start = time.perf_counter()
    run = start_search(config, folder, resume=(folder / "checkpoint.pt").exists(),
                       progress=lambda line: print("  supernet " + line, flush=True))
    run.run()
    print(f"supernet: {config.epochs} single-path epochs of {config.max_batches or 'all'} batches "
          f"({time.perf_counter() - start:.0f} s this call)", flush=True)
    return open_run(folder), folder


def inherited_by_count(setup: SearchSetup, folder: Path, nets: list[Network], counts: list[int],
                       kept: Path) -> dict[int, list[float]]:
    """Each network's inherited score on each count of validation images, keyed by the images
    actually scored on. Kept in ``kept`` for the supernet's checkpoint and these networks, so that
    a run resumed after a kill (the trainings take hours) does not score them again."""
    identity = {"supernet": sha256_file(folder / "checkpoint.pt"), "networks": [network_body(n.to_dict()) for n in nets]}
    scored = read_json(kept, "the inherited scores this benchmark kept") if kept.exists() else {}
    if {k: scored.get(k) for k in identity} != identity:
        scored = {**identity, "scores": {}}
    for count in counts:
        if str(count) not in scored["scores"]:
            start = time.perf_counter()
            evaluator = inherited_scores(setup, folder, count)
            values = [evaluator.score(n, 0).value for n in nets]
            scored["scores"][str(count)] = {"images": len(evaluator.holdout.validation), "scores": values}
            atomic_write_json(kept, scored)
            print(f"inherited scores: {len(nets)} networks in {time.perf_counter() - start:.0f} s "
                  f"({len(evaluator.holdout.validation)} validation images each)", flush=True)
    return {scored["scores"][str(c)]["images"]: scored["scores"][str(c)]["scores"] for c in counts}


def say_agreement(label: str, nets: list[Network], inherited: list[float], standalone: list[float],
                  seed: int) -> dict[str, Any]:
    """Kendall's tau and Spearman's rho of the inherited scores against the stand-alone ones,
    printed with their bootstrap intervals; returned for ranking.json."""
    agreement = rank_agreement(inherited, standalone, np.random.default_rng(seed))
    ci = {k: "" if v is None else f" (95% {v[0]:.3f} to {v[1]:.3f})" for k, v in agreement.items() if k.endswith("ci95")}
    value = {k: "undefined (one value throughout)" if agreement[k] is None else f"{agreement[k]:.3f}"
             for k in ("kendall_tau", "spearman_rho")}
    print(f"{label}: Kendall tau {value['kendall_tau']}{ci['kendall_tau_ci95']}, "
          f"Spearman rho {value['spearman_rho']}{ci['spearman_rho_ci95']}, "
          f"{agreement['networks']} networks; inherited scores span {min(inherited):.3f}-{max(inherited):.3f}, "
          f"stand-alone {min(standalone):.3f}-{max(standalone):.3f}")
    return {"networks": [n.to_dict() for n in nets], "inherited": inherited, "standalone": standalone, **agreement}


def rank_trained(args: argparse.Namespace, out: Path) -> None:
    """``--trained``: the comparison's trained networks scored by the supernet, per window and together."""
    if not args.run:
        raise SystemExit("--trained scores with a comparison's one-shot supernet: give --run too")
    setup = open_run(args.run)
    results = json.loads(Path(args.trained).read_text())
    evaluator = inherited_scores(setup, args.run)
    start = time.perf_counter()
    unique = {(r["budget_ms"], network_body(r["arch"])): r for r in results["rows"]}  # closed loop may be the searched
    rows = [(r["budget_ms"], network_from_field(Field(r["arch"], f"{args.trained}: {r['name']}", "run it again")),
             r["mean"]) for r in unique.values()]
    search = setup.space_search
    assert isinstance(search, OneShotSearch), "a one-shot run's supernet runs single networks"
    scored, ways = [], []
    for budget, net, mean in rows:  # a network without its route: the mean over the routes that make it
        routes = [search.route_of(net)] if "route" in net.meta else search.routes_of(net)
        if not routes:
            raise SystemExit(f"{net.name} is not a network of the supernet's space")
        inherited = [evaluator.score(search.route_network(r, net.name), 0).value for r in routes[:args.max_routes]]
        scored.append((budget, net, statistics.mean(inherited), mean))
        ways.append(min(len(routes), args.max_routes))
    print(f"inherited scores: {len(scored)} networks in {time.perf_counter() - start:.0f} s, each the mean over "
          f"{min(ways)}-{max(ways)} routes (the routes that build it, each through its own supernet weights)", flush=True)
    report: dict[str, Any] = {"trained": args.trained, "run": args.run, "windows": {}}
    for budget in sorted({b for b, *_ in scored}):
        window = [(n, a, b) for w, n, a, b in scored if w == budget]
        for n, a, b in sorted(window, key=lambda t: -t[2]):
            print(f"  {budget:g} ms {n.name}: inherited {a:.4f}, stand-alone {b:.4f}")
        report["windows"][str(budget)] = say_agreement(f"budget {budget:g} ms", [n for n, _, _ in window],
                                                       [a for _, a, _ in window], [b for _, _, b in window], args.seed)
    report["all"] = say_agreement("every window", [n for _, n, _, _ in scored], [a for _, _, a, _ in scored],
                                  [b for _, _, _, b in scored], args.seed)
    atomic_write_json(out / "ranking.json", report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic-small:4000", help="the data (a folder: CIFAR-10 as image files)")
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--space-config", default="{}", help="narrow the table's space (JSON: {\"max_stack_layers\": 1})")
    ap.add_argument("--run", help="score with this one-shot run's supernet instead of training one")
    ap.add_argument("--trained", help="rank the networks of a comparison's results.json instead of training new ones")
    ap.add_argument("--max-routes", type=int, default=4, help="--trained: routes scored per network at most")
    ap.add_argument("--supernet-epochs", type=int, default=30)
    ap.add_argument("--max-batches", type=int, default=0, help="batches per supernet epoch (0: the whole weight split)")
    ap.add_argument("--batch", type=int, default=64, help="the stand-alone recipe's batch (and the supernet's)")
    ap.add_argument("--supernet-batch", type=int, default=0, help="the supernet's batch, where it differs (0: --batch)")
    ap.add_argument("--w-lr", type=float, default=SearchConfig.w_lr, help="the supernet's weight learning rate")
    ap.add_argument("--validation-images", default=str(VALIDATION),
                    help="held-out images each inherited score is taken on, comma-separated to rank with several "
                         "(0: the whole architecture split; the evolution strategy scores on the first)")
    ap.add_argument("--val-fraction", type=float, default=0.5, help="CIFAR practice: 25k weights / 25k architecture")
    ap.add_argument("--share", type=float, default=0.5, help="the budget, as a share of the way from fastest to slowest")
    ap.add_argument("--fill", type=float, default=0.8)
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--train-images", type=int, default=10000, help="stand-alone training images (0: all)")
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.05, help="the stand-alone recipe's learning rate")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/ranking")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.trained:
        rank_trained(args, out)
        return
    setup, folder = supernet(args, out)
    search, config = setup.space_search, setup.config
    assert isinstance(search, OneShotSearch), "a one-shot run's supernet runs single networks"
    fastest, slowest = search.latency_range()
    budget = fastest + args.share * (slowest - fastest)
    routes = window_routes(search, setup.table, budget, args.fill, args.networks, args.seed)
    print(f"window [{args.fill * budget:.4g}, {budget:.4g}] ms of {fastest:.4g}-{slowest:.4g}: {len(routes)} networks",
          flush=True)
    size = setup.space.config_dict()["input_size"]
    nets = [search.route_network(r, f"window-{i:02d}") for i, r in enumerate(routes)]
    inherited = inherited_by_count(setup, folder, nets, [int(c) for c in args.validation_images.split(",")],
                                   out / "inherited.json")
    trained_data = benchmark_data(config.data, size, 0, args.train_images)
    recipe = Recipe(args.train_epochs, args.batch, args.lr, device=args.device)
    journal = ScoreJournal(out / "scores.jsonl", trained_data, recipe, (config.data, size, 0, args.train_images))
    start = time.perf_counter()
    journal.fill(nets, args.seeds, args.jobs, say=lambda line: print(line, flush=True))
    standalone = [statistics.mean(journal.scores(n, args.seeds)) for n in nets]
    print(f"stand-alone: {len(nets)} networks x {args.seeds} seeds, {args.train_epochs} epochs of "
          f"{len(trained_data.train)} images ({time.perf_counter() - start:.0f} s this call)", flush=True)  # type: ignore[arg-type]
    first = next(iter(inherited.values()))
    for n, a, b in sorted(zip(nets, first, standalone), key=lambda t: -t[2]):
        print(f"  {n.name}: predicted {setup.table.predict(n).best_ms:.4f} ms, inherited {a:.4f}, stand-alone {b:.4f}")
    agreement = {str(count): say_agreement(f"window [{args.fill * budget:.4g}, {budget:.4g}] ms, inherited on {count} "
                                           f"images", nets, scores, standalone, args.seed)
                 for count, scores in inherited.items()}
    atomic_write_json(out / "ranking.json", {"budget_ms": budget, "fill": args.fill, "data": config.data,
                                             "train_images": args.train_images, "train_epochs": args.train_epochs,
                                             "seeds": args.seeds, "by_validation_images": agreement})


if __name__ == "__main__":
    main()
