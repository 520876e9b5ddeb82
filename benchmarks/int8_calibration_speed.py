"""How long calibrating an int8 export takes, one image a run against a batched twin graph.

``export --precision int8`` calibrates the deployed batch-1 graph's ranges on a twin of the
network exported at up to 16 images a run (``backends.quantize``), which gives the same ranges
and the same QDQ graph. This times both ways for each shipped network and calibrator,
interleaved round by round in one process, checks that the two int8 graphs are equal byte for
byte, and prints the speed-up. Calibration time does not depend on what the images show, so the
images are random normal ones of the network's input size (512 by default, the export's number);
the networks keep their initial weights.

    .venv/bin/python benchmarks/int8_calibration_speed.py [--networks dpc-mnv2,densenas-a,mobilenetv2]
        [--calibrators minmax,entropy] [--images 512] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.backends.onnx import export_onnx  # noqa: E402
from nas2deploy.backends.quantize import quantize_qdq  # noqa: E402
from nas2deploy.nets import load_arch  # noqa: E402

#: The sizes and classes the shipped networks are benchmarked at (int8_exports.py).
DATA = {"segmentation": (128, 6), "classification": (32, 10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default="dpc-mnv2,densenas-a,mobilenetv2")
    parser.add_argument("--calibrators", default="minmax,entropy")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print("| network | input | calibrator | batch 1 (s) | twin (s) | twin batch | speed-up | same int8 graph |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.networks.split(","):
        shipped = load_arch(name)
        size, classes = DATA[shipped.task]
        torch.manual_seed(0)
        model = shipped.for_data(size, size, classes).build().eval()
        graph = export_onnx(model, (1, 3, size, size))
        images = np.random.default_rng(0).standard_normal((args.images, 3, size, size)).astype(np.float32)
        for calibrator in args.calibrators.split(","):
            times: dict[str, list[float]] = {"direct": [], "twin": []}
            for _ in range(args.rounds):
                direct = quantize_qdq(graph, images, 1, calibrator)
                batched = quantize_qdq(graph, images, 1, calibrator,
                                       twin=lambda b: export_onnx(model, (b, 3, size, size)))
                times["direct"].append(direct.seconds)
                times["twin"].append(batched.seconds)
            one, wide = statistics.median(times["direct"]), statistics.median(times["twin"])
            print(f"| {name} | {size} px | {calibrator} | {one:.1f} | {wide:.1f} | {batched.batch} | {one / wide:.2f}x | "
                  f"{'yes' if batched.data == direct.data else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
