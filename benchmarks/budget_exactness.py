"""Budget derivation against exhaustive enumeration, on DCNAS spaces small enough to enumerate.

For each of several supernets with spread-out alpha and beta (as after a search) and a table of
distinct random latencies, random queries (budget, fill) ask ``derive_under_budget`` for the most
probable network in ``[fill x budget, budget]``, checked against every network of the space
(``tests/support/oracles.py``, which ``tests/test_budget_exactness.py`` runs on fewer queries).

    .venv/bin/python benchmarks/budget_exactness.py [--queries 200] [--layers 3] [--viterbi-layers 5] [--supernets 4]

Prints the counts by mode (top-k and Viterbi) and the solve times, then the DenseNAS budget
program's solve times on the small and the published space (its exactness at the edges is
``tests/test_budget_edges.py``'s, run with ``--hypothesis-profile thorough`` for 2,000 queries
per decode).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracles the exactness tests use

from nas2deploy.spaces.dcnas.space import DCNASConfig, DCNASSpace  # noqa: E402
from nas2deploy.testing import random_table  # noqa: E402
from support.oracles import check_queries, enumerate_paths, enumerate_topk, spread_supernet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=200, help="per mode, over all supernets")
    parser.add_argument("--layers", type=int, default=3, help="grid layers of the top-k space (3: 5e7 networks)")
    parser.add_argument("--viterbi-layers", type=int, default=5, help="grid layers of the Viterbi space")
    parser.add_argument("--supernets", type=int, default=4)
    parser.add_argument("--densenas-budgets", type=int, default=20, help="budgets timed per DenseNAS space")
    args = parser.parse_args()
    per = max(1, args.queries // args.supernets)
    for viterbi in (False, True):
        config = {"input_size": 64, "layers": args.viterbi_layers if viterbi else args.layers, "base_width": 8,
                  "num_classes": 6, "head_width": 16}
        space = DCNASSpace(DCNASConfig(**config))
        print(f"DCNAS space {config}: {len(space.cells)} cells, {sum(len(v) for v in space.inputs.values())} connections, "
              f"ops {list(space.config.ops)}")
        totals: dict[str, float] = {}
        solve: list[float] = []
        start = time.perf_counter()
        networks = 0
        for s in range(args.supernets):
            net, table = spread_supernet(space, s), random_table(space, 100 + s)
            latencies, scores = (enumerate_paths if viterbi else enumerate_topk)(net, table)
            networks = len(latencies)
            result = check_queries(net, table, latencies, scores, per, s, viterbi)
            solve.append(result.pop("median_solve_s"))
            result.pop("max_solve_s")
            for key, value in result.items():
                totals[key] = max(totals.get(key, 0.0), value) if key == "worst_gap_nats" else totals.get(key, 0.0) + value
        mode = "viterbi" if viterbi else "top-k"
        print(f"{mode:>8}: {networks:,} networks per supernet, {int(totals['queries'])} queries: "
              f"{int(totals['exact'])} exact, {int(totals['worse'])} worse (worst gap {totals['worst_gap_nats']:.2e} nats), "
              f"{int(totals['wrong_refusals'])} wrong refusals, {int(totals['right_refusals'])} right refusals, "
              f"{int(totals['outside_window'])} outside a reachable window; median solve {statistics.median(solve) * 1e3:.0f} ms "
              f"({time.perf_counter() - start:.0f} s with enumeration)")

    for name, config in DENSENAS.items():
        densenas_solve_times(name, config, args.densenas_budgets)


DENSENAS: dict[str, dict[str, Any]] = {"small (32 px, the demo's table)": {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1},
            "published (224 px)": {}}


def densenas_solve_times(name: str, config: dict[str, Any], budgets: int) -> None:
    """The DenseNAS budget program's solve time: spread-out alpha and beta, budgets across the
    reachable range, each with the default fill."""
    import torch

    from nas2deploy.spaces.densenas.derive import budget_choice, fastest_latency, slowest_latency
    from nas2deploy.spaces.densenas.latency_model import LatencyModel
    from nas2deploy.spaces.densenas.space import DenseNASConfig, DenseNASSpace
    from nas2deploy.spaces.densenas.supernet import DenseNASSupernet

    torch.manual_seed(0)
    net = DenseNASSupernet(DenseNASSpace(DenseNASConfig(**config)))
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1.5)
    model = LatencyModel(net, random_table(net.space, 0))
    fastest, slowest = fastest_latency(model), slowest_latency(model)
    times = []
    for i in range(budgets):
        start = time.perf_counter()
        budget_choice(net, model, fastest + (i + 0.5) / budgets * (slowest - fastest))
        times.append(time.perf_counter() - start)
    print(f"DenseNAS {name}: {len(net.space.edges)} edges, {len(net.stack_layers)} stacking layers; {budgets} budgets "
          f"over {fastest:.3f}-{slowest:.3f} ms: median solve {statistics.median(times) * 1e3:.0f} ms, "
          f"max {max(times) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
