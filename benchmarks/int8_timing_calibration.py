"""Does an int8 graph's time depend on the data it was calibrated on?

A latency table's ops and ``derive --measure``'s networks are timed as quantised graphs
calibrated on random normal inputs (``backends.quantize.for_timing``: no real data is at hand
when a space is profiled), while ``export --precision int8`` calibrates on real images. That
choice holds only if an 8-bit kernel's time depends on the graph and not on the ranges it was
given. This measures one network three ways with the table's backend and harness, interleaved
round by round in one process so that the machine's drift touches all three alike:

1. as the closed loop times it: the network's graph, freshly built, calibrated on random inputs;
2. as the export writes it: the trained weights, calibrated on ``--images`` real images;
3. the trained weights calibrated on random inputs (weights against calibration data).

    .venv/bin/python benchmarks/int8_timing_calibration.py --table latency_tables/densenas32_small_c10_ort_cpu_int8_b1.json \\
        --arch EXPORT/arch.json --weights EXPORT/weights.pt --data DIR/cifar10 [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.backends import open_runner  # noqa: E402
from nas2deploy.backends.base import Artifact, OnnxModel, TorchModule  # noqa: E402
from nas2deploy.backends.onnx import onnx_from_module  # noqa: E402
from nas2deploy.backends.quantize import quantize_qdq  # noqa: E402
from nas2deploy.backends.timing import measure  # noqa: E402
from nas2deploy.deploy.inputs import calibration_images  # noqa: E402
from nas2deploy.latency.measure import settings_from_table, timing_from_table  # noqa: E402
from nas2deploy.nets import load_arch  # noqa: E402
from nas2deploy.spaces.tables import load_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, help="an int8 latency table of this machine")
    ap.add_argument("--arch", required=True)
    ap.add_argument("--weights", help="the trained weights (default: the network's initial ones)")
    ap.add_argument("--data", required=True, help="the calibration images' data (its training split)")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    table = load_table(args.table)
    settings, timing = settings_from_table(table), timing_from_table(table)
    if settings.precision != "int8":
        raise SystemExit(f"{args.table} is a {settings.precision} table: give an int8 one")
    arch = load_arch(args.arch)
    model = arch.build().eval()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, weights_only=True))
    real = calibration_images(arch, args.data, args.images, settings.batch)  # the export's own
    noise = np.random.default_rng(0).standard_normal(real.shape).astype(np.float32)
    graph = onnx_from_module(TorchModule(model, arch.input_shape, arch.name), settings.batch).data
    ways: dict[str, Artifact | None] = {
        "fresh graph, random calibration (closed loop)": None,
        f"trained, {args.images} real images (export)": OnnxModel(quantize_qdq(graph, real, settings.batch).data),
        "trained, random calibration": OnnxModel(quantize_qdq(graph, noise, settings.batch).data),
    }
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(args.rounds):
        for way, artifact in ways.items():
            with open_runner(settings, artifact or TorchModule(arch.build(), arch.input_shape, arch.name)) as runner:
                times[way].append(measure(runner, timing).stats.median_ms)
    base = statistics.median(times[next(iter(ways))])
    print(f"{arch.name}: table prediction {table.predict(arch).best_ms:.4f} ms; medians of {args.rounds} interleaved rounds")
    for way, values in times.items():
        median = statistics.median(values)
        print(f"  {way:<48} {median:.4f} ms  x{median / base:.3f}  ({' '.join(f'{v:.4f}' for v in values)})")


if __name__ == "__main__":
    main()
