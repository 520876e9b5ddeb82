"""An AOTInductor engine on this CPU (issue 14): DenseNAS-A/B/C exported with ``--backend aoti``
and ``--backend onnxruntime`` in one run, each checked against PyTorch, measured, and set
against an ONNX Runtime table's prediction.

The table is profiled here first, over just the ops the three networks use (and the space's
reference op), with the ONNX Runtime CPU backend at batch 1 and one thread, as the shipped 224
table was: the shipped table itself was measured on another machine (an AMD EPYC), and a table
is refused on any machine but its own. Prints, per network: the compile time, the accuracy
checks, ONNX Runtime's and the package's median latency, their ratio, and the table's raw and
calibrated prediction against the ONNX Runtime measurement.

    .venv/bin/python benchmarks/aoti_check.py [--archs densenas-a,densenas-b,densenas-c]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from nas2deploy.backends import BackendSettings
from nas2deploy.latency.profile import profile_space
from nas2deploy.nets import load_arch
from nas2deploy.ops import OpSpec
from nas2deploy.spaces import make_space

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="densenas-a,densenas-b,densenas-c")
    args = ap.parse_args()
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
    print(f"aoti_check: {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
