"""The DPC benchmarks, one study per subcommand (``latency``, ``proxy``, ``samplers``, ``workers``,
``closed-loop``); each prints its figures (``benchmarks/README.md`` quotes them).

    .venv/bin/python benchmarks/dpc.py STUDY [options]      # STUDY --help: its options and what it measures
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.backends import BackendSettings, TorchModule, open_runner  # noqa: E402
from nas2deploy.backends.timing import measure  # noqa: E402
from nas2deploy.data import open_dataset  # noqa: E402
from nas2deploy.latency.fidelity import fidelity, validate_table  # noqa: E402
from nas2deploy.latency.measure import settings_from_table, timing_from_table  # noqa: E402
from nas2deploy.latency.profile import profile_space  # noqa: E402
from nas2deploy.nets import load_arch  # noqa: E402
from nas2deploy.nets.dpc import DPCNet  # noqa: E402
from nas2deploy.search.blackbox.storage import open_storage_study  # noqa: E402
from nas2deploy.search.blackbox.study import open_study, run_trials  # noqa: E402
from nas2deploy.spaces import make_space  # noqa: E402
from nas2deploy.spaces.dpc.proxy import build_cache, cell_model, train_cell  # noqa: E402
from nas2deploy.spaces.dpc.space import DPCSpace  # noqa: E402
from nas2deploy.spaces.dpc.study import RERANK_BATCH, RERANK_LR, DPCCells, ProxyEvaluator, pretrained  # noqa: E402
from nas2deploy.spaces.tables import load_table  # noqa: E402
from nas2deploy.testing import random_table  # noqa: E402
from nas2deploy.train import save_weights, train_arch  # noqa: E402

STUDIES = {
    "latency": """How well a DPC table predicts cells and whole networks.

A DPC network is a fixed backbone plus a cell, so whole networks of one table differ only by
their cells: at 257 x 513 on MobileNetV2 the cells move a ~28 ms network by ~2 ms, about as much
as run-to-run noise, and a ranking of whole networks says little about the cells. So both are
measured, on ONNX Runtime, one thread, the table's own harness:

1. **Whole networks** (``lut validate``'s code): ``--samples`` random cells on the backbone,
   spread over the latency range; within 10% and Kendall tau, raw and calibrated.
2. **Cells alone**: the same kind of random cells run from the backbone's features (the cell,
   the concatenation, projection and logits: what a search chooses between), each against the
   sum of its ops in the table.

    .venv/bin/python benchmarks/dpc.py latency [--input-size 257 --input-width 513] [--samples 60] [--table T]""",
    "proxy": """The DPC proxy's speed, and (with ``--fidelity K``) how well it ranks cells.

1. **Speed**: the frozen backbone's features of the training and validation data cached once
   (timed), then one cell trained ``--epochs`` epochs on the cache (``train_cell``, early
   stopping off; the loss at full resolution and at the logits' resolution, the default)
   against the same network trained end to end for as many epochs (``train_arch``: backbone
   and cell) on the same data, in one run.
2. **Fidelity** (``--fidelity K``): K random cells of the dpc space scored by the proxy and by
   end-to-end training; Spearman's rho between the two rankings (the paper: 0.47). End to end
   means, by default, what the search's re-ranking does and the paper did (``--e2e pretrained``):
   the whole network fine-tuned from the pretrained backbone the features came from, the cell
   from scratch (``spaces.dpc.study.pretrained``, the re-ranking's batch and learning rate);
   ``--e2e scratch`` trains every layer from scratch at ``train``'s learning rate.

    .venv/bin/python benchmarks/dpc.py proxy [--size 128] [--data seg-synthetic:200] [--epochs 4] [--fidelity 10] [--e2e scratch]""",
    "samplers": """A better sampler against random search on the DPC proxy.

A backbone is trained first (the published cell end to end, ``--backbone-epochs``: a random
backbone's features leave every cell predicting background, so no sampler could show anything),
its features cached, then for each of ``--seeds`` seeds: a random-search study and a study of
each other sampler, the same number of trials on that cache (every cell within the budget), in
this process. Reported:
each study's best proxy mIoU, and for each other sampler the number of trials it needed to reach
the best cell random search found; target: at most half the trials (median over the seeds).

    .venv/bin/python benchmarks/dpc.py samplers [--trials 24] [--seeds 3] [--samplers tpe] [--data seg-synthetic:200]""",
    "workers": """Several workers on one DPC study, through the command line, one thread each.

1. One worker runs a ``--trials`` study alone; two workers started on one journal file run a
   study of the same size: the two wall times and their ratio (target: at most 0.6).
2. Two workers again, one killed with SIGKILL a third of the way in and a replacement started:
   the study must end with exactly ``--trials`` trained trials (complete or pruned), the killed
   worker's trial failed and its network run again, none running, waiting or lost.

``--storage postgres`` runs the studies on a private PostgreSQL server started for the run
(``tests/support/postgres.py``: PostgreSQL's server programs and psycopg2 needed) instead of
journal files; ``--storage URL`` on a database of your own.

Each worker has its own ``--out`` (one writer per output: its cache and best.json); the budget
is the table's slowest cell, so every trial trains (pruned trials cost nothing and would flatter
the speed-up).

    .venv/bin/python benchmarks/dpc.py workers [--trials 40] [--proxy-epochs 4] [--storage postgres]""",
    "closed-loop": """A DPC search's network against its budget, measured after export (the target: the exported
network's measured latency 0.85-1.05x the budget after closed-loop derivation).

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

    .venv/bin/python benchmarks/dpc.py closed-loop [--size 256] [--trials 12] [--shares 0.3,0.7] [--out runs/dpc-closed-loop]""",
}


def latency(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/dpc.py latency", description=STUDIES["latency"], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="an existing DPC table (default: profile one)")
    ap.add_argument("--input-size", type=int, default=257)
    ap.add_argument("--input-width", type=int, default=513)
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.table) if args.table else Path(tmp) / "dpc.json"
        if not args.table:
            space = make_space("dpc", {"input_size": args.input_size, "input_width": args.input_width})
            _, stats = profile_space(space, BackendSettings(), path)
            print(f"profile: {stats.ops} ops in {stats.wall_s:.1f} s", flush=True)
        table = load_table(path)
        space = make_space("dpc", table.meta["space"]["config"])
        assert isinstance(space, DPCSpace)
        report = validate_table(table, space.sample_arch, args.samples, args.seed, spread=True)
        measured = [r["measured_ms"] for r in report["records"]]
        print(f"whole networks ({args.samples}, across the range, measured {min(measured):.2f}-{max(measured):.2f} ms, "
              f"{report['wall_s']} s):")
        for kind in ("raw", "calibrated"):
            f = report[kind]
            print(f"  {kind:<11} within 10% {f['within_10pct']:.0f}%, MAPE {f['mape']:.2f}%, tau {f['kendall_tau']:.3f}")
        settings, timing = settings_from_table(table), timing_from_table(table)
        rng = random.Random(args.seed + 1)
        predicted: list[float] = []
        got: list[float] = []
        start = time.perf_counter()
        for i in range(args.samples):
            net = space.sample_arch(rng)
            with open_runner(settings, TorchModule(cell_model(net), net.features(), f"cell {i}")) as runner:
                got.append(measure(runner, timing).stats.median_ms)
            predicted.append(sum(table.latency(s) for s in net.context_specs() + net.head_specs()))
        f = fidelity(predicted, got)
        print(f"cells alone ({args.samples}, measured {min(got):.2f}-{max(got):.2f} ms, {time.perf_counter() - start:.0f} s): "
              f"op sum within 10% {f['within_10pct']:.0f}%, MAPE {f['mape']:.2f}%, tau {f['kendall_tau']:.3f}, "
              f"mean signed {f['mean_signed_pct']:+.1f}%")


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def proxy(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/dpc.py proxy", description=STUDIES["proxy"], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--data", default="seg-synthetic:200")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--fidelity", type=int, default=0, help="random cells ranked by both (0: speed only)")
    ap.add_argument("--e2e", choices=("pretrained", "scratch"), default="pretrained",
                    help="end-to-end training of the fidelity cells: from the pretrained backbone, or from scratch")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = open_dataset(args.data, args.size)
    published = load_arch("dpc-mnv2")
    assert isinstance(published, DPCNet)
    net = dataclasses.replace(published.at_input(args.size, args.size), num_classes=data.num_classes, name=f"dpc-mnv2-{args.size}")
    with tempfile.TemporaryDirectory() as tmp:
        # The backbone's weights: the end-to-end training of the published cell, as a user's
        # pretrained backbone (the paper's was pretrained on COCO).
        t0 = time.perf_counter()
        model, score = train_arch(net, data, args.epochs, batch_size=args.batch)
        e2e_s = time.perf_counter() - t0
        save_weights(model, Path(tmp) / "w.pt")
        print(f"end to end: {net.name}, {args.epochs} epochs on {args.data} at {args.size} px, batch {args.batch}: "
              f"{e2e_s:.1f} s (mIoU {score:.3f})", flush=True)
        t0 = time.perf_counter()
        cache = build_cache(net, Path(tmp) / "w.pt", data, args.data, Path(tmp) / "cache", batch_size=args.batch)
        cache_s = time.perf_counter() - t0
        print(f"feature cache: {cache_s:.1f} s once", flush=True)
        for full in (True, False):
            proxy = train_cell(net, cache, epochs=args.epochs, batch_size=args.batch, patience=args.epochs, full_resolution=full)
            print(f"proxy trial, loss at {'full' if full else 'the logits'} resolution: {proxy.seconds:.1f} s for "
                  f"{proxy.epochs} epochs (mIoU {proxy.miou:.3f}): {e2e_s / proxy.seconds:.1f}x faster than end to end "
                  f"({e2e_s / (proxy.seconds + cache_s):.1f}x with the cache's cost on one trial)", flush=True)
        if args.fidelity:
            space = make_space("dpc", {"input_size": max(128, args.size), "input_width": max(128, args.size),
                                       "num_classes": data.num_classes})
            assert isinstance(space, DPCSpace)
            rng = random.Random(0)
            proxy_scores, e2e_scores = [], []
            for i in range(args.fidelity):
                cell = space.sample_cell(rng)
                candidate = DPCNet(args.size, args.size, data.num_classes, net.backbone, cell, net.filters, f"cell-{i}")
                p = train_cell(candidate, cache, epochs=args.epochs, batch_size=args.batch).miou
                if args.e2e == "pretrained":
                    _, e = train_arch(candidate, data, args.epochs, RERANK_BATCH, RERANK_LR, seed=i,
                                      initial=pretrained(candidate, Path(tmp) / "w.pt"))
                else:
                    _, e = train_arch(candidate, data, args.epochs, batch_size=args.batch)
                proxy_scores.append(p)
                e2e_scores.append(e)
                print(f"  cell {i}: proxy mIoU {p:.3f}, end to end {e:.3f}", flush=True)
            print(f"fidelity: Spearman rho {spearman(proxy_scores, e2e_scores):.2f} over {args.fidelity} cells "
                  f"(end to end: {args.e2e})", flush=True)


def best_so_far(study: object) -> list[float]:
    values = [t.value for t in sorted(study.trials, key=lambda t: t.number) if t.value is not None]  # type: ignore[attr-defined]
    out, best = [], float("-inf")
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def samplers(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/dpc.py samplers", description=STUDIES["samplers"], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samplers", default="tpe")
    ap.add_argument("--data", default="seg-synthetic:200")
    ap.add_argument("--backbone-epochs", type=int, default=6)
    ap.add_argument("--proxy-epochs", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = open_dataset(args.data, 128)
        space = make_space("dpc", {"input_size": 128, "input_width": 128, "num_classes": data.num_classes})
        assert isinstance(space, DPCSpace)
        table = random_table(space, 0)
        table.save(folder / "t.json")
        budget = space.latency_range(table)[1]
        published = load_arch("dpc-mnv2")
        assert isinstance(published, DPCNet)
        start = time.perf_counter()
        trained, score = train_arch(dataclasses.replace(published.at_input(128, 128), num_classes=data.num_classes),
                                    data, args.backbone_epochs, batch_size=8)
        save_weights(trained, folder / "w.pt")
        print(f"backbone: dpc-mnv2 trained end to end {args.backbone_epochs} epochs on {args.data} "
              f"(mIoU {score:.3f}, {time.perf_counter() - start:.0f} s)", flush=True)
        cache = build_cache(space.reference_net, folder / "w.pt", data, args.data, folder / "cache")
        proxy, cells = ProxyEvaluator(cache, data, str(folder / "w.pt"), args.proxy_epochs), DPCCells()
        needed: dict[str, list[int]] = {}
        for seed in range(args.seeds):
            curves = {}
            for k, sampler in enumerate(["random", *args.samplers.split(",")]):
                start = time.perf_counter()
                # each sampler its own seed: TPE starts with random trials, which with the same seed
                # would repeat random search's first cells and share its best
                study = open_study(space, table, proxy, budget, str(folder / f"{sampler}-{seed}.log"), "s", sampler,
                                   1000 * k + seed)
                run_trials(study, cells, space, table, proxy, budget, args.trials)
                curves[sampler] = best_so_far(study)
                print(f"seed {seed} {sampler:<7} best proxy mIoU {curves[sampler][-1]:.4f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
            target = curves["random"][-1]
            for sampler, curve in curves.items():
                if sampler != "random":
                    reached = next((i + 1 for i, v in enumerate(curve) if v >= target), args.trials + 1)
                    needed.setdefault(sampler, []).append(reached)
                    print(f"  {sampler} reached random search's best ({target:.4f}) in "
                          f"{reached if reached <= args.trials else 'more than ' + str(args.trials)} trials", flush=True)
        for sampler, counts in needed.items():
            print(f"{sampler}: median {statistics.median(counts)} trials to random search's best over {args.seeds} seeds "
                  f"(target <= {args.trials / 2:g})", flush=True)


DATA = "seg-synthetic:32"


def worker(folder: Path, storage: str, name: str, out: str, trials: int, epochs: int, budget: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas2deploy", "--quiet", "search", "--space", "dpc", "--lut",
                             str(folder / "t.json"), "--weights", str(folder / "w.pt"), "--data", DATA, "--budget-ms",
                             str(budget), "--trials", str(trials), "--proxy-epochs", str(epochs), "--storage", str(storage),
                             "--study", name, "--out", str(folder / out), "--json"], env=env, stdout=subprocess.DEVNULL)


def states(storage: str, name: str) -> dict[str, int]:
    """Trials by state; ``requeued``: failed trials whose network was queued again."""
    import optuna

    study = open_storage_study(storage, name)
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in study.trials}
    counts["requeued"] = sum(t.number in retried for t in study.trials)
    return counts


def workers(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/dpc.py workers", description=STUDIES["workers"], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--proxy-epochs", type=int, default=4)
    ap.add_argument("--storage", default="journal", help="journal (files), postgres (a private server), or a database URL")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.storage == "postgres":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from support.postgres import server, unavailable

            if unavailable():
                raise SystemExit(f"--storage postgres: {unavailable()}")
            base = stack.enter_context(server())
        else:
            base = args.storage
        tag = f"{os.getpid()}"

        def storage(label: str) -> str:
            return str(folder / f"{label}.log") if base == "journal" else base

        data = open_dataset(DATA, 128)
        space = make_space("dpc", {"input_size": 128, "input_width": 128, "num_classes": data.num_classes})
        assert isinstance(space, DPCSpace)
        table = random_table(space, 0)
        table.save(folder / "t.json")
        budget = space.latency_range(table)[1]
        torch.manual_seed(0)
        save_weights(space.backbone.build(), folder / "w.pt")
        walls = {}
        for n in (1, 2):
            start = time.perf_counter()
            name = f"s{n}-{tag}"
            procs = [worker(folder, storage(name), name, f"w{n}-{i}", args.trials, args.proxy_epochs, budget)
                     for i in range(n)]
            codes = [p.wait() for p in procs]
            walls[n] = time.perf_counter() - start
            print(f"{n} worker(s): {args.trials}-trial study in {walls[n]:.1f} s, exit codes {codes}, "
                  f"trials {states(storage(name), name)}", flush=True)
        print(f"two workers / one: {walls[2] / walls[1]:.2f} of the wall time (target <= 0.6)", flush=True)
        name = f"k-{tag}"
        procs = [worker(folder, storage(name), name, f"k-{i}", args.trials, args.proxy_epochs, budget) for i in range(2)]
        time.sleep(walls[2] / 3)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        print(f"killed a worker after {walls[2] / 3:.0f} s: trials then {states(storage(name), name)}", flush=True)
        replacement = worker(folder, storage(name), name, "k-2", args.trials, args.proxy_epochs, budget)
        codes = [procs[1].wait(), replacement.wait()]
        final = states(storage(name), name)
        trained = final.get("COMPLETE", 0) + final.get("PRUNED", 0)
        print(f"after the replacement finished (exit codes {codes}): {final}; {trained} trained, "
              f"{final.get('RUNNING', 0) + final.get('WAITING', 0)} running or waiting (target: {args.trials} trained, "
              f"every failed trial requeued, none running or waiting)", flush=True)


CLI = [sys.executable, "-m", "nas2deploy"]


def run(*args: str) -> dict | None:
    """The command's JSON result, or None after printing its one-line error."""
    done = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True)
    if done.returncode:
        print(f"  nas2deploy {args[0]}: {done.stderr.strip().splitlines()[-1]}", flush=True)
        return None
    return json.loads(done.stdout)


def closed_loop(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/dpc.py closed-loop", description=STUDIES["closed-loop"], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--data", default="seg-synthetic:32")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--shares", default="0.3,0.7")
    ap.add_argument("--out", default="runs/dpc-closed-loop")
    args = ap.parse_args(argv)
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


def main() -> None:
    studies = {"latency": latency, "proxy": proxy, "samplers": samplers, "workers": workers, "closed-loop": closed_loop}
    if len(sys.argv) < 2 or sys.argv[1] not in studies:
        print(__doc__ + "\n" + "\n\n".join(f"{k}: {v.splitlines()[0]}" for k, v in STUDIES.items()))
        sys.exit(2)
    studies[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
