"""The end-to-end demo on built-in data: table -> search under a budget -> derive -> train ->
export (ONNX, accuracy check, latency against the table's prediction and the budget) -> reports.

The shipped table for the small space is used when it was measured on a CPU like this one
(same model name and core count); otherwise the space is profiled here first (~1 minute) and
validated on a few networks, and later runs reuse that table. Everything lands in the output
folder; an interrupted search resumes, a finished one is not repeated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from nas2deploy.arch import save_arch
from nas2deploy.backends import BackendSettings
from nas2deploy.data import open_dataset
from nas2deploy.deploy.export import Exporter, ExportOptions
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.validate import settings_from_table, validate_table
from nas2deploy.report import regenerate
from nas2deploy.search.derive import fastest_latency
from nas2deploy.search.expected_latency import LatencyModel
from nas2deploy.search.loop import Search, SearchConfig, provenance
from nas2deploy.search.supernet import DenseNASSupernet
from nas2deploy.search.verify import derive_measured
from nas2deploy.spaces import make_space
from nas2deploy.spaces.densenas import DenseNASSpace
from nas2deploy.train import save_weights, train_arch

DEMO_SPACE = {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1}
SHIPPED = Path(__file__).parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"
BUDGET_FACTOR = 1.7  # budget = 1.7 x the fastest network the space can express


def demo_search_config(table: str, budget_ms: float | None) -> SearchConfig:
    """A demo-sized search: 6 epochs (2 of weight warm-up) of 8 batches of 32 per pass, and a
    faster architecture learning rate than the paper's 3e-4 so that so few steps move it."""
    return SearchConfig(table=table, budget_ms=budget_ms, epochs=6, warmup_epochs=2, batch_size=32, max_batches=8,
                        a_lr=3e-3)


def _table(out: Path, say: Callable[[str], None]) -> LatencyTable:
    if SHIPPED.exists():
        table = LatencyTable.load(SHIPPED)
        try:
            settings_from_table(table)
            say(f"[1/6] using the shipped table {SHIPPED.name} (measured on this kind of CPU)")
            return table
        except UserError:
            pass
    path = out / "densenas32_small_c10_ort_cpu.json"
    if path.exists():  # profiled by an earlier demo on this machine
        say(f"[1/6] using the table profiled here earlier: {path}")
        return LatencyTable.load(path)
    space = make_space("densenas", DEMO_SPACE)
    say(f"[1/6] profiling {len(space.op_specs())} ops of the small space on this CPU -> {path}")
    table, stats = profile_space(space, BackendSettings(), path)
    say(f"      {stats.wall_s:.0f} s; validating on 20 networks")
    report = validate_table(table, 20)
    say(f"      calibrated median error {report['calibrated']['median_ape']:.1f}%")
    return table


def run_demo(out: str | Path, export_dir: str | Path, say: Callable[[str], None]) -> dict[str, float]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = _table(out, say)
    assert table.path is not None
    run_dir = out / "search"
    # The budget needs the space's fastest network, which the latency model knows before training.
    space = table.space()
    assert isinstance(space, DenseNASSpace)
    budget = round(BUDGET_FACTOR * fastest_latency(LatencyModel(DenseNASSupernet(space), table)), 3)
    config = demo_search_config(str(table.path), budget)
    say(f"[2/6] searching under a {budget} ms budget ({config.epochs} epochs) -> {run_dir}")
    resume = (run_dir / "checkpoint.pt").exists()
    search = Search(config, run_dir, resume=resume, progress=lambda line: say("      " + line))
    search.run()
    # closed loop (derive --measure): the shipped table is this CPU's, so the network is measured to fit
    verified = derive_measured(search.model, budget, name="demo", say=lambda line: say("      " + line))
    arch = dataclasses.replace(verified.arch, meta=provenance(config, budget))
    save_arch(arch, out / "arch.json")
    say(f"[3/6] derived {len(arch.blocks)} blocks, predicted {verified.predicted_ms:.3f} ms, measured {verified.measured_ms:.3f} ms "
        f"-> {out / 'arch.json'}")
    say("[4/6] training the derived network on the built-in data (5 epochs)")
    model, top1 = train_arch(arch, open_dataset("synthetic"), 5)
    save_weights(model, out / "weights.pt")
    say(f"      top-1 {top1:.3f} on the test split")
    say(f"[5/6] exporting to {export_dir}: ONNX, accuracy check on 100 test images, latency vs prediction and budget")
    report = Exporter(arch, str(out / "weights.pt"), export_dir, ExportOptions(force=True), lambda line: say("      " + line)).run()
    say(f"[6/6] search report: {regenerate(run_dir)}")
    latency = report["latency"]["onnxruntime"]
    measured = latency["timing"]["median_ms"]
    predicted = latency["prediction"]["calibrated_ms"] or latency["prediction"]["raw_ms"]
    say(f"top-1 {top1:.3f}; measured {measured:.3f} ms with ONNX Runtime vs predicted {predicted:.3f} ms "
        f"({measured / predicted - 1:+.1%}) and budget {budget} ms ({measured / budget:.2f}x)")
    return {"budget_ms": budget, "predicted_ms": predicted, "measured_ms": measured, "top1": top1}
