"""``report.md`` of a black-box study (``nas2deploy report OUT`` on the folder of ``search`` for a
space searched trial by trial, such as ``--space dpc``): the trajectory (each scored network's
score by trial, and the best so far), the score/latency Pareto front of the scored networks with
the budget, the best networks, and the re-ranking and closed-loop measurements where the search
made them.

It reads ``OUT/study.json``, which the search writes from the study's storage when a worker
finishes (so the report needs neither Optuna nor the storage), each field checked; the space's
registered study describes each network in words. Files written before studies were generic
(format ``nas2deploy-dpc-study``) are DPC studies and read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas2deploy import plotting
from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_bytes, check_format, read_json
from nas2deploy.search.blackbox.study import STUDY_FORMAT, STUDY_VERSION
from nas2deploy.spaces import get_space
from nas2deploy.validate import Field

STATES = ("complete", "pruned", "fail", "running", "waiting")
#: The format of DPC studies written before studies were generic (no space name: DPC's).
DPC_STUDY_FORMAT = "nas2deploy-dpc-study"


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    score: float | None
    latency_ms: float | None
    cell: str  # the network in words ("-" for a trial that drew none)


def read_study(path: Path) -> dict[str, Any]:
    """``study.json``, its fields checked (the trials as ``TrialRow``, each network in words: the
    row's ``label``, or for a file that records none, as its space's registered study describes
    its ``cell``)."""
    doc = read_json(path, "study summary")
    legacy = isinstance(doc, dict) and doc.get("format") == DPC_STUDY_FORMAT
    check_format(doc, path, DPC_STUDY_FORMAT if legacy else STUDY_FORMAT, 1 if legacy else (1, STUDY_VERSION), "study summary")
    # a DPC study and version 1 named the scores after DPC's metric, whatever the space's score was
    score, study_score = ("miou", "proxy_miou") if legacy or doc["version"] == 1 else ("score", "study_score")
    f = Field(doc, f"study summary {path}", "search again to rewrite it")
    space = "dpc" if legacy else f["space_name"].str()

    def label(row: Field) -> str:
        if row.has("label"):
            return row["label"].str(max_len=4096)
        cell = row.get("cell")
        if not cell:
            return "-"
        adapter = get_space(space).study
        if adapter is None:
            raise UserError(f"study summary {path}: its trials record no label, and the {space} space has no "
                            "black-box study to describe their networks; search again to rewrite it")
        return adapter.describe(cell.value)

    options = {"proxy_epochs": f["proxy_epochs"].int(1, 10**6)} if legacy else {
        k: _option(v) for k, v in f["options"].items(max_len=64)}
    rows = []
    for t in f["trial_rows"].list(max_len=10**6):
        rows.append(TrialRow(
            t["number"].int(0, 10**9), t["state"].str(STATES),
            s.number(0, 1) if (s := t.get(score)) else None,
            ms.number(0, 1e9) if (ms := t.get("latency_ms")) else None,
            label(t)))
    rerank = f.get("rerank")
    score_label = "proxy mIoU" if legacy else f["score_label"].str(max_len=64)
    return {"study": f["study"].str(), "sampler": f["sampler"].str(), "budget_ms": f["budget_ms"].number(0, 1e9, lo_open=True),
            "space": space, "label": score_label, "options": options, "rows": rows,
            "best": f["best"]["trial"].int(0, 10**9) if f.has("best") else None,
            "rerank": [(r["trial"].int(0, 10**9), r[study_score].number(0, 1), r[score].number(0, 1))
                       for r in rerank["cells"].list(max_len=10**4)] if rerank else [],
            "rerank_epochs": rerank["epochs"].int(1, 10**6) if rerank else None,
            "measured": [(m["trial"].int(0, 10**9), m["measured_ms"].number(0, 1e9), m["fits"].bool())
                         for m in f["measured"].list(max_len=10**4)] if f.get("measured") else [],
            "warnings": [w.str(max_len=4096) for w in f["warnings"].list(max_len=10**4)] if f.get("warnings") else [],
            "failure": f["failure"].str(max_len=4096) if f.get("failure") else None}


def _option(f: Field) -> Any:
    """A study option as recorded: a flag, a finite number or a short text."""
    if isinstance(f.value, bool):
        return f.value
    if isinstance(f.value, int):
        return f.int(-10**12, 10**12)
    if isinstance(f.value, float):
        return f.number(-1e12, 1e12)
    return f.str(max_len=1024)


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The (latency, mIoU, trial) points no other point beats in both (lower latency, higher
    mIoU), by latency."""
    front: list[tuple[float, float, int]] = []
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or p[1] > front[-1][1]:
            front.append(p)
    return front


def _plots(folder: Path, study: dict[str, Any]) -> list[str]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    trained = [r for r in study["rows"] if r.state == "complete" and r.score is not None and r.latency_ms is not None]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    label = study["label"]
    ax.plot([r.number for r in trained], [r.score for r in trained], "o", ms=3, color="#9a9a9a", label="trained network")
    best, running = [], -1.0
    for r in trained:
        running = max(running, r.score or 0.0)
        best.append(running)
    ax.step([r.number for r in trained], best, where="post", color="#d62728", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
    plotting.title(ax, f"study {study['study']} ({study['sampler']}): {len(trained)} of {len(study['rows'])} trials trained")
    names = [plotting.save(fig, folder / "trajectory.png")]

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    points = [(r.latency_ms or 0.0, r.score or 0.0, r.number) for r in trained]
    ax.plot([p[0] for p in points], [p[1] for p in points], "o", ms=3, color="#9a9a9a", label="trained network")
    front = pareto_front(points)
    ax.plot([p[0] for p in front], [p[1] for p in front], "D-", ms=5, color="#1f77b4", label="Pareto front")
    chosen = [p for p in points if p[2] == study["best"]]
    if chosen:
        ax.plot([chosen[0][0]], [chosen[0][1]], "*", ms=14, color="#d62728", label=f"chosen (trial {study['best']})")
    ax.axvline(study["budget_ms"], color="#cc3311", ls="--", label="budget")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
    plotting.title(ax, f"trained networks: {label} against the table's prediction")
    names.append(plotting.save(fig, folder / "pareto.png"))
    return names


def write_study_report(folder: Path) -> Path:
    study = read_study(folder / "study.json")
    rows = study["rows"]
    by_number = {r.number: r for r in rows}
    count = {s: sum(r.state == s for r in rows) for s in STATES}
    label = study["label"]
    options = "".join(f", {k.replace('_', ' ')} {v}" for k, v in sorted(study["options"].items()))
    lines = [f"# {study['space']} study `{study['study']}`", "",
             f"Sampler {study['sampler']}, budget {study['budget_ms']:.4g} ms{options}; "
             f"{len(rows)} trials: {count['complete']} trained, {count['pruned']} over the budget (never trained), "
             f"{count['fail']} failed, {count['running']} running.", ""]
    if study["failure"]:
        lines += [f"**No network delivered**: {study['failure']}.", ""]
    lines += [f"**Warning**: {w}." for w in study["warnings"]] + ([""] if study["warnings"] else [])
    if count["complete"]:
        lines += [f"![{n}]({n})" for n in _plots(folder, study)] + [""]
    trained = sorted((r for r in rows if r.state == "complete" and r.score is not None), key=lambda r: -(r.score or 0.0))
    lines += [f"## Best networks by {label}", "", f"| trial | {label} | predicted ms | network |", "|---|---|---|---|"]
    lines += [f"| {r.number} | {r.score:.4f} | {r.latency_ms:.4g} | {r.cell} |" for r in trained[:10]]
    if study["rerank"]:
        lines += ["", f"## Re-ranked by end-to-end training ({study['rerank_epochs']} epochs)", "",
                  f"| trial | end-to-end score | {label} |", "|---|---|---|"]
        lines += [f"| {t} | {e2e:.4f} | {proxy:.4f} |" for t, proxy, e2e in study["rerank"]]
    if study["measured"]:
        lines += ["", "## Measured on the table's device (closed loop)", "", "| trial | measured ms | predicted ms | fits |",
                  "|---|---|---|---|"]
        lines += [f"| {t} | {ms:.4g} | {by_number[t].latency_ms if t in by_number else float('nan'):.4g} | "
                  f"{'yes' if fits else 'no'} |" for t, ms, fits in study["measured"]]
    if study["best"] is not None:
        best = by_number.get(study["best"])
        lines += ["", f"**Chosen: trial {study['best']}**: {best.cell if best else '-'} (`best.json`)."]
    path = folder / "report.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
