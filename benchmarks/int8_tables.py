"""How quantisation reorders a space: an fp32 and an int8 latency table of the same space,
profiled on the same machine, compared op by op and network by network.

1. **Ops**: the int8 / fp32 ratio of every op's median, by kind (a 1x1 convolution, a k x k
   depthwise one, the rest of an MBConv layer as the table keys them: kernel and expansion),
   summarised as the median and range of the ratio per kind. Quantisation speeds ops up
   unevenly; this is how unevenly.
2. **Networks**: ``--networks`` random networks of the space (its sampler), predicted by both
   tables (calibrated): Kendall tau between the two orders, the share of pairs the two order
   differently, and, for a window [0.85 B, B] at the budgets ``--budgets`` (default: the 30th and
   70th percentile of the int8 predictions, and the same percentiles of the fp32 ones), how many
   of the networks the fp32 table puts in its window the int8 table does not (and the reverse),
   and whether the fastest-to-slowest order inside the window changes.

    .venv/bin/python benchmarks/int8_tables.py FP32_TABLE INT8_TABLE [--networks 1000]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
from pathlib import Path

from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.latency.table import LatencyTable  # noqa: E402
from nas2deploy.spaces import make_space  # noqa: E402


def kendall(a: list[float], b: list[float]) -> tuple[float, float]:
    """Kendall tau of two orders and the share of pairs they order differently, (1 - tau) / 2
    (predicted latencies are continuous: no ties)."""
    tau = float(kendalltau(a, b)[0])
    return tau, (1 - tau) / 2


def kind(key: str) -> str:
    if key.startswith("mbconv"):
        match = re.match(r"mbconv_k(\d+)_e(\d+)", key)
        return f"MBConv k{match.group(1)} e{match.group(2)}" if match else "MBConv"
    return key.split("_")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32")
    parser.add_argument("int8")
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--fill", type=float, default=0.85)
    args = parser.parse_args()
    fp32, int8 = LatencyTable.load(args.fp32), LatencyTable.load(args.int8)
    if fp32.meta["space"] != int8.meta["space"]:
        raise SystemExit("the two tables cover different spaces")
    ratios: dict[str, list[float]] = {}
    for key, entry in int8.entries.items():
        if key in fp32.entries:
            ratios.setdefault(kind(key), []).append(entry.stats.median_ms / fp32.entries[key].stats.median_ms)
    print("| op kind | ops | int8 / fp32 median (per op) | range |\n|---|---|---|---|")
    for name, values in sorted(ratios.items()):
        print(f"| {name} | {len(values)} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")
    space = make_space(int8.meta["space"]["name"], int8.meta["space"]["config"])
    nets = [space.sample_arch(random.Random(seed)) for seed in range(args.networks)]
    a = [fp32.predict(n).best_ms for n in nets]
    b = [int8.predict(n).best_ms for n in nets]
    tau, discordant = kendall(a, b)
    print(f"\n{args.networks} random networks: Kendall tau between the fp32 and int8 predictions {tau:.3f}, "
          f"{discordant:.1%} of pairs ordered differently; int8 / fp32 predicted latency median "
          f"{statistics.median(y / x for x, y in zip(a, b)):.2f}")
    print("\n| window | fp32 table: networks | of them outside the int8 window | int8 table: networks | of them outside "
          "the fp32 window | tau inside (fp32 window) |\n|---|---|---|---|---|---|")
    for q in (0.3, 0.7):
        budget_a, budget_b = sorted(a)[int(q * len(a))], sorted(b)[int(q * len(b))]
        in_a = {i for i, x in enumerate(a) if args.fill * budget_a <= x <= budget_a}
        in_b = {i for i, y in enumerate(b) if args.fill * budget_b <= y <= budget_b}
        inside = sorted(in_a)
        tau_in = kendall([a[i] for i in inside], [b[i] for i in inside])[0] if len(inside) > 2 else float("nan")
        print(f"| {q:.0%} quantile: fp32 {budget_a:.3f} ms, int8 {budget_b:.3f} ms | {len(in_a)} | {len(in_a - in_b)} | "
              f"{len(in_b)} | {len(in_b - in_a)} | {tau_in:.3f} |")


if __name__ == "__main__":
    main()
