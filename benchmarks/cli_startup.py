"""How long the command line takes to answer before any work: help, a space's search options, and
usage errors (an unknown space, an option of another space). Each command runs in a fresh
process, as a user types it; the median and the range of ``--repeats`` runs are printed. The
registries the options come from import no torch, so none of these should load it.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["--version"], ["search", "--help"], ["search", "--space", "dcnas", "--help"],
            ["search", "--space", "dpc", "--help"], ["export", "--help"],
            ["search", "--space", "nope", "--lut", "t.json", "--out", "r"],
            ["search", "--trials", "3", "--lut", "t.json", "--out", "r"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    program = shutil.which("nas2deploy") or shutil.which("nas2deploy", path=str(sys.prefix) + "/bin")
    launcher = [program] if program else [sys.executable, "-m", "nas2deploy"]
    for command in COMMANDS:
        walls = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([*launcher, *command], capture_output=True)
            assert done.returncode in (0, 2), done.stderr  # help, or a usage error
            walls.append(time.perf_counter() - start)
        print(f"nas2deploy {' '.join(command):<52} median {statistics.median(walls):.3f} s "
              f"(min {min(walls):.3f}, max {max(walls):.3f}, {args.repeats} runs)")


if __name__ == "__main__":
    main()
