"""Threads on a busy machine: one training epoch, a short search and the classification demo
(what ``make demo`` runs), each with the default threads (the cores free as the command starts,
``nas2deploy.threads``), with 1 and with every core, on a quiet machine and beside a CPU-bound
process per core but one (the loaded case). The demo is not run on every core under load: the
search epoch's row shows that case costs several times the quiet time, and the demo would take
most of an hour.

Each command runs through the CLI in a process of its own, ``OMP_NUM_THREADS`` unset; printed:
its wall time and the threads it chose. Run it on an otherwise idle machine: the "quiet" rows
assume nothing else runs.

    .venv/bin/python benchmarks/threads.py [--repeats 1] [--commands train,search,demo]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas2deploy.backends.base import available_cores  # noqa: E402

TABLE = ROOT / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"


def spin() -> None:
    """A CPU-bound process: the load of a busy machine."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


def timed(args: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nas2deploy", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    chose = re.search(r"computing on (\d+) CPU thread", done.stderr)
    return wall, chose.group(1) if chose else "?"


def fresh(command: list[str], tmp: str) -> list[str]:
    """New output folders for a demo, which would otherwise reuse what an earlier run left."""
    if command[0] != "demo":
        return []
    folder = tempfile.mkdtemp(dir=tmp)
    return ["--out", str(Path(folder) / "run"), "--export-dir", str(Path(folder) / "export")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--commands", default="train,search,demo", help="Which rows to measure.")
    args = parser.parse_args()
    wanted = set(args.commands.split(","))
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        arch = Path(tmp) / "a.json"
        arch.write_text('{"format": "nas2deploy.arch", "version": 1, "input_size": 32, "num_classes": 10, '
                        '"stem": {"conv": 16, "out": 16, "stride": 1}, "blocks": [{"out": 24, "stride": 2, "head": "k3e6"}, '
                        '{"out": 40, "stride": 2, "head": "k5e6"}, {"out": 80, "stride": 2, "head": "k3e6"}], "tail": 256}')
        jobs = {"train, 1 epoch of synthetic:1024": ["train", "--arch", str(arch), "--data", "synthetic:1024", "--epochs", "1",
                                                     "--out", str(Path(tmp) / "w.pt"), "--force"],
                "search, 1 epoch of 8 batches": ["search", "--lut", str(TABLE), "--data", "synthetic:400", "--epochs", "1",
                                                 "--warmup-epochs", "0", "--batch-size", "32", "--max-batches", "8",
                                                 "--out", str(Path(tmp) / "run"), "--force"],
                "demo (classification)": ["demo"]}  # each run in fresh folders (``fresh``): a demo reuses its own
        jobs = {name: command for name, command in jobs.items() if name.split(",")[0].split(" ")[0] in wanted}
        print(f"{cores} cores; wall seconds (threads chosen)\n")
        print("| command | machine | default | 1 thread | " + f"{cores} threads |\n|---|---|---|---|---|")
        for loaded in (False, True):
            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(max(1, cores - 1))] if loaded else []
            for p in spinners:
                p.start()
            time.sleep(1.0 if loaded else 0.0)  # the load is there as the commands start
            try:
                for name, command in jobs.items():
                    cells = []
                    for threads in ("0", "1", str(cores)):
                        if loaded and threads == str(cores) and command[0] == "demo":
                            cells.append("not run")
                            continue
                        runs = [timed([*command, *fresh(command, tmp), "--threads", threads]) for _ in range(args.repeats)]
                        best = min(runs)
                        cells.append(f"{best[0]:.1f} s ({best[1]})")
                    print(f"| {name} | {'loaded' if loaded else 'quiet'} | " + " | ".join(cells) + " |", flush=True)
            finally:
                for p in spinners:
                    p.terminate()


if __name__ == "__main__":
    main()
