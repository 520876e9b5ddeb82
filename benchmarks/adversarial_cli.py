"""The command line under attack: malformed files, planted links, a second process, damaged
studies and the machine's limits, each case typed as a user (or an attacker) would.

Every case runs the real CLI (``python -m nas2deploy`` in a subprocess where a case could hang
or needs two processes, the same click entry point in this process otherwise) on a workspace
built here: a latency table, a search run, an export, trained weights, a derived architecture
and a DPC study with its feature cache. A case is judged by what the user sees and what is left
on disk:

1. **malformed files** (tables, architectures, configurations, checkpoints with their optimiser
   state, export reports, search logs, studies, feature caches): one ``Error:`` line and exit 1,
   or (where the file is still usable) exit 0 with the damage named in a warning. Counted:
   tracebacks, and invalid values used or shown without a word.
2. **links**: a symbolic link (to a file outside the workspace) at every output and every file
   under it, and a hard link at every file appended to or rewritten in place; counted: writes
   outside (the victims' bytes, compared).
3. **a second process** at every step: a real process holds the output's lock (as a first
   command does at any step of its work) and the command is run against the same output with
   ``--force``; two real searches and two real exports are also started together. Counted:
   refusals, and outputs of the first changed.
4. **torn and poisoned studies**: a journal cut mid-line, trial values of NaN, infinity and
   1e308, a trial without its latency, a SQLite value stored as text, a dropped table, a worker
   killed mid-trial. Counted: trials lost (a study that does not reach its count of trained
   trials) and poisoned trials chosen as best.
5. **the machine's limits**: a full disk (a small tmpfs, mounted where this runs as root; skipped
   otherwise), device files and FIFOs given as inputs, output names too long for the
   filesystem, an ONNX model whose run never ends. Counted: hangs (60 s), deaths by a signal
   (SIGBUS), and failures that do not name the file and the limit.

Prints one row per group (the issue's table) and, with ``-v``, every case.

    .venv/bin/python benchmarks/adversarial_cli.py [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from nas2deploy.cli import cli  # noqa: E402
from nas2deploy.spaces import make_space  # noqa: E402
from nas2deploy.testing import random_table  # noqa: E402
from nas2deploy.train import save_weights  # noqa: E402

TABLE = ROOT / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"
ARCH = {"format": "nas2deploy.arch", "version": 1, "input_size": 32, "num_classes": 10,
        "stem": {"conv": 8, "out": 8, "stride": 1}, "blocks": [{"out": 16, "stride": 2, "head": "k3e3"}], "tail": 32}
SEARCH = ["--data", "synthetic:100", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "16", "--max-batches", "1"]
HANG_S = 60
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@dataclass
class Said:
    """What one command showed: its exit status and output, and whether it hung."""

    code: int
    output: str
    hung: bool = False

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.output or self.code not in (0, 1, 2)

    @property
    def one_line(self) -> bool:
        return self.code == 1 and sum(line.startswith(("Error:", "error:")) for line in self.output.splitlines()) == 1

    @property
    def warned(self) -> bool:
        return "warning" in self.output.lower()


def here(args: list[Any]) -> Said:
    """The CLI in this process (click's runner: the same entry point, no start-up cost)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        return Said(99, result.output + "".join(traceback.format_exception(result.exception)))
    return Said(result.exit_code, result.output)


def apart(args: list[Any], timeout: float = HANG_S) -> Said:
    """The CLI in a process of its own, stopped after ``timeout`` seconds (a hang)."""
    try:
        done = subprocess.run([sys.executable, "-m", "nas2deploy", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired:
        return Said(-1, "", hung=True)
    code = done.returncode if done.returncode >= 0 else 128 - done.returncode
    return Said(code, done.stdout + done.stderr)


@dataclass
class Row:
    name: str
    cases: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def case(self, label: str, ok: bool, what: str, said: Said | None = None) -> None:
        self.cases += 1
        if not ok:
            self.count(what)
            self.failures.append(f"{label}: {what}" + (f" (exit {said.code}: {said.output.strip()[-300:]})" if said else ""))


# -- the workspace ----------------------------------------------------------------------------
@dataclass
class Workspace:
    root: Path
    table: Path
    run: Path
    export: Path
    arch: Path
    weights: Path
    dpc_table: Path
    chain: Path
    budget: float
    study: Path

    def dpc(self, out: Path, trials: int, *extra: Any) -> list[Any]:
        return ["search", "--space", "dpc", "--lut", self.dpc_table, "--weights", self.chain, "--data", "seg-synthetic:8",
                "--budget-ms", self.budget, "--proxy-epochs", 1, "--trials", trials, "--out", out, *extra]

    def copy(self, what: Path, name: str) -> Path:
        target = self.root / "copies" / name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if what.is_dir() else shutil.copy2)(what, target)
        return target


def workspace(root: Path) -> Workspace:
    table = root / "t.json"
    shutil.copy2(TABLE, table)
    arch = root / "a.json"
    arch.write_text(json.dumps(ARCH))
    for args in (["search", "--lut", table, *SEARCH, "--out", root / "run"],
                 ["export", "--arch", arch, "--data", "synthetic:40", "--samples", "4", "--out", root / "export"],
                 ["train", "--arch", arch, "--data", "synthetic:64", "--epochs", "1", "--out", root / "w.pt"]):
        said = here(args)
        assert said.code == 0, said.output
    space: Any = make_space("dpc", {"input_size": 128, "input_width": 128, "branches": 2, "filters": 16, "num_classes": 6})
    dpc_table = random_table(space, 0)
    dpc_table.save(root / "dpc.json")
    torch.manual_seed(0)
    save_weights(space.backbone.build(), root / "chain.pt")
    budget = sorted(dpc_table.predict(space.sample_arch(random.Random(i))).best_ms for i in range(40))[30]
    ws = Workspace(root, table, root / "run", root / "export", arch, root / "w.pt", root / "dpc.json", root / "chain.pt",
                   round(budget, 4), root / "study")
    said = apart(ws.dpc(ws.study, 4), timeout=600)  # its own process: a journal's writer that has ended
    assert said.code == 0, said.output
    return ws


# -- 1. malformed files -----------------------------------------------------------------------
def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    doc = json.loads(path.read_text())
    doc = change(doc) or doc
    path.write_text(json.dumps(doc))


def set_in(keys: list[Any], value: Any) -> Callable[[Any], None]:
    def change(doc: Any) -> None:
        for key in keys[:-1]:
            doc = doc[key] if not callable(key) else key(doc)
        doc[keys[-1]] = value
    return change


def first_entry(doc: dict[str, Any]) -> dict[str, Any]:
    return next(iter(doc["entries"].values()))["stats"]


def malformed(ws: Workspace, row: Row) -> None:
    def refused(label: str, said: Said, usable: bool = False) -> None:
        if said.traceback:
            row.case(label, False, "tracebacks", said)
        elif said.code == 0 and not (usable and said.warned):
            row.case(label, False, "invalid values used or shown", said)
        else:
            row.case(label, said.one_line or (usable and said.code == 0), "other outcomes", said)

    tables = {"latency 'fast'": set_in([first_entry, "median_ms"], "fast"),
              "latency NaN": set_in([first_entry, "median_ms"], float("nan")),
              "latency -1": set_in([first_entry, "median_ms"], -1),
              "latency 1e308": set_in([first_entry, "median_ms"], 1e308),
              "runs 0": set_in([first_entry, "runs"], 0),
              "record raw_ms 'fast'": set_in(["validation", "records", 0, "raw_ms"], "fast"),
              "record measured_ms NaN": set_in(["validation", "records", 0, "measured_ms"], float("nan")),
              "calibration scale -1": set_in(["calibration", "scale"], -1),
              "no entries": set_in(["entries"], {}),
              "version 99": set_in(["version"], 99)}
    for label, change in tables.items():
        t = ws.copy(ws.table, "t.json")
        edit_json(t, change)
        refused(f"table {label}: lut show", here(["lut", "show", t]))
        refused(f"table {label}: arch info", here(["arch", "info", ws.arch, "--lut", t]))
    t = ws.copy(ws.table, "t.json")
    edit_json(t, set_in(["calibration", "offset_ms"], -1000.0))  # readable, but it must be said
    refused("table calibration offset -1000: lut show", here(["lut", "show", t]), usable=True)
    t.write_bytes(ws.table.read_bytes()[:5000])
    refused("table truncated: lut show", here(["lut", "show", t]))

    archs = {"out -1": set_in(["blocks", 0, "out"], -1), "stride '2'": set_in(["blocks", 0, "stride"], "2"),
             "head k9e9": set_in(["blocks", 0, "head"], "k9e9"), "tail 10^9": set_in(["tail"], 10**9),
             "input 0": set_in(["input_size"], 0), "classes NaN": set_in(["num_classes"], float("nan"))}
    for label, change in archs.items():
        a = ws.copy(ws.arch, "a.json")
        edit_json(a, change)
        refused(f"arch {label}: arch info", here(["arch", "info", a]))
        refused(f"arch {label}: export", here(["export", "--arch", a, "--out", ws.root / "copies" / "e"]))

    configs: dict[str, dict[str, Any]] = {
        "epochs -1": {"epochs": -1}, "w_lr NaN": {"w_lr": float("nan")}, "w_lr_min > w_lr": {"w_lr_min": 1.0},
               "batch 0": {"batch_size": 0}, "unknown field": {"colour": "red"}, "seed 'x'": {"seed": "x"}}
    for label, fields in configs.items():
        c = ws.root / "copies" / "c.json"
        c.write_text(json.dumps({**json.loads((ws.run / "config.json").read_text()), **fields}))
        refused(f"config {label}: search --config", here(["search", "--lut", ws.table, "--config", c, "--out",
                                                         ws.root / "copies" / "cr"]))

    def checkpoint(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
        def edit(run: Path) -> None:
            state = torch.load(run / "checkpoint.pt", weights_only=True)
            change(state)
            torch.save(state, run / "checkpoint.pt")
        return edit

    def momentum_nan(state: dict[str, Any]) -> None:
        buf = next(s for s in state["w_opt"]["state"].values() if "momentum_buffer" in s)
        buf["momentum_buffer"].fill_(float("nan"))

    def net_int64(state: dict[str, Any]) -> None:
        name = next(k for k, v in state["net"].items() if v.is_floating_point())
        state["net"][name] = state["net"][name].long()

    checkpoints = {"optimiser momentum NaN": checkpoint(momentum_nan), "a weight as int64": checkpoint(net_int64),
                   "epoch -1": checkpoint(lambda s: s.__setitem__("epoch", -1)),
                   "lambda NaN": checkpoint(lambda s: s.__setitem__("lambda", float("nan"))),
                   "no optimiser": checkpoint(lambda s: s.pop("w_opt")),
                   "truncated": lambda run: (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:999])}
    for label, edit in checkpoints.items():
        run = ws.copy(ws.run, "run")
        edit(run)
        refused(f"checkpoint {label}: search --resume", here(["search", "--lut", ws.table, *SEARCH[:2], "--epochs", "2",
                                                             "--out", run, "--resume"]))
        refused(f"checkpoint {label}: derive", here(["derive", run, "--out", ws.root / "copies" / "d.json", "--force"]))

    reports: dict[str, Callable[[Any], Any]] = {
        "unit 12": set_in(["summary", "unit"], 12), "passed 'yes'": set_in(["passed"], "yes"),
               "latency -1": lambda d: [e["timing"].__setitem__("median_ms", -1.0) for e in d["latency"].values()],
               "weights -3": set_in(["weights"], -3), "a check passed 'yes'": lambda d: [
                   c.__setitem__("passed", "yes") for c in d["accuracy"]["comparisons"]]}
    for label, change in reports.items():
        e = ws.copy(ws.export, "e")
        edit_json(e / "report.json", change)
        refused(f"export report {label}: report", here(["report", e]))

    logs = {"epoch 'x'": lambda text: text.replace('"epoch": 1', '"epoch": "x"', 1),
            "expected latency NaN": lambda text: text.replace('"expected_ms": ', '"expected_ms": NaN, "was": ', 1),
            "a line of garbage first": lambda text: "{{{\n" + text}
    for label, change in logs.items():
        run = ws.copy(ws.run, "run")
        (run / "log.jsonl").write_text(change((run / "log.jsonl").read_text()))
        refused(f"search log {label}: report", here(["report", run]))

    studies: dict[str, Callable[[Any], Any]] = {
        "score 7": lambda d: [r.__setitem__("score", 7) for r in d["trial_rows"]],
        "latency 'fast'": lambda d: [r.__setitem__("latency_ms", "fast") for r in d["trial_rows"]],
        "budget -1": set_in(["budget_ms"], -1)}
    for label, change in studies.items():
        s = ws.copy(ws.study, "s")
        edit_json(s / "study.json", change)
        refused(f"study.json {label}: report", here(["report", s]))

    caches = {"truncated": lambda c: _truncate(c / "train.features"), "swapped": lambda c: _swap(c),
              "features NaN": lambda c: _poke(c / "train.features", b"\xff\x7f" * 8),
              "labels 200": lambda c: _poke(c / "train.labels", bytes([200]) * 16),
              "count 1": lambda c: edit_json(c / "cache.json", set_in(["splits", "train", "count"], 1))}
    for label, damage in caches.items():
        s = ws.copy(ws.study, "s")
        damage(s / "cache")
        refused(f"feature cache {label}: search --space dpc", here(ws.dpc(s, 6)))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _swap(cache: Path) -> None:
    a, b = (cache / "train.features").read_bytes(), (cache / "val.features").read_bytes()
    (cache / "train.features").write_bytes((b * (len(a) // len(b) + 1))[:len(a)])


def _poke(path: Path, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(64)
        fh.write(data)


# -- 2. links ---------------------------------------------------------------------------------
def links(ws: Workspace, row: Row) -> None:
    outside = ws.root / "outside"
    outside.mkdir()
    victim = outside / "precious.txt"

    def attempt(label: str, link: Path, args: list[Any], hard: bool = False) -> None:
        victim.write_text("keep me")
        if link.exists() or link.is_symlink():
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        (os.link if hard else os.symlink)(victim, link)
        said = here(args)
        changed = victim.read_text() != "keep me"
        row.count("links planted")
        row.case(f"{'hard' if hard else 'symbolic'} link {label}", not changed, "writes outside", said)
        if said.code == 0 and not changed:
            row.count("accepted without writing through")
            row.notes.append(f"{label}: exit 0, the victim unchanged")
        link.unlink()

    for name in ("config.json", "log.jsonl", "checkpoint.pt", "arch.json", ".lock"):
        run = ws.copy(ws.run, "run")
        attempt(f"run/{name}", run / name, ["search", "--lut", ws.table, *SEARCH, "--out", run, "--force"])
    run = ws.copy(ws.run, "run")
    attempt("run/log.jsonl (resume)", run / "log.jsonl",
            ["search", "--lut", ws.table, *SEARCH[:2], "--epochs", "2", "--out", run, "--resume"], hard=True)
    for name in ("report.md", "curves.png", "beta.png"):
        attempt(f"run/{name} (report)", ws.copy(ws.run, "run") / name, ["report", ws.root / "copies" / "run"])
    for name in ("arch.json", "weights.pt", "model.onnx", "report.json", "report.md", "latency.png"):
        e = ws.copy(ws.export, "e")
        attempt(f"export/{name}", e / name, ["export", "--arch", ws.arch, "--data", "synthetic:40", "--samples", "4",
                                             "--out", e, "--force"])
    for name, hard in (("study.log", True), ("study.log", False), ("best.json", False), ("study.json", False),
                       ("rerank.jsonl", True), ("cache/train.features", False), ("cache/val.labels", False),
                       ("cache/train.features", True), ("cache/deeper/x", False)):
        s = ws.copy(ws.study, "s")
        attempt(f"study/{name}", s / name, ws.dpc(s, 6, "--rerank", 1, "--rerank-epochs", 1, "--force"), hard=hard)
    fresh = ws.root / "copies" / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    attempt("fresh/cache/val.labels (dangling)", fresh / "cache" / "val.labels", ws.dpc(fresh, 2))
    out = ws.root / "copies" / "derived.json"
    attempt("derive OUT", out, ["derive", ws.run, "--out", out, "--force"])
    attempt("train OUT", ws.root / "copies" / "w.pt", ["train", "--arch", ws.arch, "--data", "synthetic:64", "--epochs", "1",
                                                       "--out", ws.root / "copies" / "w.pt", "--force"])


# -- 3. a second process ----------------------------------------------------------------------
class Holder:
    """A real second process holding a lock as a first command holds it while it works."""

    def __init__(self, code: str):
        self.process = subprocess.Popen([sys.executable, "-c", f"{code}\nprint('held', flush=True)\nimport sys\nsys.stdin.read()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "held"

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def snapshot(path: Path) -> dict[str, bytes]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path] if path.exists() else []
    return {str(p): p.read_bytes() for p in files if p.name != ".lock"}


def second_process(ws: Workspace, row: Row) -> None:
    def held(label: str, output: Path, folder: bool, args: list[Any]) -> None:
        lock = (f"from nas2deploy.fileio import folder_lock\nh = folder_lock({str(output)!r}, 'a first command')\n"
                if folder else f"from nas2deploy.fileio import exclusive, lock_path\nh = exclusive(lock_path({str(output)!r}), "
                "'a first command')\n")
        holder = Holder(lock + "h.__enter__()")
        before = snapshot(output)
        said = here(args)
        holder.close()
        row.case(label, said.one_line and f"pid {holder.process.pid}" in said.output, "not refused", said)
        row.case(label + " (the first's files)", snapshot(output) == before, "outputs of the first changed")

    search = ["search", "--lut", ws.table, *SEARCH]
    for how in ([], ["--force"], ["--resume"]):
        run = ws.copy(ws.run, "run")
        held(f"search {' '.join(how) or 'again'} into a run being written", run, True, [*search, "--out", run, *how])
    fresh = ws.root / "copies" / "new-run"
    held("search into a run being started", fresh, True, [*search, "--out", fresh])
    e = ws.copy(ws.export, "e")
    held("export --force into an export being written", e, True,
         ["export", "--arch", ws.arch, "--data", "synthetic:40", "--samples", "4", "--out", e, "--force"])
    w = ws.copy(ws.weights, "w.pt")
    held("train --force onto weights being written", w, False,
         ["train", "--arch", ws.arch, "--data", "synthetic:64", "--epochs", "1", "--out", w, "--force"])
    d = ws.root / "copies" / "d.json"
    here(["derive", ws.run, "--out", d, "--force"])
    held("derive --force onto an architecture being written", d, False, ["derive", ws.run, "--out", d, "--force"])
    s = ws.copy(ws.study, "s")
    held("a study --force into a study being written", s, True, ws.dpc(s, 6, "--force"))

    for label, make in (("two searches started together", lambda out, seed: [
                            "search", "--lut", ws.table, "--data", "synthetic:200", "--epochs", "2", "--warmup-epochs", "0",
                            "--batch-size", "16", "--seed", seed, "--out", out]),
                        ("two exports started together", lambda out, seed: [
                            "export", "--arch", ws.arch, "--data", "synthetic:40", "--samples", "4", "--out", out])):
        out = ws.root / "copies" / label.replace(" ", "-")
        first = subprocess.Popen([sys.executable, "-m", "nas2deploy", *map(str, make(out, 1))], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=ENV)
        deadline = time.time() + 60
        while time.time() < deadline and not (out / ".lock").exists():
            time.sleep(0.005)
        second = apart(make(out, 2) + ["--force"], timeout=120)
        _, err = first.communicate(timeout=600)
        row.case(label, second.one_line and f"pid {first.pid}" in second.output, "not refused", second)
        row.case(label + " (the first finished)", first.returncode == 0, "outputs of the first changed",
                 Said(first.returncode, err))


# -- 4. torn and poisoned studies --------------------------------------------------------------
def studies(ws: Workspace, row: Row) -> None:
    def continued(label: str, s: Path, damage: Callable[[Path], Any], trials: int = 6, storage: list[Any] | None = None,
                  poisoned: int | None = None) -> None:
        damage(s)
        said = here(ws.dpc(s, trials, *(storage or [])))
        if said.traceback:
            row.case(label, False, "tracebacks", said)
            return
        if said.code != 0:
            row.case(label, said.one_line, "other outcomes", said)
            row.count("refused in one line")
            return
        summary = json.loads((s / "study.json").read_text())
        reached = summary["complete"] + summary["pruned"]
        row.case(label, reached >= trials, "trials lost", said)
        if reached < trials:
            row.count("trials lost", trials - reached - 1)
        if poisoned is not None:
            best = summary.get("best", {}).get("trial")
            row.case(label + " (best)", best != poisoned and said.warned, "poisoned trials chosen or unsaid", said)

    def journal_lines(s: Path) -> list[str]:
        return (s / "study.log").read_text().splitlines(keepends=True)

    def poison_value(value: str) -> Callable[[Path], None]:
        def damage(s: Path) -> None:
            lines = journal_lines(s)
            i = next(i for i, ln in enumerate(lines) if '"op_code":6' in ln and '"values":[' in ln)
            head, _, tail = lines[i].partition('"values":[')
            lines[i] = head + '"values":[' + value + tail[tail.index("]"):]
            (s / "study.log").write_text("".join(lines))
        return damage

    def first_completed(s: Path) -> int:
        return next(json.loads(ln)["trial_id"] for ln in journal_lines(s) if '"op_code":6' in ln and '"values":[' in ln)

    continued("journal cut mid-line", ws.copy(ws.study, "s"),
              lambda s: (s / "study.log").write_text("".join(journal_lines(s))[:-40]))
    for value in ("NaN", "Infinity", "1e308", "-5"):
        s = ws.copy(ws.study, "s")
        continued(f"trial value {value}", s, poison_value(value), poisoned=first_completed(s))
    s = ws.copy(ws.study, "s")
    continued("a trial without its latency", s, lambda s: (s / "study.log").write_text(
        "".join(ln for ln in journal_lines(s) if "latency_ms" not in ln or '"trial_id":0,' not in ln)))
    db = ws.root / "copies" / "db"
    shutil.rmtree(db, ignore_errors=True)
    db.mkdir(parents=True)
    url = f"sqlite:///{db / 'study.db'}"
    assert here(ws.dpc(db / "s", 4, "--storage", url)).code == 0

    def text_value(_: Path) -> None:
        with sqlite3.connect(db / "study.db") as con:
            con.execute("UPDATE trial_values SET value = 'abc' WHERE trial_value_id = (SELECT MIN(trial_value_id) FROM "
                        "trial_values)")

    continued("a SQLite value stored as text", db / "s", text_value, storage=["--storage", url])

    def dropped(_: Path) -> None:
        with sqlite3.connect(db / "study.db") as con:
            con.execute("DROP TABLE trial_values")

    continued("a dropped table", db / "s", dropped, trials=8, storage=["--storage", url])
    killed = ws.root / "copies" / "killed"
    shutil.rmtree(killed, ignore_errors=True)
    worker = subprocess.Popen([sys.executable, "-m", "nas2deploy", *map(str, ws.dpc(killed, 8))], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and sum('"op_code":4' in ln for ln in _lines(killed / "study.log")) < 3:
        time.sleep(0.01)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    continued("a worker killed mid-trial", killed, lambda s: None, trials=8)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return []


# -- 5. the machine's limits -------------------------------------------------------------------
def limits(ws: Workspace, row: Row) -> None:
    def judged(label: str, said: Said, names: str) -> None:
        if said.hung:
            row.case(label, False, "hangs")
        elif said.code >= 128:
            row.case(label, False, "deaths by a signal", said)
        else:
            row.case(label, said.one_line and names in said.output, "failures that do not name the file and limit", said)

    small = ws.root / "full"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(small)], capture_output=True).returncode == 0
    try:
        if mounted:
            judged("a DPC cache on a full disk", apart(ws.dpc(small / "s", 2)), "no space left")
            wide = ws.root / "wide.json"  # 0.4 MB of weights, 0.4 MB of ONNX: more than the disk holds
            wide.write_text(json.dumps({**ARCH, "tail": 10000}))
            judged("an export on a full disk", apart(["export", "--arch", wide, "--data", "synthetic:40", "--samples", 4,
                                                      "--out", small / "e"]), "no space left")
            judged("train onto a full disk", apart(["train", "--arch", wide, "--data", "synthetic:64", "--epochs", 1,
                                                    "--out", small / "w.pt"], timeout=20), "no space left")
        else:
            print("full disk: skipped (mounting a tmpfs needs root)")
    finally:
        if mounted:
            subprocess.run(["umount", str(small)])
    dev = ws.root / "dev.json"
    dev.symlink_to("/dev/zero")
    fifo = ws.root / "fifo.json"
    os.mkfifo(fifo)
    for label, args, names in (("lut show /dev/zero", ["lut", "show", "/dev/zero"], "/dev/zero"),
                               ("arch info /dev/zero", ["arch", "info", "/dev/zero"], "/dev/zero"),
                               ("search --config a .json link to a device", ["search", "--lut", ws.table, "--config", dev,
                                                                            "--out", ws.root / "copies" / "x"], "dev.json"),
                               ("lut show a FIFO", ["lut", "show", fifo], "fifo.json"),
                               ("export --weights a FIFO", ["export", "--arch", ws.arch, "--weights", fifo, "--data",
                                                            "synthetic:40", "--samples", 4, "--out", ws.root / "copies" / "x"],
                                "fifo.json")):
        judged(label, apart(args), names)
    long = "n" * 250
    for label, args in (("derive --out a 250-byte name", ["derive", ws.run, "--out", ws.root / "copies" / f"{long}.json"]),
                        ("train --out a 250-byte name", ["train", "--arch", ws.arch, "--data", "synthetic:64", "--out",
                                                         ws.root / "copies" / f"{long}.pt"]),
                        ("profile --out a 250-byte name", ["profile", "--input-size", "32", "--out",
                                                           ws.root / "copies" / f"{long}.json"])):
        judged(label, apart(args), "bytes")
    from test_file_limits import runaway_model

    model = runaway_model(ws.root / "loop.onnx")
    judged("bench a Loop of 10^12 iterations", apart(["bench", model, "--ort-run-limit-s", "5"]), "longer than 5 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="every case that did not hold")
    args = parser.parse_args()
    rows = [Row("malformed files through the CLI"), Row("links (symbolic and hard) at every output and under it"),
            Row("a second process at every step"), Row("torn / poisoned study journals and databases, killed workers"),
            Row("full disk, devices, FIFOs, long names, runaway ONNX")]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ws = workspace(Path(tmp))
        for row, group in zip(rows, (malformed, links, second_process, studies, limits)):
            t = time.perf_counter()
            group(ws, row)
            print(f"  {row.name}: {row.cases} cases, {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print("\n| test | cases | failures | other counts |\n|---|---|---|---|")
    for row in rows:
        bad = {k: v for k, v in row.counts.items() if row.failures and any(k in f for f in row.failures)}
        other = {k: v for k, v in row.counts.items() if k not in bad}
        print(f"| {row.name} | {row.cases} | {', '.join(f'{v} {k}' for k, v in bad.items()) or '0'} | "
              f"{', '.join(f'{v} {k}' for k, v in other.items()) or '-'} |")
    print(f"\n{sum(r.cases for r in rows)} cases in {time.perf_counter() - start:.0f} s")
    if args.verbose:
        for row in rows:
            for line in row.failures + row.notes:
                print(f"{row.name}: {line}")


if __name__ == "__main__":
    main()
