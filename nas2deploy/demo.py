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

import dataclasses

from pathlib import Path
from typing import Callable

from nas2deploy.backends import BackendSettings
from nas2deploy.data import open_dataset
from nas2deploy.deploy.export import Exporter, ExportOptions
from nas2deploy.errors import UserError
from nas2deploy.fileio import claim_folder
from nas2deploy.latency.measure import settings_from_table
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.fidelity import validate_table
from nas2deploy.nets import save_arch
from nas2deploy.objective import LABEL, METRIC
from nas2deploy.report import regenerate
from nas2deploy.runs import prepare, start_search
from nas2deploy.search.config import SearchConfig, provenance
from nas2deploy.search.distributed import compute_device
from nas2deploy.search.run_folder import RunFolder
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.search.closed_loop import derive_measured
from nas2deploy.spaces import SPACES, SpaceEntry, make_space
from nas2deploy.spaces.tables import load_table, table_space
from nas2deploy.train import save_weights, train_arch


def demo_entry(task: str) -> SpaceEntry:
    """The registered space whose demo serves ``task``."""
    for entry in SPACES.values():
        if entry.task == task and entry.demo is not None:
            return entry
    raise UserError(f"no demo for task {task!r}; demos: {', '.join(e.task for e in SPACES.values() if e.demo)}")


def with_classes(entry: SpaceEntry, classes: int) -> SpaceEntry:
    """``entry`` whose demo space ends in ``classes`` outputs: a benchmark's real data set (CamVid's
    11 classes for the 6 of the built-in scenes). The table prices the head, so a space of other
    classes is profiled under its own table name, never read from the shipped table."""
    plan = entry.demo
    assert plan is not None
    if plan.space_config.get("num_classes") == classes:
        return entry
    stem, _, ext = plan.table_name.rpartition(".")
    plan = dataclasses.replace(plan, space_config={**plan.space_config, "num_classes": classes},
                               table_name=f"{stem}_c{classes}.{ext}", shipped=None)
    return dataclasses.replace(entry, demo=plan)


def default_folders(task: str) -> tuple[str, str]:
    """Each task's demo has its own run and export folders, so the demos run back to back."""
    return f"runs/demo/{task}", f"export/demo/{task}"


def _refuse_another_demo(out: Path, entry: SpaceEntry) -> None:
    """The demo resumes its own search in ``out``; a search of another space there (another
    task's demo given the same --out) is refused before any work, naming what is there."""
    checkpoint = out / "search" / "checkpoint.pt"
    if not checkpoint.exists():
        return
    found = RunFolder(out / "search").load_checkpoint()["config"].get("space")
    if found != entry.name:
        raise UserError(f"{out} holds the demo of the {found} space (its search in {out / 'search'}); "
                        f"give the {entry.task} demo another --out, or delete that folder")


def demo_search_config(entry: SpaceEntry, table: str, budget_ms: float | None) -> SearchConfig:
    """The demo's search on ``table``, narrowed to the demo's space where the table covers more
    (the shipped DenseNAS table also prices the stacking layers the demo leaves out)."""
    assert entry.demo is not None
    profiled = table_space(load_table(table)).config_dict()
    narrowed = {k: v for k, v in entry.demo.space_config.items() if profiled.get(k) != v}
    return SearchConfig(table=table, space=entry.name, data=entry.demo.data, budget_ms=budget_ms, space_config=narrowed,
                        **entry.demo.search)


def demo_table(entry: SpaceEntry, out: Path, say: Callable[[str], None]) -> LatencyTable:
    plan = entry.demo
    assert plan is not None
    if plan.shipped is not None and plan.shipped.exists():
        table = load_table(plan.shipped)
        try:
            settings_from_table(table)
            say(f"[1/6] using the shipped table {plan.shipped.name} (measured on this kind of CPU)")
            return table
        except UserError:
            pass
    path = out / plan.table_name
    if path.exists():  # profiled by an earlier demo on this machine
        say(f"[1/6] using the table profiled here earlier: {path}")
        return load_table(path)
    space = make_space(entry.name, plan.space_config)
    say(f"[1/6] profiling {len(space.op_specs())} ops of the small {entry.name} space on this CPU -> {path}")
    table, stats = profile_space(space, BackendSettings(), path)
    say(f"      {stats.wall_s:.0f} s; validating on 20 networks")
    report = validate_table(table, space.sample_arch, 20)
    say(f"      calibrated median error {report['calibrated']['median_ape']:.1f}%")
    return table


def run_demo(out: str | Path, export_dir: str | Path, say: Callable[[str], None], task: str = "classification",
             device: str = "cpu", amp: str = "off", workers: int = 0, channels_last: bool = True) -> dict[str, float]:
    """The whole chain; the search and the training run on ``device`` (the table and the export
    measure the CPU the demo profiles)."""
    entry = demo_entry(task)
    plan = entry.demo
    assert plan is not None
    out = Path(out)
    _refuse_another_demo(out, entry)
    for folder, flag in ((out, "--out"), (Path(export_dir), "--export-dir")):  # before minutes of work
        claim_folder(folder, force=True, flag=flag)  # the demo resumes in its folder and replaces its export
    out.mkdir(parents=True, exist_ok=True)
    table = demo_table(entry, out, say)
    assert table.path is not None
    run_dir = out / "search"
    # The budget needs the space's latency range, which the latency model knows before training.
    fastest, slowest = prepare(demo_search_config(entry, str(table.path), None)).space_search.latency_range()
    budget = round(plan.budget(fastest, slowest), 3)
    config = dataclasses.replace(demo_search_config(entry, str(table.path), budget), device=device, amp=amp, workers=workers,
                                 channels_last=channels_last)
    say(f"[2/6] searching under a {budget} ms budget ({config.epochs} epochs) -> {run_dir}")
    resume = (run_dir / "checkpoint.pt").exists()
    search = start_search(config, run_dir, resume=resume, progress=lambda line: say("      " + line))
    search.run()
    # closed loop (derive --measure): the table is this CPU's, so the network is measured to fit
    verified = derive_measured(search.space_search, budget, name="demo", say=lambda line: say("      " + line),
                               **search.derive_options)
    arch = verified.arch.with_meta(provenance(search.config, budget))
    save_arch(arch, out / "arch.json")
    say(f"[3/6] derived {arch.size_label()}, predicted {verified.predicted_ms:.3f} ms, measured {verified.measured_ms:.3f} ms "
        f"-> {out / 'arch.json'}")
    metric = LABEL[METRIC[task]]
    say(f"[4/6] training the derived network on the built-in data ({plan.train_epochs} epochs)")
    data = open_dataset(plan.data, table_space(table).config_dict()["input_size"])
    model, score = train_arch(arch, data, plan.train_epochs, batch_size=plan.train_batch, lr=plan.train_lr,
                              device=compute_device(device), amp=amp, workers=workers, channels_last=channels_last,
                              progress=lambda line: say("      " + line))
    save_weights(model, out / "weights.pt")
    say(f"      {metric} {score:.3f} on the test split")
    say(f"[5/6] exporting to {export_dir}: ONNX, accuracy check on 100 test images, latency vs prediction and budget")
    options = ExportOptions(force=True)
    report = Exporter(arch, str(out / "weights.pt"), export_dir, options, lambda line: say("      " + line)).run()
    say(f"[6/6] search report: {regenerate(run_dir)}")
    backend = options.backends[0]
    latency = report["latency"][backend]
    measured = latency["timing"]["median_ms"]
    predicted = latency["prediction"]["calibrated_ms"] or latency["prediction"]["raw_ms"]
    say(f"{metric} {score:.3f}; measured {measured:.3f} ms with {backend} vs predicted {predicted:.3f} ms "
        f"({measured / predicted - 1:+.1%}) and budget {budget} ms ({measured / budget:.2f}x)")
    if not DEFAULT_FILL * budget <= measured <= budget:
        say(f"warning: the export measured {measured / budget:.2f}x the budget, outside the [{DEFAULT_FILL:g}, 1] x budget "
            f"the derivation aimed for (the closed loop measured it at {verified.measured_ms:.3f} ms): this machine's "
            "speed changed between the two measurements; run the demo again on a quiet machine")
    return {"budget_ms": budget, "predicted_ms": predicted, "measured_ms": measured, "score": score}
