"""Which network a study delivers: its best networks re-ranked by end-to-end training, then the
first of them that measures within the budget on the table's device.

**Re-ranking** (``rerank``): a cheap score ranks networks approximately (DPC's proxy trains a
cell on a frozen backbone's features for a few epochs); the DPC paper re-ranked its top 50 cells
by training each network end to end and kept the best. Here the top ``k`` distinct networks by
score are each trained end to end by the space's evaluator (``Evaluator.train_end_to_end``) with
the trial's number as the seed. Each finished training is one line of ``OUT/rerank.jsonl``, keyed
by the trial, the epochs, the evaluator's identity and recipe, so a killed re-ranking resumes at
the network it was training and a stale line (other weights, data or epochs) is never reused.

**Closed loop** (``measured_pick``): a table's prediction of a whole network misses by a few
percent, so a network predicted just within the budget can measure over it. The candidates, best
first, are measured whole on the table's backend until one fits; the ones over the budget are
reported with their measurement.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nas2deploy.fileio import append_line, exclusive
from nas2deploy.nets import Network
from nas2deploy.search.blackbox.space import Evaluator


@dataclass(frozen=True)
class Candidate:
    """A scored network of the study: its trial, the network, its score and predicted latency."""

    trial: int
    net: Network
    score: float
    latency_ms: float


@dataclass(frozen=True)
class Reranked:
    trial: int
    study_score: float  # the score the study ranked it by (proxy mIoU, inherited top-1, ...)
    score: float  # trained end to end
    latency_ms: float
    seconds: float


def rerank_key(evaluator: Evaluator, trial: int, epochs: int) -> dict[str, Any]:
    return {**evaluator.identity, "trial": trial, "epochs": epochs, **evaluator.rerank_recipe}


def read_reranked(path: Path) -> dict[str, dict[str, Any]]:
    """The journal's finished trainings by their key; a line cut short by a kill, or one whose
    numbers are not a score, is skipped (that network is trained again)."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            doc = json.loads(line)
            score, seconds = float(doc["score"] if "score" in doc else doc["miou"]), float(doc["seconds"])  # "miou": older journals
            key = json.dumps(doc["key"], sort_keys=True)
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
        if 0 <= score <= 1 and math.isfinite(seconds) and seconds >= 0:
            found[key] = {"score": score, "seconds": seconds}
    return found


def rerank(candidates: Sequence[Candidate], evaluator: Evaluator, epochs: int, journal: Path,
           say: Callable[[str], None] | None = None) -> list[Reranked]:
    """Train each candidate end to end for ``epochs`` (journaled in ``journal``); best first."""
    with exclusive(journal.with_name(journal.name + ".lock"), f"the re-ranking in {journal.parent}"):
        done = read_reranked(journal)
        ranked = []
        for n, c in enumerate(candidates, 1):
            key = rerank_key(evaluator, c.trial, epochs)
            found = done.get(json.dumps(key, sort_keys=True))
            if found is None:
                start = time.perf_counter()
                score = evaluator.train_end_to_end(c.net, epochs, seed=c.trial)
                found = {"score": float(score), "seconds": round(time.perf_counter() - start, 2)}
                append_line(journal, json.dumps({"key": key, **found}))
            ranked.append(Reranked(c.trial, c.score, found["score"], c.latency_ms, found["seconds"]))
            if say:
                say(f"re-ranked {n}/{len(candidates)}: trial {c.trial}, study score {c.score:.4f}, "
                    f"end to end {found['score']:.4f} ({epochs} epochs)")
    return sorted(ranked, key=lambda r: (-r.score, r.trial))


@dataclass(frozen=True)
class Measured:
    trial: int
    measured_ms: float
    fits: bool


def measured_pick(candidates: Sequence[Candidate], budget_ms: float, measure: Callable[[Network], float],
                  say: Callable[[str], None] | None = None) -> tuple[Candidate | None, list[Measured]]:
    """The first candidate (best first) whose network measures within ``budget_ms`` (None when
    none does), and every measurement taken."""
    taken = []
    for c in candidates:
        ms = measure(c.net)
        taken.append(Measured(c.trial, ms, ms <= budget_ms))
        if say:
            say(f"measured trial {c.trial}: {ms:.4g} ms (predicted {c.latency_ms:.4g}, budget {budget_ms:.4g})")
        if ms <= budget_ms:
            return c, taken
    return None, taken


def as_dicts(items: Sequence[Reranked | Measured]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]
