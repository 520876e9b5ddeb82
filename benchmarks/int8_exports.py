"""INT8 exports of the shipped networks: speed-up over fp32 on ONNX Runtime's CPU provider and
the accuracy the quantisation costs, in one table.

Each network is trained briefly on ``--train-images`` images (the demo's recipe, ``--epochs``):
the classification ones (MobileNetV2, DenseNAS-A/B/C) at 32 px with 10 classes on ``--data``,
the segmentation ones (``dpc-mnv2``, ``aspp-mnv2`` in ``--networks``) at the size and classes of
``--seg-data`` (the built-in scenes by default). Then each is exported twice by ``Exporter`` as
``nas2deploy export`` does: fp32 and ``--precision int8`` with ``--calibration-images`` training
images per calibrator. Printed per network and calibrator: the fp32 score (top-1, or mIoU) on the
training's test split, the int8 drop in points and the argmax agreement on the first
``--test-images`` test images, the calibration's seconds, and the median latency of each graph
on ONNX Runtime (one thread, the export's harness, measured in the same export one after the
other) with the speed-up. The exports' reports stay in ``--out``.

    .venv/bin/python benchmarks/int8_exports.py --data DIR/cifar10 [--train-images 5000] [--epochs 1]
        [--calibrators minmax,percentile,entropy] [--networks mobilenetv2,densenas-a,densenas-b,densenas-c,dpc-mnv2]
        [--seg-data seg-synthetic:1000] [--seg-size 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.deploy.export import FP32_GRAPH, CheckFailed, Exporter, ExportOptions  # noqa: E402
from nas2deploy.evaluation.scores import benchmark_data  # noqa: E402
from nas2deploy.nets import load_arch  # noqa: E402
from nas2deploy.train import save_weights, train_arch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a CIFAR-10 folder (or any 10-class data spec)")
    parser.add_argument("--networks", default="mobilenetv2,densenas-a,densenas-b,densenas-c")
    parser.add_argument("--calibrators", default="minmax,percentile,entropy")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--seg-data", default="seg-synthetic:1000", help="segmentation data (the built-in scenes, a "
                        "CamVid or Cityscapes folder) for the segmentation networks")
    parser.add_argument("--seg-size", type=int, default=128, help="the segmentation networks' input size")
    parser.add_argument("--out", default="runs/int8")
    args = parser.parse_args()
    rows = []
    for name in args.networks.split(","):
        shipped = load_arch(name)
        spec, size = (args.seg_data, args.seg_size) if shipped.task == "segmentation" else (args.data, 32)
        data = benchmark_data(spec, size, 0, args.train_images)
        arch = shipped.for_data(data.image_size, data.image_size, data.num_classes).renamed(f"{name}-{data.image_size}")
        folder = Path(args.out) / name
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        model, top1 = train_arch(arch, data, args.epochs, seed=0)
        save_weights(model, folder / "weights.pt")
        trained_s = time.perf_counter() - start
        for calibrator in args.calibrators.split(","):
            options = ExportOptions(data=spec, samples=args.test_images, precision="int8", calibration_data=spec,
                                    calibration_images=args.calibration_images,
                                    calibrator=calibrator, force=True)
            try:
                report = Exporter(arch, str(folder / "weights.pt"), folder / calibrator, options).run()
            except CheckFailed as exc:  # the folder and its report are written: the figures are in them
                print(f"{name} {calibrator}: {exc}", file=sys.stderr)
                report = json.loads((folder / calibrator / "report.json").read_text())
            checks = {c["candidate"]: c for c in report["accuracy"]["comparisons"]}
            int8, fp32 = report["latency"]["onnxruntime"]["timing"], report["latency"][FP32_GRAPH]["timing"]
            rows.append((f"{name} ({spec})", calibrator, top1, checks["onnxruntime"]["accuracy_drop"],
                         checks["onnxruntime"]["top1_agreement"], report["quantization"]["seconds"],
                         fp32["median_ms"], int8["median_ms"], report["quantization"]["speedup_over_fp32"], trained_s))
            print(f"{name} {calibrator}: done", file=sys.stderr)
    print(f"\n{args.train_images} training images x {args.epochs} epochs; {args.calibration_images} calibration images; "
          f"drops on {args.test_images} test images; ONNX Runtime CPU, 1 thread, batch 1\n")
    print("| network | calibrator | fp32 top-1 / mIoU (training's test split) | int8 drop (points) | argmax agreement | "
          "calibration s | fp32 ms | int8 ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, calibrator, top1, drop, agree, cal_s, fp32_ms, int8_ms, speedup, _ in rows:
        print(f"| {name} | {calibrator} | {top1:.3f} | {drop:+.2f} | {agree:.1%} | {cal_s:.1f} | {fp32_ms:.3f} | "
              f"{int8_ms:.3f} | {speedup:.2f}x |")


if __name__ == "__main__":
    main()
