"""How well a DPC table predicts cells and whole networks (issue 15, item 3).

A DPC network is a fixed backbone plus a cell, so whole networks of one table differ only by
their cells: at 257 x 513 on MobileNetV2 the cells move a ~28 ms network by ~2 ms, about as much
as run-to-run noise, and a ranking of whole networks says little about the cells. So both are
measured, on ONNX Runtime, one thread, the table's own harness:

1. **Whole networks** (``lut validate``'s code): ``--samples`` random cells on the backbone,
   spread over the latency range; within 10% and Kendall tau, raw and calibrated.
2. **Cells alone**: the same kind of random cells run from the backbone's features (the cell,
   the concatenation, projection and logits: what a search chooses between), each against the
   sum of its ops in the table.

    .venv/bin/python benchmarks/dpc_latency.py [--input-size 257 --input-width 513] [--samples 60] [--table T]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from nas2deploy.backends import BackendSettings, TorchModule, open_runner
from nas2deploy.backends.timing import measure
from nas2deploy.latency.measure import settings_from_table, timing_from_table
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.fidelity import fidelity, validate_table
from nas2deploy.spaces import make_space
from nas2deploy.spaces.tables import load_table
from nas2deploy.spaces.dpc.proxy import cell_model
from nas2deploy.spaces.dpc.space import DPCSpace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="an existing DPC table (default: profile one)")
    ap.add_argument("--input-size", type=int, default=257)
    ap.add_argument("--input-width", type=int, default=513)
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
