"""Outputs under attack: links planted at every output, and two profilers on one table.

1. Planted links: for each output of ``profile``, ``search``, ``export`` and ``report`` (both a
   search run and an export folder), a symbolic link to a file outside the folder the user named
   is planted where the output goes, and the command is run (in this process, through the CLI).
   Counted: links planted, commands that refused with one error line naming the link, files
   outside the folder that changed (target: 0). ``-v`` prints every other outcome.
2. Concurrent profiles: a first ``profile`` runs in a subprocess; once its journal exists a
   second process calls ``profile_space`` on the same ``--out``. Measured: the second call's time
   from entry to refusal (target: under a second), the second process's whole wall time (Python
   and torch start-up included), and whether the first finished with its complete table on disk.

    .venv/bin/python benchmarks/hostile_outputs.py
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from click.testing import CliRunner  # noqa: E402

from nas2deploy.cli import cli  # noqa: E402
from nas2deploy.latency.profile import journal_path, lock_path  # noqa: E402
from nas2deploy.latency.table import LatencyTable  # noqa: E402
from nas2deploy.search.run_folder import RUN_FILES  # noqa: E402

VERBOSE = "-v" in sys.argv
TABLE = str(Path(__file__).resolve().parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json")
SPACE = ["--input-size", "32", "--width-mult", "0.5", "--num-classes", "10", "--max-stack-layers", "1"]
ARCH = {"format": "nas2deploy.arch", "version": 1, "input_size": 32, "num_classes": 10,
        "stem": {"conv": 8, "out": 8, "stride": 1}, "blocks": [{"out": 16, "stride": 2, "head": "k3e3"}], "tail": 32}


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def planted_links(tmp: Path) -> dict[str, int]:
    outside = tmp / "outside"
    outside.mkdir()
    for i in range(3):
        (outside / f"precious{i}.txt").write_text(f"keep me {i}")
    before = digest(outside)
    runner = CliRunner()
    counts = {"planted": 0, "refused in one line": 0, "other outcome": 0}

    def attempt(link: Path, args: list[str], prepare: list[str] | None = None) -> None:
        if prepare:
            runner.invoke(cli, prepare)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(outside / "precious0.txt", link)
        counts["planted"] += 1
        result = runner.invoke(cli, args)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        one_line = result.exit_code == 1 and len(errors) == 1 and "is a symbolic link" in errors[0]
        counts["refused in one line" if one_line else "other outcome"] += 1
        if not one_line and VERBOSE:
            print(link.name, args[0], result.exit_code, result.output[-300:])

    out = tmp / "p" / "t.json"
    profile = ["profile", *SPACE, "--runs", "5", "--shard", "0/60", "--out", str(out)]
    for link in (out, journal_path(out), lock_path(out)):
        attempt(link, profile)
        link.unlink()
    search = ["search", "--lut", TABLE, "--data", "synthetic:100", "--epochs", "1", "--warmup-epochs", "1", "--batch-size", "16",
              "--max-batches", "1"]
    for i, name in enumerate(RUN_FILES):
        attempt(tmp / f"s{i}" / name, [*search, "--out", str(tmp / f"s{i}")])
    run = tmp / "run"
    runner.invoke(cli, [*search, "--out", str(run)])
    for name in ("report.md", "curves.png", "alpha_head.png", "alpha_stack.png", "beta.png", "lut_head.png"):
        attempt(run / name, ["report", str(run)])
        (run / name).unlink()
    arch = tmp / "a.json"
    arch.write_text(json.dumps(ARCH))
    export = ["export", "--arch", str(arch), "--data", "synthetic:40", "--samples", "4", "--out", str(tmp / "e"), "--force"]
    runner.invoke(cli, export)
    for name in ("arch.json", "weights.pt", "model.onnx", "report.json", "report.md", "latency.png", "blocks.png", "arch.png"):
        attempt(tmp / "e" / name, export)
        if name in ("report.md", "latency.png", "blocks.png", "arch.png"):
            attempt(tmp / "e" / name, ["report", str(tmp / "e")])
        (tmp / "e" / name).unlink()
        runner.invoke(cli, export)
    counts["files outside changed"] = int(digest(outside) != before)
    return counts


SECOND = """
import sys, time
from nas2deploy.backends import BackendSettings
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import profile_space
from nas2deploy.spaces import make_space
space = make_space("densenas", {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1})
start = time.perf_counter()
try:
    profile_space(space, BackendSettings(), sys.argv[1], shard=(0, 12))
    print("not refused")
except UserError as exc:
    print(f"{time.perf_counter() - start:.4f}|{exc}")
"""


def concurrent_profiles(tmp: Path) -> dict[str, object]:
    out = tmp / "c" / "t.json"
    cmd = [sys.executable, "-m", "nas2deploy", "profile", *SPACE, "--runs", "20", "--shard", "0/12", "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not journal_path(out).exists():
        time.sleep(0.01)
    start = time.perf_counter()
    second = subprocess.run([sys.executable, "-c", SECOND, str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    refusal_s, _, message = second.stdout.strip().partition("|")
    stdout, _ = first.communicate()
    table = LatencyTable.load(out)
    return {"second refused after (s, in the call)": float(refusal_s) if message else None,
            "second process wall (s, start-up included)": round(wall, 2), "message": message,
            "first exit code": first.returncode, "table entries": len(table.entries),
            "first reported": stdout.strip().splitlines()[-1] if stdout.strip() else "",
            "journal and lock left": journal_path(out).exists() or lock_path(out).exists()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        links = planted_links(Path(tmp))
        print("planted links:", ", ".join(f"{k} {v}" for k, v in links.items()), f"({time.perf_counter() - start:.0f} s)")
        for key, value in concurrent_profiles(Path(tmp)).items():
            print(f"concurrent profiles: {key}: {value}")


if __name__ == "__main__":
    main()
