"""Which cell a DPC study delivers: its best cells re-ranked by end-to-end training, then the
first of them that measures within the budget on the table's device (issue 15, item 5).

**Re-ranking** (``rerank``): the proxy ranks cells on a frozen backbone's features for a few
epochs; the paper re-ranked its top 50 cells by training each network end to end and kept the
best. Here the top ``k`` distinct cells by proxy score are each trained end to end, the backbone
starting from the study's weights (the pretrained backbone the features came from) and the cell
from scratch, and scored on the same split the proxy scored (the data's test split, the study's
validation). Choices, documented: batch 8 and learning rate 0.02 as the proxy's (a pretrained
backbone is fine-tuned, not trained from scratch at the 0.05 of ``train``), the trial's number
as the seed. Each finished training is one line of ``OUT/rerank.jsonl``, keyed by the trial,
the epochs and what the cache was computed from, so a killed re-ranking resumes at the cell it
was training and a stale line (other weights, data or epochs) is never reused.

**Closed loop** (``measured_pick``): a table's prediction of a whole network misses by a few
percent (``benchmarks/dpc_latency.py``), so a cell predicted just within the budget can measure
over it. The candidates, best first, are measured whole on the table's backend until one fits;
the ones over the budget are reported with their measurement.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nas2deploy.data import Splits
from nas2deploy.errors import UserError
from nas2deploy.fileio import append_line, exclusive
from nas2deploy.nets.dpc import DPCModule, DPCNet
from nas2deploy.spaces.dpc.proxy import FeatureCache, load_backbone
from nas2deploy.train import train_arch

#: Fine-tuning a cell on its pretrained backbone: the proxy's batch and learning rate.
RERANK_BATCH, RERANK_LR = 8, 0.02


@dataclass(frozen=True)
class Candidate:
    """A trained cell of the study: its trial, network, proxy score and predicted latency."""

    trial: int
    net: DPCNet
    proxy_miou: float
    latency_ms: float


@dataclass(frozen=True)
class Reranked:
    trial: int
    proxy_miou: float
    miou: float  # end to end
    latency_ms: float
    seconds: float


def pretrained(net: DPCNet, weights: str | Path) -> DPCModule:
    """``net`` built with its backbone's weights from ``weights`` (the cell and head fresh)."""
    model = DPCModule(net, affine=True)
    load_backbone(model.backbone, net, weights)
    return model


def rerank_key(cache: FeatureCache, trial: int, epochs: int) -> dict[str, Any]:
    return {"cache": cache.origin, "trial": trial, "epochs": epochs, "batch": RERANK_BATCH, "lr": RERANK_LR}


def read_reranked(path: Path) -> dict[str, dict[str, Any]]:
    """The journal's finished trainings by their key; a line cut short by a kill, or one whose
    numbers are not a score, is skipped (that cell is trained again)."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            doc = json.loads(line)
            miou, seconds = float(doc["miou"]), float(doc["seconds"])
            key = json.dumps(doc["key"], sort_keys=True)
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
        if 0 <= miou <= 1 and math.isfinite(seconds) and seconds >= 0:
            found[key] = {"miou": miou, "seconds": seconds}
    return found


def rerank(candidates: Sequence[Candidate], weights: str | Path, data: Splits, cache: FeatureCache, epochs: int,
           journal: Path, say: Callable[[str], None] | None = None) -> list[Reranked]:
    """Train each candidate end to end for ``epochs`` (journaled in ``journal``); best first."""
    with exclusive(journal.with_name(journal.name + ".lock"), f"the re-ranking in {journal.parent}"):
        done = read_reranked(journal)
        ranked = []
        for n, c in enumerate(candidates, 1):
            key = rerank_key(cache, c.trial, epochs)
            found = done.get(json.dumps(key, sort_keys=True))
            if found is None:
                model = pretrained(c.net, weights)
                start = time.perf_counter()
                _, miou = train_arch(c.net, data, epochs, RERANK_BATCH, RERANK_LR, seed=c.trial, initial=model)
                found = {"miou": float(miou), "seconds": round(time.perf_counter() - start, 2)}
                append_line(journal, json.dumps({"key": key, **found}))
            ranked.append(Reranked(c.trial, c.proxy_miou, found["miou"], c.latency_ms, found["seconds"]))
            if say:
                say(f"re-ranked {n}/{len(candidates)}: trial {c.trial}, proxy mIoU {c.proxy_miou:.4f}, "
                    f"end to end {found['miou']:.4f} ({epochs} epochs)")
    return sorted(ranked, key=lambda r: (-r.miou, r.trial))


@dataclass(frozen=True)
class Measured:
    trial: int
    measured_ms: float
    fits: bool


def measured_pick(candidates: Sequence[Candidate], budget_ms: float, measure: Callable[[DPCNet], float],
                  say: Callable[[str], None] | None = None) -> tuple[Candidate, list[Measured]]:
    """The first candidate (best first) whose network measures within ``budget_ms``, and every
    measurement taken; refused when none does."""
    taken = []
    for c in candidates:
        ms = measure(c.net)
        taken.append(Measured(c.trial, ms, ms <= budget_ms))
        if say:
            say(f"measured trial {c.trial}: {ms:.4g} ms (predicted {c.latency_ms:.4g}, budget {budget_ms:.4g})")
        if ms <= budget_ms:
            return c, taken
    raise UserError(f"none of the {len(candidates)} trained cells measures within --budget-ms {budget_ms:g} on this "
                    f"machine (the fastest {min(m.measured_ms for m in taken):.4g} ms): the table was measured on another "
                    "device or under other load; profile here, or raise the budget")


def as_dicts(items: Sequence[Reranked | Measured]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]
