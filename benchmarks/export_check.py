"""The export's benchmarks, one study per subcommand (``targets``, ``aoti``); each prints its figures
(``benchmarks/README.md`` quotes them).

    .venv/bin/python benchmarks/export_check.py STUDY [options]      # STUDY --help: its options and what it measures
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas2deploy.backends import BackendSettings  # noqa: E402
from nas2deploy.data import open_dataset  # noqa: E402
from nas2deploy.data.synthetic import render  # noqa: E402
from nas2deploy.deploy.export import ExportOptions, Exporter  # noqa: E402
from nas2deploy.latency.profile import profile_space  # noqa: E402
from nas2deploy.nets import load_arch  # noqa: E402
from nas2deploy.ops import OpSpec  # noqa: E402
from nas2deploy.spaces import make_space  # noqa: E402
from nas2deploy.spaces.densenas.derive import derive_under_budget, fastest_latency  # noqa: E402
from nas2deploy.spaces.densenas.latency_model import LatencyModel  # noqa: E402
from nas2deploy.spaces.densenas.space import DenseNASSpace  # noqa: E402
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet  # noqa: E402
from nas2deploy.spaces.tables import load_table, table_space  # noqa: E402
from nas2deploy.train import save_weights, train_arch  # noqa: E402

STUDIES = {
    "targets": """The export's targets, measured in one run on this machine:

1. fidelity: a network trained on the built-in data, exported; ONNX Runtime (fp32) vs PyTorch on
   100 test images: max absolute error as a share of the output scale, top-1 agreement;
2. latency: the exported networks measured against the table's calibrated prediction (x the
   drift factor from re-measuring the table's reference op in this run): the trained small
   network with the shipped 32x32 table, and the published DenseNAS-A/B/C with
   the shipped 224x224 table;
3. speed: wall time of exporting a DenseNAS-C-sized network, accuracy check included (100 image
   files at 224 px, the ONNX reference evaluator on 4 of them), latency measurement excluded;
4. segmentation fidelity: a DCNAS network (64 px) trained on the built-in scenes,
   ONNX Runtime vs PyTorch on 100 test scenes: pixel agreement and mIoU difference.

    .venv/bin/python benchmarks/export_check.py targets [--train-epochs 3]""",
    "aoti": """An AOTInductor engine on this CPU: DenseNAS-A/B/C exported with ``--backend aoti``
and ``--backend onnxruntime`` in one run, each checked against PyTorch, measured, and set
against an ONNX Runtime table's prediction.

The table is profiled here first, over just the ops the three networks use (and the space's
reference op), with the ONNX Runtime CPU backend at batch 1 and one thread, as the shipped 224
table was: the shipped table itself was measured on another machine (an AMD EPYC), and a table
is refused on any machine but its own. Prints, per network: the compile time, the accuracy
checks, ONNX Runtime's and the package's median latency, their ratio, and the table's raw and
calibrated prediction against the ONNX Runtime measurement.

    .venv/bin/python benchmarks/export_check.py aoti [--archs densenas-a,densenas-b,densenas-c]""",
}


ROOT = Path(__file__).parents[1] / "latency_tables"


SMALL = ROOT / "densenas32_small_c10_ort_cpu_fp32_b1.json"


LARGE = ROOT / "densenas224_ort_cpu_fp32_b1.json"


def write_images(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        img, _ = render(i, size, seed=9)
        Image.fromarray(np.clip((img * 0.25 + 0.5) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(folder / f"{i:03d}.png")


def targets(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/export_check.py targets", description=STUDIES["targets"], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-epochs", type=int, default=3)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    quiet = lambda line: None  # noqa: E731

    table = load_table(SMALL)
    space = table_space(table)
    assert isinstance(space, DenseNASSpace)
    net = DenseNASSupernet(space)
    budget = round(2 * fastest_latency(LatencyModel(net, table)), 3)
    arch = derive_under_budget(net, LatencyModel(net, table), budget, name="small")
    arch = arch.with_meta({"lut": str(SMALL), "data": "synthetic", "budget_ms": budget})
    model, top1 = train_arch(arch, open_dataset("synthetic"), args.train_epochs)
    save_weights(model, tmp / "small.pt")
    small = Exporter(arch, str(tmp / "small.pt"), tmp / "small", ExportOptions(samples=100), quiet).run()

    write_images(tmp / "images", 100, 224)
    rows = []
    for name in ("densenas-a", "densenas-b", "densenas-c"):
        start = time.perf_counter()
        report = Exporter(load_arch(name), None, tmp / name, ExportOptions(images=str(tmp / "images"), lut=str(LARGE)), quiet).run()
        rows.append((name, report, time.perf_counter() - start))

    seg_space = make_space("dcnas", {"input_size": 64, "layers": 4, "base_width": 16, "num_classes": 6, "head_width": 32})
    seg_arch = seg_space.sample_arch(random.Random(0))
    seg_model, seg_miou = train_arch(seg_arch, open_dataset("seg-synthetic:400", 64), args.train_epochs, batch_size=16)
    save_weights(seg_model, tmp / "seg.pt")
    seg = Exporter(seg_arch, str(tmp / "seg.pt"), tmp / "seg", ExportOptions(data="seg-synthetic:400", samples=100), quiet).run()

    ort = next(c for c in small["accuracy"]["comparisons"] if c["candidate"] == "onnxruntime")
    print(f"1. fidelity: small network trained {args.train_epochs} epochs (top-1 {top1:.3f}), ONNX Runtime fp32 vs PyTorch "
          f"on {ort['samples']} test images:")
    print(f"   max abs {ort['max_abs']:.2e} = {ort['max_abs_of_scale']:.1e} of the output scale {ort['output_scale']:.2f} "
          f"(target <= 1e-4), mean abs {ort['mean_abs']:.1e}, top-1 agreement {ort['top1_agreement']:.0%} (target 100%), "
          f"min tolerance {ort['min_tolerance']:.1e}")
    print("2. latency, measured / (calibrated prediction x drift), same run (target within 10%):")
    for name, report, _ in [("small (32 px table)", small, 0.0), *rows]:
        lat = report["latency"]["onnxruntime"]
        p = lat.get("prediction")
        if p is None:  # the table describes another machine: no prediction to compare with here
            print(f"   {name:<20} measured {lat['timing']['median_ms']:7.3f} ms; not compared: {report['prediction_skipped']}")
            continue
        print(f"   {name:<20} measured {lat['timing']['median_ms']:7.3f} ms, predicted raw {p['raw_ms']:7.3f} / calibrated "
              f"{p['calibrated_ms']:7.3f} ms (drift {p['drift']:.3f}): x{p['measured_over_predicted']:.3f}")
    print("3. export time, accuracy check included (target <= 30 s for DenseNAS-C):")
    for name, report, wall in rows:
        steps = report["steps_s"]
        print(f"   {name:<12} export + check {steps['export_and_check']:5.1f} s (onnx {steps['onnx']:.1f}, accuracy "
              f"{steps['accuracy']:.1f}); with latency and report {wall:.1f} s")
    c = next(c for c in seg["accuracy"]["comparisons"] if c["candidate"] == "onnxruntime")
    print(f"4. segmentation: DCNAS network trained {args.train_epochs} epochs (mIoU {seg_miou:.3f}), ONNX Runtime vs PyTorch "
          f"on {c['samples']} test scenes: pixel agreement {c['top1_agreement']:.4%} (target >= 99.9%), mIoU difference "
          f"{c['miou_difference']:.3f} points (target <= 0.1), max abs {c['max_abs_of_scale']:.1e} of the output scale")


CLI = [sys.executable, "-m", "nas2deploy"]


class NetworkOps:
    """The ops of some networks of the DenseNAS space, profiled as that space (the table names it)."""

    name: ClassVar[str] = "densenas"

    def __init__(self, space: Any, specs: list[OpSpec]):
        self.space, self.specs = space, specs

    def config_dict(self) -> dict[str, Any]:
        return self.space.config_dict()

    def op_specs(self) -> list[OpSpec]:
        return self.specs

    def reference_op(self) -> OpSpec:
        return self.space.reference_op()


def aoti(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/export_check.py aoti", description=STUDIES["aoti"], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="densenas-a,densenas-b,densenas-c")
    args = ap.parse_args(argv)
    archs = [load_arch(name) for name in args.archs.split(",")]
    tmp = Path(tempfile.mkdtemp())
    specs = {s.key: s for a in archs for s in a.op_specs() if not s.is_free}
    table_path = tmp / "ops_ort_cpu.json"
    t0 = time.perf_counter()
    _, stats = profile_space(NetworkOps(make_space("densenas", {}), sorted(specs.values(), key=lambda s: s.key)),
                             BackendSettings(), table_path)
    print(f"table: {len(specs)} ops of {args.archs} profiled with ONNX Runtime (CPU, 1 thread) in {stats.wall_s:.1f} s")
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):  # photographs are not needed for a check of two runtimes against PyTorch
        Image.fromarray((rng.random((256, 320, 3)) * 255).astype("uint8")).save(images / f"{i}.jpg")
    print(f"  {'network':<12}{'compile':>9}{'checks':>8}{'ORT ms':>9}{'AOTI ms':>9}{'AOTI/ORT':>9}{'table raw':>11}{'ORT/raw':>9}")
    for arch in archs:
        out = tmp / arch.name
        start = time.perf_counter()
        done = subprocess.run([*CLI, "export", "--arch", arch.name, "--backend", "aoti", "--backend", "onnxruntime",
                               "--lut", str(table_path), "--images", str(images), "--out", str(out)],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"  {arch.name}: export failed: {done.stdout[-500:]}{done.stderr[-500:]}")
            continue
        report = json.loads((out / "report.json").read_text())
        passed = sum(c["passed"] for c in report["accuracy"]["comparisons"])
        ort, aoti = (report["latency"][b]["timing"]["median_ms"] for b in ("onnxruntime", "aoti"))
        pred = report["latency"]["onnxruntime"].get("prediction", {})
        raw = pred.get("raw_ms", float("nan")) * pred.get("drift", 1.0)
        print(f"  {arch.name:<12}{report['deployed']['aoti']['compile_s']:>8.1f}s{passed:>4}/{len(report['accuracy']['comparisons'])}"
              f"{ort:>9.3f}{aoti:>9.3f}{aoti / ort:>9.2f}{raw:>10.3f} {ort / raw:>8.2f}   (export {time.perf_counter() - start:.0f} s)",
              flush=True)
    print(f"export_check aoti: {time.perf_counter() - t0:.0f} s in all")


def main() -> None:
    studies = {"targets": targets, "aoti": aoti}
    if len(sys.argv) < 2 or sys.argv[1] not in studies:
        print(__doc__ + "\n" + "\n\n".join(f"{k}: {v.splitlines()[0]}" for k, v in STUDIES.items()))
        sys.exit(2)
    studies[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
