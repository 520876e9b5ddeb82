"""GPU latency tables with the torch backend (issue 14): eager launches against CUDA-graph
replays, the harness's run counts for microsecond ops, and how well a table's op sum predicts
whole networks, random and published.

1. **Timing policy.** ``--policy-ops`` ops of the space, timed as graph replays at batch 1: a
   long reference (``--reference-runs`` runs) against candidate harness settings (timed runs,
   one warm-up of 3 runs); for each candidate the median and 95th-percentile error against the
   reference and the time an op costs (build, capture and timing), and the reference repeated
   as the noise floor.
2. **Tables.** For batch 1 and 32, eager and graph: the whole space profiled by
   ``profile_space`` under the GPU harness (``timing.GPU``; also on a CPU here), with its wall
   time and the ops re-measured for a high CoV, then
   ``validate_table`` on ``--networks`` random networks (raw and cross-validated calibrated
   within-10% and Kendall tau, the stored calibration) and the shipped networks it covers
   (DenseNAS-A/B/C) measured whole against the table's raw and calibrated prediction.
3. **Compiled engines** (``--aoti N``): after each graph table, the shipped networks and N random
   ones compiled as AOTInductor packages for the same device and batch, measured, and set
   against the table's calibrated prediction (a graph-replay table is the price list of a fused,
   graph-launched engine; how far Inductor's fusion moves a network from it is what this shows).

On a CPU (``--device cpu``, for testing this script) the same steps run eagerly on the small
demo space with a few networks; the graph rows are left out (a CPU cannot capture).

    PYTHONPATH=. python benchmarks/gpu_latency.py                      # on the GPU machine
    .venv/bin/python benchmarks/gpu_latency.py --device cpu --networks 4 --policy-ops 4
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nas2deploy.backends import BackendSettings, TorchModule, open_runner
from nas2deploy.backends.timing import GPU, TimingSettings, measure
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.validate import shipped_networks, validate_table
from nas2deploy.spaces import make_space

CANDIDATES = [TimingSettings(warmup_runs=3, warmup_ms=0.0, min_runs=n, min_time_ms=0.0, retries=0) for n in (5, 10, 30, 100)]
SMALL = {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 0}


def policy(space_config: dict, device: str, ops: int, reference_runs: int) -> None:
    """Step 1: candidate run counts against a long reference, batch 1."""
    settings = BackendSettings(backend="torch", device=device, cuda_graph=device == "cuda")
    specs = random.Random(0).sample(make_space("densenas", space_config).op_specs(), ops)
    reference = TimingSettings(warmup_runs=10, warmup_ms=0.0, min_runs=reference_runs, min_time_ms=0.0, retries=0)
    errors: dict[int, list[float]] = {c.min_runs: [] for c in CANDIDATES}
    costs: dict[int, list[float]] = {c.min_runs: [] for c in CANDIDATES}
    floor, medians = [], []
    for spec in specs:
        module = TorchModule(spec.build_standalone(), (spec.cin, spec.h, spec.w), spec.key)
        with open_runner(settings, module) as runner:
            ref = measure(runner, reference).stats.median_ms
            floor.append(abs(measure(runner, reference, warmup=False).stats.median_ms / ref - 1))
        medians.append(ref)
        for c in CANDIDATES:
            t0 = time.perf_counter()
            with open_runner(settings, TorchModule(spec.build_standalone(), (spec.cin, spec.h, spec.w), spec.key)) as runner:
                got = measure(runner, c).stats.median_ms
            costs[c.min_runs].append(time.perf_counter() - t0)
            errors[c.min_runs].append(abs(got / ref - 1))
    print(f"timing policy: {ops} ops at batch 1, {'graph replays' if settings.cuda_graph else 'eager'} on {settings.device_name()}; "
          f"op medians {min(medians) * 1e3:.1f}-{max(medians) * 1e3:.1f} us; reference {reference_runs} runs, "
          f"repeated: median error {100 * statistics.median(floor):.2f}%, max {100 * max(floor):.2f}%")
    print(f"  {'runs':>6}{'median err':>12}{'p95 err':>10}{'s per op':>10}")
    for runs, errs in errors.items():
        errs = sorted(errs)
        p95 = errs[min(len(errs) - 1, int(0.95 * len(errs)))]
        print(f"  {runs:>6}{100 * statistics.median(errs):>11.2f}%{100 * p95:>9.2f}%{statistics.median(costs[runs]):>10.4f}")


def compiled_engines(table: LatencyTable, space: Any, settings: BackendSettings, count: int, seed: int) -> None:
    """Step 3: AOTInductor packages of the shipped networks the table covers and ``count``
    random ones, each compiled for the table's device and batch, measured, and set against the
    graph table's prediction (the fused engine a graph-replay table is meant to price)."""
    rng = random.Random(seed)
    archs = shipped_networks(table) + [space.sample_arch(rng).renamed(f"random-{i}") for i in range(count)]
    engine = dataclasses.replace(settings, backend="aoti", cuda_graph=False)
    errors = []
    for arch in archs:
        start = time.perf_counter()
        with open_runner(engine, TorchModule(arch.build(), (3, arch.input_size, arch.input_size), arch.name)) as runner:
            built = time.perf_counter() - start
            measured = measure(runner, GPU).stats.median_ms
        pred = table.predict(arch)
        errors.append(pred.best_ms / measured - 1)
        print(f"        aoti {arch.name}: measured {measured:.3f} ms, raw sum {pred.raw_ms:.3f} ms, "
              f"calibrated {pred.best_ms:.3f} ms ({100 * errors[-1]:+.1f}%), compiled in {built:.0f} s", flush=True)
    within = sum(abs(e) <= 0.10 for e in errors)
    print(f"        aoti: {within} of {len(errors)} within 10% of the graph table's prediction", flush=True)


def tables(space_config: dict, device: str, batches: list[int], networks: int, folder: Path, aoti: int) -> None:
    """Step 2: profile, validate, and the published networks, per batch and launch mode; step 3
    after each graph table (on a CPU, after the eager one) where ``aoti`` asks for it."""
    space = make_space("densenas", space_config)
    print(f"  {'batch':>5} {'mode':<6}{'profile s':>10}{'re-meas':>8}{'raw<=10%':>9}{'raw tau':>8}{'cal<=10%':>9}"
          f"{'cal tau':>8}  calibration (scale, offset ms, per-op ms)")
    for batch in batches:
        for graph in ([False, True] if device == "cuda" else [False]):
            mode = "graph" if graph else "eager"
            settings = BackendSettings(backend="torch", device=device, batch=batch, cuda_graph=graph)
            out = folder / f"b{batch}_{mode}.json"
            table, stats = profile_space(space, settings, out, GPU)
            report = validate_table(table, space.sample_arch, networks, seed=batch, timing=GPU)
            cal = report["calibration"] or {}
            print(f"  {batch:>5} {mode:<6}{stats.wall_s:>10.1f}{stats.remeasured:>8}{report['raw']['within_10pct']:>8.0f}%"
                  f"{report['raw']['kendall_tau']:>8.3f}{report['calibrated']['within_10pct']:>8.0f}%"
                  f"{report['calibrated']['kendall_tau']:>8.3f}  "
                  + (f"{cal['scale']:.3f}, {cal['offset_ms']:.4f}, {cal['per_op_ms']:.4f}" if cal else
                     f"refused: {report.get('calibration_refused')}"), flush=True)
            measured = [r["measured_ms"] for r in report["records"]]
            print(f"        random networks measured {min(measured):.3f}-{max(measured):.3f} ms; "
                  f"validation {report['wall_s']} s", flush=True)
            for row in report["shipped"]:  # the shipped networks the table covers (DenseNAS-A/B/C at 224)
                cal_text = (f", calibrated {row['calibrated_ms']:.3f} ms ({row['calibrated_error_pct']:+.1f}%)"
                            if "calibrated_ms" in row else "")
                print(f"        {row['name']}: measured {row['measured_ms']:.3f} ms, raw sum {row['raw_ms']:.3f} ms "
                      f"({row['raw_error_pct']:+.1f}%){cal_text}", flush=True)
            if aoti and (graph or device == "cpu"):
                compiled_engines(LatencyTable.load(out), space, settings, aoti, seed=batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--networks", type=int, default=40, help="random networks per table")
    ap.add_argument("--policy-ops", type=int, default=40)
    ap.add_argument("--reference-runs", type=int, default=2000)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--aoti", type=int, default=0,
                    help="random networks compiled with AOTInductor per batch, besides the shipped ones (0: none)")
    args = ap.parse_args()
    config = {} if args.device == "cuda" else SMALL  # the full 224 space on a GPU, the demo's small one here
    if args.device == "cpu":
        args.reference_runs = min(args.reference_runs, 200)
    print(f"torch {torch.__version__} on {args.device}; space densenas {config or '(224, default)'}", flush=True)
    t0 = time.perf_counter()
    policy(config, args.device, args.policy_ops, args.reference_runs)
    print(f"timing policy: {time.perf_counter() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tables(config, args.device, [int(b) for b in args.batches.split(",")], args.networks, Path(tmp), args.aoti)
    print(f"gpu_latency: {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
