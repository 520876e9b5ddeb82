"""Feed mutated input files to what the commands run, and count the outcomes.

For each of the six kinds of file a user hands nas2deploy (latency tables, architectures,
segmentation architectures, trained weights, exported ONNX models, search configurations),
mutated copies of one valid file (``tests/support/mutations.py``: wrong types, NaN, infinity,
negative, zero, out-of-bound values, deletions, deep nesting, truncation, flipped bits, edited
ONNX interfaces; and benign edits) go through the functions the commands use. Every outcome must
be an accepted valid object or a one-line refusal; *traceback* (any other exception) and
*invalid accepted* (a mutation the oracle says must be refused, accepted) are failures.

    .venv/bin/python benchmarks/fuzz_inputs.py [--count 1020] [--seed 0] [--show 5]

Prints a table of counts by kind and outcome, and the first few failures of each kind.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the mutators the fuzz test uses

from support.mutations import KINDS, Corpus, mutate, outcome  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1020, help="mutated files in all, spread over the six kinds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=5, help="failures to print per kind")
    args = parser.parse_args()
    start = time.perf_counter()
    counts: dict[str, collections.Counter[str]] = {k: collections.Counter() for k in KINDS}
    failures: dict[str, list[str]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Corpus(Path(tmp) / "corpus")
        rng = random.Random(args.seed)
        for i in range(args.count):
            kind = KINDS[i % len(KINDS)]
            mutant = mutate(kind, corpus, Path(tmp) / f"m{i}", rng)
            result, message = outcome(mutant, corpus)
            counts[kind][result] += 1
            counts[kind]["must be refused" if mutant.must_refuse else "benign"] += 1
            if result == "accepted" and mutant.must_refuse:
                counts[kind]["INVALID ACCEPTED"] += 1
                failures[kind].append(f"invalid accepted: {mutant.what}")
            elif result == "refused" and not mutant.must_refuse:
                counts[kind]["benign refused"] += 1
                failures[kind].append(f"benign refused: {mutant.what}: {message}")
            elif result in ("traceback", "multi-line refusal"):
                failures[kind].append(f"{result}: {mutant.what}: {message}")
    columns = ["must be refused", "benign", "refused", "accepted", "traceback", "multi-line refusal", "INVALID ACCEPTED",
               "benign refused"]
    print(f"{args.count} mutated files, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    print(f"{'kind':<9}" + "".join(f"{c:>20}" for c in columns))
    total: collections.Counter[str] = collections.Counter()
    for kind in KINDS:
        total.update(counts[kind])
        print(f"{kind:<9}" + "".join(f"{counts[kind][c]:>20}" for c in columns))
    print(f"{'all':<9}" + "".join(f"{total[c]:>20}" for c in columns))
    refused = total["refused"] + total["multi-line refusal"]
    print(f"tracebacks {total['traceback']}, invalid values accepted {total['INVALID ACCEPTED']}, "
          f"refusals on one line {total['refused']} of {refused}")
    for kind in KINDS:
        for line in failures[kind][: args.show]:
            print(f"  {kind}: {line}")


if __name__ == "__main__":
    main()
