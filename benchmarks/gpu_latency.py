"""GPU latency tables with the torch backend: eager launches against CUDA-graph
replays, the harness's run counts for microsecond ops, and how well a table's op sum predicts
whole networks, random and published.

1. **Timing policy.** ``--policy-ops`` ops of the space, timed as graph replays at batch 1: a
   long reference (``--reference-runs`` runs) against candidate harness settings (timed runs,
   one warm-up of 3 runs); for each candidate the median and 95th-percentile error against the
   reference and the time an op costs (build, capture and timing), and the reference repeated
   as the noise floor.
2. **Tables and networks.** For batch 1 and 32: the whole space profiled eagerly (each op with
   its launch costs: host dispatch and graph-replayed kernels) and as graph replays under the GPU
   harness (``timing.GPU``); the shipped networks the tables cover (DenseNAS-A/B/C), ``--networks``
   random ones and the shipped ones again (the same networks twice: how far a whole-network
   measurement repeats), each measured eagerly with its launch costs (its graph-replay time among
   them). Printed: every latency model's fidelity on the random networks (the eager op sum, the
   graph op sum, the launch pipeline of ``latency.launch``; raw, and calibrated by the package's
   own fit, cross-validated) and its error on the shipped ones.
3. **Compiled engines** (``--aoti-seconds S``): for S seconds per batch, AOTInductor packages of
   the shipped and then the random networks, compiled for the same device and batch and timed,
   against the graph op sum (a graph-replay table is the price list of a fused, graph-launched
   engine; how far Inductor's fusion moves a network from it is what this shows).

``--dump FILE`` writes every measurement (with each network's architecture) to FILE and the
tables beside it, so models can be fitted afterwards on the CPU.

On a CPU (``--device cpu``, for testing this script) the same steps run on the small demo space
with a few networks; the graph and launch figures are left out (a CPU neither captures nor
queues launches).

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
from nas2deploy.backends.timing import GPU, LaunchCosts, TimingSettings, measure
from nas2deploy.errors import first_line
from nas2deploy.fileio import atomic_write_json
from nas2deploy.latency.calibration import Sample, cross_validated
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.fidelity import fidelity, shipped_networks
from nas2deploy.nets import Network
from nas2deploy.ops import OpSpec
from nas2deploy.spaces import make_space

CANDIDATES = [TimingSettings(warmup_runs=3, warmup_ms=0.0, min_runs=n, min_time_ms=0.0, retries=0) for n in (5, 10, 30, 100)]
SMALL = {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 0}


def policy(space_config: dict, device: str, ops: int, reference_runs: int) -> None:
    """Step 1: candidate run counts against a long reference, batch 1."""
    settings = BackendSettings(backend="torch", device=device, options={"cuda_graph": device == "cuda"})
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
    print(f"timing policy: {ops} ops at batch 1, {'graph replays' if settings.options['cuda_graph'] else 'eager'} on {settings.device_name()}; "
          f"op medians {min(medians) * 1e3:.1f}-{max(medians) * 1e3:.1f} us; reference {reference_runs} runs, "
          f"repeated: median error {100 * statistics.median(floor):.2f}%, max {100 * max(floor):.2f}%")
    print(f"  {'runs':>6}{'median err':>12}{'p95 err':>10}{'s per op':>10}")
    for runs, errs in errors.items():
        errs = sorted(errs)
        p95 = errs[min(len(errs) - 1, int(0.95 * len(errs)))]
        print(f"  {runs:>6}{100 * statistics.median(errs):>11.2f}%{100 * p95:>9.2f}%{statistics.median(costs[runs]):>10.4f}")


def pipeline_ms(costs: list[LaunchCosts], start: float = 1.0) -> float:
    """The launch-pipeline model of an eager GPU network (measured against the op sums here, and
    not better: see benchmarks/README.md). Eager PyTorch is two workers in a row: the host dispatches each
    op's kernels (``host_ms``) and the GPU runs them in order (``kernel_ms``), idle when the host
    is behind; a network's time is the finish time of that two-stage flow shop over its ops in
    execution order, the GPU starting an op once it finished the previous one and the host has
    dispatched ``start`` of it."""
    host = gpu = 0.0
    for c in costs:
        gpu = max(gpu, host + start * c.host_ms) + c.kernel_ms
        host += c.host_ms
    return max(gpu, host)


def wall_ms(runner: Any, n: int = 20) -> float:
    """Median wall time of single synchronised runs: a check on the CUDA events (a runtime that
    launched on another stream than the runner's would time as nearly nothing)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        runner.time_runs(1)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def network_record(arch: Any, settings: BackendSettings) -> dict[str, Any]:
    """One network measured eagerly by the harness, with its launch costs (host dispatch, and
    kernels as a graph replay) where the runner has them."""
    with open_runner(settings, TorchModule(arch.build(), arch.input_shape, arch.name)) as runner:
        eager = measure(runner, GPU).stats.median_ms
        wall = wall_ms(runner)
        costs = runner.launch_costs(GPU.min_runs)
    return {"name": arch.name, "arch": arch.to_dict(), "eager_ms": eager, "eager_wall_ms": wall,
            "host_ms": costs.host_ms if costs else None, "graph_ms": costs.kernel_ms if costs else None}


def aoti_record(arch: Any, settings: BackendSettings) -> dict[str, Any]:
    """One network compiled as an AOTInductor package for the settings' device and batch, timed
    by the harness; an error is recorded with its first line (the run goes on)."""
    engine = dataclasses.replace(settings, backend="aoti", options={})
    start = time.perf_counter()
    try:
        with open_runner(engine, TorchModule(arch.build(), arch.input_shape, arch.name)) as runner:
            built = time.perf_counter() - start
            return {"name": arch.name, "aoti_ms": measure(runner, GPU).stats.median_ms, "aoti_wall_ms": wall_ms(runner),
                    "compile_s": round(built, 1)}
    except Exception as exc:  # noqa: BLE001 - a benchmark records what failed and goes on
        return {"name": arch.name, "error": first_line(exc)}


def model_fidelity(name: str, predicted: list[float], measured: list[float], n_ops: list[int]) -> str:
    """Raw and calibrated (the package's term choice, cross-validated) fidelity of one model."""
    samples = [Sample(p, n, 1.0, m) for p, m, n in zip(predicted, measured, n_ops)]
    raw, cal = fidelity(predicted, measured), fidelity(cross_validated(samples), measured)
    return (f"{name:<34} raw {raw['within_10pct']:>5.0f}% / {raw['kendall_tau']:.3f}   "
            f"calibrated {cal['within_10pct']:>5.0f}% / {cal['kendall_tau']:.3f}")


def summarise(eager: LatencyTable, graph: LatencyTable, archs: list[Network], records: list[dict[str, Any]],
              aoti: list[dict[str, Any]]) -> None:
    """Each latency model's fidelity on the random networks, and its error on the shipped ones."""
    specs = {arch.name: arch.op_specs() for arch in archs}

    def keys(r: dict[str, Any]) -> list[OpSpec]:
        return specs[r["name"]]

    random_ = [r for r in records if r["name"].startswith("random")]
    sums = {"eager op sum": lambda r: sum(eager.latency(s) for s in keys(r)),
            "graph op sum": lambda r: sum(graph.latency(s) for s in keys(r))}
    if all(e.launch for e in eager.entries.values()):
        sums["launch pipeline (eager table)"] = lambda r: pipeline_ms([eager.entries[s.key].launch for s in keys(r)])  # type: ignore[misc]
    targets = {"eager": "eager_ms", "graph": "graph_ms"}
    for target, field in targets.items():
        rows = [r for r in random_ if r.get(field)]
        if not rows:
            continue
        print(f"        {target} networks ({len(rows)} random, measured {min(r[field] for r in rows):.3f}-"
              f"{max(r[field] for r in rows):.3f} ms):", flush=True)
        for name, model in sums.items():
            print("          " + model_fidelity(name, [model(r) for r in rows], [r[field] for r in rows],
                                                [len(keys(r)) for r in rows]), flush=True)
        for r in records:
            if not r["name"].startswith("random") and r.get(field):
                print(f"          {r['name']}: {r[field]:.3f} ms; " + ", ".join(
                    f"{name} {100 * (model(r) / r[field] - 1):+.1f}%" for name, model in sums.items()), flush=True)
    done = [a for a in aoti if "aoti_ms" in a]
    by_name = {r["name"]: r for r in records}
    for a in aoti:
        r = by_name[a["name"]]
        if "aoti_ms" in a:
            print(f"        aoti {a['name']}: {a['aoti_ms']:.3f} ms (wall {a['aoti_wall_ms']:.3f}, compiled in {a['compile_s']:.0f} s), eager "
                  f"{r['eager_ms']:.3f} ms, graph {r['graph_ms'] or float('nan'):.3f} ms, graph op sum "
                  f"{sums['graph op sum'](r):.3f} ms", flush=True)
        else:
            print(f"        aoti {a['name']}: failed: {a['error']}", flush=True)
    if len(done) >= 4:
        print("          " + model_fidelity("aoti against the graph op sum", [sums["graph op sum"](by_name[a["name"]]) for a in done],
                                            [a["aoti_ms"] for a in done], [len(keys(by_name[a["name"]])) for a in done]), flush=True)


def collect(space_config: dict, device: str, batches: list[int], networks: int, folder: Path, aoti_s: float,
            dump: Path | None) -> None:
    """Step 2 (and 3): per batch, the eager table (with each op's launch costs on a GPU) and the
    graph table profiled; the shipped networks, ``networks`` random ones and the shipped ones
    again measured eagerly, with their host dispatch and graph-replay times; then AOTInductor
    packages of the shipped and the random networks, in that order, for ``aoti_s`` seconds per
    batch. Everything measured goes to ``dump`` (JSON, rewritten after every batch) and the
    tables beside it, for models to be fitted afterwards."""
    space = make_space("densenas", space_config)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else device,
                               "torch": torch.__version__, "batches": {}}
    for batch in batches:
        settings = BackendSettings(backend="torch", device=device, batch=batch)
        built: dict[str, LatencyTable] = {}
        for mode in (["eager", "graph"] if device == "cuda" else ["eager"]):
            out = (dump.parent if dump else folder) / f"table_b{batch}_{mode}.json"
            mode_settings = dataclasses.replace(settings, options={"cuda_graph": mode == "graph"})
            built[mode], stats = profile_space(space, mode_settings, out, GPU, force=True)
            print(f"  batch {batch} {mode}: profile {stats.wall_s:.1f} s, {stats.remeasured} re-measured", flush=True)
        rng = random.Random(batch)
        shipped = shipped_networks(built["eager"])
        archs = shipped + [space.sample_arch(rng).renamed(f"random-{i}") for i in range(networks)] \
            + [a.renamed(f"{a.name} (again)") for a in shipped]
        t0 = time.perf_counter()
        records = [network_record(arch, settings) for arch in archs]
        print(f"  batch {batch}: {len(records)} networks measured in {time.perf_counter() - t0:.0f} s", flush=True)
        aoti: list[dict[str, Any]] = []
        results["batches"][str(batch)] = {"records": records, "aoti": aoti}
        if dump:  # before the compiles, which a time limit may cut
            atomic_write_json(dump, results)
        t0 = time.perf_counter()
        for arch in archs[:len(archs) - len(shipped)]:
            if time.perf_counter() - t0 > aoti_s:
                break
            aoti.append(aoti_record(arch, settings))
            if dump:
                atomic_write_json(dump, results)
            if "error" in aoti[-1]:  # a compiler or loader that fails once fails for every network
                break
        if dump:
            atomic_write_json(dump, results)
        summarise(built["eager"], built.get("graph", built["eager"]), archs, records, aoti)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--networks", type=int, default=40, help="random networks per table")
    ap.add_argument("--policy-ops", type=int, default=40)
    ap.add_argument("--reference-runs", type=int, default=2000)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--aoti-seconds", type=float, default=0.0,
                    help="seconds per batch for AOTInductor packages of the shipped, then the random networks (0: none)")
    ap.add_argument("--dump", type=Path, help="write every measurement here (JSON) and the tables beside it")
    args = ap.parse_args()
    config = {} if args.device == "cuda" else SMALL  # the full 224 space on a GPU, the demo's small one here
    if args.device == "cpu":
        args.reference_runs = min(args.reference_runs, 200)
    print(f"torch {torch.__version__} on {args.device}; space densenas {config or '(224, default)'}", flush=True)
    t0 = time.perf_counter()
    if args.policy_ops:
        policy(config, args.device, args.policy_ops, args.reference_runs)
        print(f"timing policy: {time.perf_counter() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        collect(config, args.device, [int(b) for b in args.batches.split(",") if b], args.networks, Path(tmp),
                args.aoti_seconds, args.dump)
    print(f"gpu_latency: {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
