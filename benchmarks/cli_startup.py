"""How long the command line takes to answer before any work (issue 16: ``nas2deploy --help``
under 0.3 s, median of 5). Each command runs in a fresh process, as a user types it; the median
and the range of ``--repeats`` runs are printed. ``search --help`` imports the search spaces and
torch (a command's own help needs its options), so it shows what the lazy root group saves.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["--version"], ["search", "--help"])


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
            subprocess.run([*launcher, *command], check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        print(f"nas2deploy {' '.join(command):<14} median {statistics.median(walls):.3f} s "
              f"(min {min(walls):.3f}, max {max(walls):.3f}, {args.repeats} runs)")


if __name__ == "__main__":
    main()
