"""The documented command sequence as a new user types it, in a fresh folder:
both demos back to back, then the chain by hand on a small space: profile, lut show / validate,
search, derive, train, export, bench, report; each command in its own process with ``--json``
where it has a result. Checked: every exit status, that every result parses as one JSON object
on stdout, and that nothing lands outside the folders the commands were given (the working
folder is listed before and after; the source tree must not change).

Both demos take most of the time (about 8 minutes on the 2-core machine).

    .venv/bin/python benchmarks/walkthrough.py [--keep DIR] [--skip-demos]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--input-size", "32", "--width-mult", "0.5", "--num-classes", "10", "--max-stack-layers", "0"]


def steps(skip_demos: bool) -> list[tuple[list[str], bool]]:
    """(arguments, whether the command prints a JSON result with --json) in the documented order."""
    demos = [] if skip_demos else [(["demo", "--json"], True), (["demo", "--task", "segmentation", "--json"], True),
                                   (["bench", "export/demo/classification/model.onnx", "--json"], True)]
    return [
        (["--help"], False),
        (["space", "info", "densenas", "--json"], True),
        (["arch", "list", "--json"], True),
        (["arch", "info", "densenas-a", "--json"], True),
        *demos,
        (["profile", *SMALL, "--runs", "20", "--out", "tables/small.json", "--json"], True),
        (["lut", "show", "tables/small.json", "--json"], True),
        (["lut", "validate", "tables/small.json", "--samples", "10", "--json"], True),
        (["search", "--lut", "tables/small.json", *SMALL[-2:], "--epochs", "3", "--warmup-epochs", "1", "--batch-size", "32",
          "--max-batches", "4", "--a-lr", "0.03", "--w-lr", "0.05", "--out", "runs/small", "--json"], True),
        (["derive", "runs/small", "--out", "runs/small/fast.json", "--json"], True),
        (["train", "--arch", "runs/small/fast.json", "--data", "synthetic:400", "--epochs", "1", "--out", "runs/small/fast.pt",
          "--json"], True),
        (["export", "--arch", "runs/small/fast.json", "--weights", "runs/small/fast.pt", "--samples", "20", "--out", "export/fast",
          "--json"], True),
        (["bench", "export/fast/model.onnx", "--json"], True),
        (["report", "export/fast", "--json"], True),
        (["report", "runs/small", "--json"], True),
    ]


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def source_state() -> str:
    """The source tree's tracked and untracked files as git sees them (ignored outputs excluded)."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="run in this (new) folder and keep it; default: a temporary folder, removed")
    ap.add_argument("--skip-demos", action="store_true")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="walkthrough."))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before, source = tree(work), source_state()
    failures = []
    start = time.time()
    for argv, has_json in steps(args.skip_demos):
        t = time.time()
        done = subprocess.run([sys.executable, "-m", "nas2deploy", *argv], cwd=work, env=env, capture_output=True, text=True)
        verdict = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        if done.returncode == 0 and has_json:
            try:
                json.loads(done.stdout)
            except json.JSONDecodeError:
                verdict = "stdout is not one JSON object"
        if verdict != "ok":
            failures.append(f"nas2deploy {' '.join(argv)}: {verdict}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        print(f"{verdict:>6}  {time.time() - t:6.1f} s  nas2deploy {' '.join(argv)}", flush=True)
    named = ("runs/", "export/", "tables/")
    stray = sorted(p for p in tree(work) - before if not p.startswith(named))
    if stray:
        failures.append(f"written outside {', '.join(named)}: {stray[:10]}")
    if source_state() != source:
        failures.append("the source tree changed")
    print(f"{len(steps(args.skip_demos))} commands in {time.time() - start:.0f} s; {len(tree(work) - before)} files written, "
          f"{len(stray)} outside the named folders; source tree {'unchanged' if source_state() == source else 'CHANGED'}")
    for line in failures:
        print("FAILED " + line)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
