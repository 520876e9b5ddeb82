"""The end-to-end demo on built-in data: table -> search under a budget -> derive -> train ->
export (ONNX, accuracy check, latency against the table's prediction and the budget) -> reports,
for classification (DenseNAS on synthetic 32 px shapes) or segmentation (DCNAS on synthetic
64 px scenes).

A shipped table for the small space is used when it was measured on a CPU like this one
(same model name and core count); otherwise the space is profiled here first (~1 minute) and
validated on a few networks, and later runs reuse that table. Everything lands in the output
folder; an interrupted search resumes, a finished one is not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nas2deploy.nets import save_arch
from nas2deploy.backends import BackendSettings
from nas2deploy.data import open_dataset
from nas2deploy.deploy.export import Exporter, ExportOptions
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.validate import settings_from_table, validate_table
from nas2deploy.objective import LABEL, METRIC
from nas2deploy.report import regenerate
from nas2deploy.search.loop import Search, SearchConfig, provenance
from nas2deploy.search.space_search import make_space_search
from nas2deploy.search.verify import derive_measured
from nas2deploy.spaces import make_space
from nas2deploy.train import save_weights, train_arch


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs for one task: a small space, its built-in data and a short search."""

    task: str
    space: str
    space_config: dict[str, Any]
    data: str
    table_name: str
    #: a table shipped with the package, used when it was measured on this kind of CPU
    shipped: Path | None
    search: dict[str, Any]  # SearchConfig fields of the demo-sized search
    train_epochs: int
    train_batch: int
    train_lr: float
    #: the budget from the (fastest, slowest) predicted latency the derivation reaches
    budget: Callable[[float, float], float]


PLANS = {
    # 6 epochs (2 of weight warm-up) of 8 batches of 32 per pass, and a faster architecture
    # learning rate than the paper's 3e-4 so that so few steps move it.
    "classification": DemoPlan(
        "classification", "densenas", {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1},
        "synthetic", "densenas32_small_c10_ort_cpu.json",
        Path(__file__).parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json",
        {"epochs": 6, "warmup_epochs": 2, "batch_size": 32, "max_batches": 8, "a_lr": 3e-3}, 5, 64, 0.05,
        lambda fastest, slowest: 1.7 * fastest),  # the small DenseNAS space spans 0.2-2.1 ms
    # 64 px scenes, a 6-layer grid of widths 32..256 (21 cells, 129 connections): the same shape
    # of search at a size a CPU runs in about a minute (32 ops to profile).
    "segmentation": DemoPlan(
        "segmentation", "dcnas", {"input_size": 64, "layers": 6, "base_width": 32, "num_classes": 6, "head_width": 32},
        "seg-synthetic:400", "dcnas64_small_ort_cpu.json", None,
        {"epochs": 6, "warmup_epochs": 2, "batch_size": 16, "max_batches": 8, "a_lr": 3e-3, "w_lr": 0.05}, 20, 16, 0.1,
        # the fixed output block is most of a small DCNAS network's latency: the derivation's
        # networks span only ~1.4x, so the budget sits 60% of the way up that range
        lambda fastest, slowest: fastest + 0.6 * (slowest - fastest)),
}


def demo_search_config(plan: DemoPlan, table: str, budget_ms: float | None) -> SearchConfig:
    return SearchConfig(table=table, space=plan.space, data=plan.data, budget_ms=budget_ms, **plan.search)


def _table(plan: DemoPlan, out: Path, say: Callable[[str], None]) -> LatencyTable:
    if plan.shipped is not None and plan.shipped.exists():
        table = LatencyTable.load(plan.shipped)
        try:
            settings_from_table(table)
            say(f"[1/6] using the shipped table {plan.shipped.name} (measured on this kind of CPU)")
            return table
        except UserError:
            pass
    path = out / plan.table_name
    if path.exists():  # profiled by an earlier demo on this machine
        say(f"[1/6] using the table profiled here earlier: {path}")
        return LatencyTable.load(path)
    space = make_space(plan.space, plan.space_config)
    say(f"[1/6] profiling {len(space.op_specs())} ops of the small {plan.space} space on this CPU -> {path}")
    table, stats = profile_space(space, BackendSettings(), path)
    say(f"      {stats.wall_s:.0f} s; validating on 20 networks")
    report = validate_table(table, 20)
    say(f"      calibrated median error {report['calibrated']['median_ape']:.1f}%")
    return table


def run_demo(out: str | Path, export_dir: str | Path, say: Callable[[str], None], task: str = "classification") -> dict[str, float]:
    plan = PLANS[task]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = _table(plan, out, say)
    assert table.path is not None
    run_dir = out / "search"
    # The budget needs the space's latency range, which the latency model knows before training.
    config = demo_search_config(plan, str(table.path), None)
    fastest, slowest = make_space_search(table.space(), table, config.path_samples, config.channel_fraction).latency_range()
    budget = round(plan.budget(fastest, slowest), 3)
    config = demo_search_config(plan, str(table.path), budget)
    say(f"[2/6] searching under a {budget} ms budget ({config.epochs} epochs) -> {run_dir}")
    resume = (run_dir / "checkpoint.pt").exists()
    search = Search(config, run_dir, resume=resume, progress=lambda line: say("      " + line))
    search.run()
    # closed loop (derive --measure): the table is this CPU's, so the network is measured to fit
    verified = derive_measured(search.searched, budget, name="demo", say=lambda line: say("      " + line))
    arch = verified.arch.with_meta(provenance(config, budget))
    save_arch(arch, out / "arch.json")
    size = arch.size_label()
    say(f"[3/6] derived {size}, predicted {verified.predicted_ms:.3f} ms, measured {verified.measured_ms:.3f} ms "
        f"-> {out / 'arch.json'}")
    metric = LABEL[METRIC[task]]
    say(f"[4/6] training the derived network on the built-in data ({plan.train_epochs} epochs)")
    data = open_dataset(plan.data, table.space().config_dict()["input_size"])
    model, score = train_arch(arch, data, plan.train_epochs, batch_size=plan.train_batch, lr=plan.train_lr)
    save_weights(model, out / "weights.pt")
    say(f"      {metric} {score:.3f} on the test split")
    say(f"[5/6] exporting to {export_dir}: ONNX, accuracy check on 100 test images, latency vs prediction and budget")
    report = Exporter(arch, str(out / "weights.pt"), export_dir, ExportOptions(force=True), lambda line: say("      " + line)).run()
    say(f"[6/6] search report: {regenerate(run_dir)}")
    latency = report["latency"]["onnxruntime"]
    measured = latency["timing"]["median_ms"]
    predicted = latency["prediction"]["calibrated_ms"] or latency["prediction"]["raw_ms"]
    say(f"{metric} {score:.3f}; measured {measured:.3f} ms with ONNX Runtime vs predicted {predicted:.3f} ms "
        f"({measured / predicted - 1:+.1%}) and budget {budget} ms ({measured / budget:.2f}x)")
    return {"budget_ms": budget, "predicted_ms": predicted, "measured_ms": measured, "score": score}
