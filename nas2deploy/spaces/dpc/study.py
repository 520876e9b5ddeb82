"""Black-box search of DPC cells on Optuna (issue 15, item 5): ``search_cells`` is what
``nas2deploy search --space dpc`` runs.

A trial is one cell: for each branch i, its input (``b{i}_input``: -1 for the backbone's
features, or an earlier branch) and its op (``b{i}_op``: one of the 81, named as
``conv1x1``, ``sep3x3_r6x21``, ``pool_g2x4``). The latency budget is a hard constraint checked on
the table before anything is trained: a cell predicted over budget is recorded as pruned with
its predicted latency and never trained. A cell within budget is trained on the cached features
(``proxy.train_cell``) and its validation mIoU is the trial's value.

The study lives in Optuna's storage: a journal file (a path) or any database URL Optuna accepts,
so workers started with the same storage and study name cooperate, and running again continues
the study. The study records the space, the table (its SHA-256), the budget and the cache (the
hash of what its features were computed from: workers on other machines build their own) it was
created for, and a study of other ones is refused naming the difference. A worker killed with
SIGKILL leaves its trial running: in a database storage Optuna's heartbeat fails it, in a
journal file the next worker on the same host does (``fail_dead_workers_trials``).

Samplers: ``random`` (the paper's baseline), ``evolution`` (regularised evolution, Real et al.
2019: ``evolution.py``), ``tpe`` (Optuna's TPESampler), ``nsga2`` (Optuna's NSGA-II on the single
objective). The worker that creates a study seeds its sampler with ``--seed``; a worker that joins
one (another worker, or the command run again) mixes its host and process into the seed, so it
does not redraw the cells the first one drew (Optuna's samplers keep their random state per
process).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nas2deploy.errors import UserError, first_line
from nas2deploy.data import open_dataset
from nas2deploy.fileio import atomic_write_json, claim_folder, sha256_file
from nas2deploy.latency.device import measure_network, settings_from_table, timing_from_table
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import save_arch
from nas2deploy.nets.dpc import Branch, DPCNet
from nas2deploy.spaces.dpc.proxy import FeatureCache, build_cache, train_cell
from nas2deploy.spaces.dpc.selection import Candidate, as_dicts, measured_pick, rerank
from nas2deploy.spaces.dpc.space import BRANCH_CHOICES, DPCSpace

SAMPLERS = ("random", "evolution", "tpe", "nsga2")


def op_name(branch: Branch) -> str:
    if branch.op == "sep3x3":
        return f"sep3x3_r{branch.rate[0]}x{branch.rate[1]}"
    if branch.op == "pool":
        return f"pool_g{branch.grid[0]}x{branch.grid[1]}"
    return branch.op


#: The 81 ops by their trial names.
OPS = {op_name(b): b for b in BRANCH_CHOICES}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("the DPC search runs on Optuna: pip install 'nas2deploy[search]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


#: Seconds between a worker's heartbeats in a database storage, and how long a silent worker's
#: running trial waits before another worker marks it failed (Optuna's heartbeat).
HEARTBEAT_S, GRACE_S = 20, 60


def storage_for(url: str) -> Any:
    """A database URL with Optuna's heartbeat (a killed worker's running trial is failed by the
    next worker after ``GRACE_S``); anything else is a journal file (created where missing)."""
    optuna = _optuna()
    if "://" in url:
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    from optuna.storages.journal import JournalFileBackend

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def sampler_for(name: str, seed: int) -> Any:
    optuna = _optuna()
    if name not in SAMPLERS:
        raise UserError(f"--sampler {name}: expected one of {', '.join(SAMPLERS)}")
    if name == "evolution":
        from nas2deploy.spaces.dpc.evolution import RegularisedEvolution

        return RegularisedEvolution(seed=seed)
    return {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler,
            "nsga2": optuna.samplers.NSGAIISampler}[name](seed=seed)


def shown_storage(url: str) -> str:
    """A storage as printed and written to OUT/study.json: a database URL's password masked."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def joiner_seed(seed: int, worker: str) -> int:
    """The sampler seed of a worker joining a study that exists: ``seed`` mixed with the worker,
    so that it does not replay the draws of the worker that created the study."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{worker}".encode()).digest()[:4], "big")


def cell_of(trial: Any, branches: int) -> tuple[Branch, ...]:
    """The cell a trial suggests."""
    cell = []
    for i in range(branches):
        source = trial.suggest_categorical(f"b{i}_input", list(range(-1, i)))
        op = OPS[trial.suggest_categorical(f"b{i}_op", list(OPS))]
        cell.append(Branch(op.op, source, op.rate, op.grid))
    return tuple(cell)


def open_study(space: DPCSpace, table: LatencyTable, cache: FeatureCache, budget_ms: float, storage: str, name: str,
               sampler: str = "random", seed: int = 0) -> Any:
    """Create or join the study ``name`` in ``storage``; one created for another space, table,
    budget or cache is refused, naming what differs."""
    optuna = _optuna()
    features = list(space.reference_net.features())
    if list(cache.features["train"].shape[1:]) != features:
        raise UserError(f"feature cache {cache.folder} holds {'x'.join(map(str, cache.features['train'].shape[1:]))} features, "
                        f"the dpc space {space.config_dict()} reads {'x'.join(map(str, features))}: build the cache for it")
    try:
        study = optuna.create_study(storage=storage_for(storage), study_name=name, direction="maximize",
                                    sampler=sampler_for(sampler, seed), load_if_exists=True)
    except Exception as exc:  # storages fail in their own ways: sqlalchemy, the journal, the URL parser
        raise UserError(f"--storage {shown_storage(storage)}: cannot open study {name} ({first_line(exc)}); give a journal file path "
                        "or a database URL that this machine reaches") from None
    # Workers on other machines have their own caches and paths: a cache counts by what it was
    # computed from, the table by its contents.
    want = {"space": space.config_dict(), "table": sha256_file(table.path) if table.path else "", "budget_ms": budget_ms,
            "cache": cache.origin}
    have = study.user_attrs
    if not have:
        for key, value in want.items():
            study.set_user_attr(key, value)
    else:
        study.sampler = sampler_for(sampler, joiner_seed(seed, worker_id()))
    if have and (differ := [k for k in want if have.get(k) != want[k]]):
        raise UserError(f"study {name} in {shown_storage(storage)} was created for another {', '.join(differ)} "
                        f"({'; '.join(f'{k}: {have.get(k)!r}' for k in differ)}); give another --study")
    return study


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_dead_workers_trials(study: Any) -> list[int]:
    """Mark failed the running trials of workers of this host that no longer run (a journal file
    has no heartbeat; a worker killed with SIGKILL leaves its trial running). Trials of other
    hosts are left to their own workers; a database storage's heartbeat covers every host."""
    optuna = _optuna()
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def run_trials(study: Any, space: DPCSpace, table: LatencyTable, cache: FeatureCache, budget_ms: float, trials: int,
               epochs: int = 10, batch_size: int = 8, patience: int = 3) -> None:
    """Run trials in this process until the study holds ``trials`` trials (finished, or running
    in other workers), so that several workers share one total; the running trials of dead
    workers on this host are marked failed first (``fail_dead_workers_trials``)."""
    optuna = _optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
              optuna.trial.TrialState.RUNNING)
    fail_dead_workers_trials(study)
    if len(study.get_trials(deepcopy=False, states=states)) >= trials:
        return

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", worker_id())
        net: DPCNet = space.network(cell_of(trial, space.config.branches), f"trial-{trial.number}")
        predicted = table.predict(net).best_ms
        trial.set_user_attr("latency_ms", predicted)
        if predicted > budget_ms:  # the hard constraint: never trained
            raise optuna.TrialPruned(f"predicted {predicted:.4g} ms > budget {budget_ms:.4g} ms")
        score = train_cell(net, cache, epochs=epochs, batch_size=batch_size, patience=patience, seed=trial.number)
        trial.set_user_attr("epochs", score.epochs)
        trial.set_user_attr("seconds", round(score.seconds, 2))
        return score.miou

    # The callback counts running trials too: a worker stops when the others' running trials
    # will make up the total, so the study ends with ``trials`` trials, none run twice.
    study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=states)])


def candidates(study: Any, space: DPCSpace) -> list[Candidate]:
    """The study's trained cells, best proxy score first, each cell once."""
    optuna = _optuna()
    done = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                  key=lambda t: (-t.value, t.number))
    found, seen = [], set()
    for t in done:
        cell = cell_of(t, space.config.branches)
        if cell not in seen:
            seen.add(cell)
            found.append(Candidate(t.number, space.network(cell, f"trial-{t.number}"), t.value, t.user_attrs["latency_ms"]))
    return found


def trial_rows(study: Any, branches: int) -> list[dict[str, Any]]:
    """Every trial of the study as the report reads it (``OUT/study.json``)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        cell = cell_of(t, branches) if len(t.params) == 2 * branches else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "miou": t.value,
                     "latency_ms": t.user_attrs.get("latency_ms"), "worker": t.user_attrs.get("worker"),
                     "seconds": t.user_attrs.get("seconds"), "cell": [b.to_dict() for b in cell] if cell else None})
    return rows


@dataclass(frozen=True)
class CellSearch:
    """What ``nas2deploy search --space dpc`` was given."""

    table: str
    weights: str
    data: str
    budget_ms: float
    out: str
    trials: int = 20  # the study's total: each worker runs until the study holds this many
    storage: str = ""  # default: OUT/study.log (a journal file)
    study: str = "dpc"
    sampler: str = "random"
    proxy_epochs: int = 10
    rerank: int = 0  # the top cells trained end to end (0: the proxy's best is the study's best)
    rerank_epochs: int = 10
    measure: bool = False  # closed loop: the best cell that measures within the budget here
    seed: int = 0
    force: bool = False  # write into an OUT that holds other files


#: What ``search --space dpc`` writes into its OUT (``claim_folder`` lets it write there again).
OWN = ("cache", "study.log", "best.json", "study.json", "rerank.jsonl", "rerank.jsonl.lock", "report.md",
       "trajectory.png", "pareto.png")


def search_cells(config: CellSearch, space: DPCSpace, table: LatencyTable,
                 say: Callable[[str], None] | None = None,
                 measure: Callable[[DPCNet], float] | None = None) -> dict[str, Any]:
    """Cache the backbone's features in OUT/cache (once; resumed after a kill), run trials until
    the study (joined where it exists) holds ``config.trials``, re-rank and measure its best
    cells where asked (``selection.py``), write the chosen cell as OUT/best.json and the study's
    trials as OUT/study.json (what ``report`` draws), and return the summary. ``measure`` times a
    network on the table's backend (injected by tests)."""
    fastest, _ = space.latency_range(table)
    if config.budget_ms < fastest:
        raise UserError(f"--budget-ms {config.budget_ms:g}: the cheapest cell on this backbone is predicted at "
                        f"{fastest:.4g} ms with table {table.name}")
    out = claim_folder(config.out, config.force, own=OWN)
    out.mkdir(parents=True, exist_ok=True)
    probe = space.reference_net
    data = open_dataset(config.data, probe.input_size, fit=probe)
    cache = build_cache(probe, config.weights, data, config.data, out / "cache", progress=say)
    storage = config.storage or str(out / "study.log")
    study = open_study(space, table, cache, config.budget_ms, storage, config.study, config.sampler, config.seed)
    run_trials(study, space, table, cache, config.budget_ms, config.trials, epochs=config.proxy_epochs)
    rows = trial_rows(study, space.config.branches)
    states = [r["state"] for r in rows]
    summary: dict[str, Any] = {"study": config.study, "storage": shown_storage(storage), "trials": len(states),
                               "complete": states.count("complete"), "pruned": states.count("pruned"),
                               "failed": states.count("fail"), "budget_ms": config.budget_ms, "table": config.table,
                               "space": space.config_dict(), "sampler": config.sampler, "proxy_epochs": config.proxy_epochs}
    ranked = order = candidates(study, space)
    if order and config.rerank:
        reranked = rerank(order[:config.rerank], config.weights, data, cache, config.rerank_epochs, out / "rerank.jsonl", say)
        by_trial = {c.trial: c for c in order}
        ranked = [by_trial[r.trial] for r in reranked] + order[config.rerank:]
        summary["rerank"] = {"epochs": config.rerank_epochs, "cells": as_dicts(reranked)}
    if order and config.measure:
        if measure is None:
            settings, timing = settings_from_table(table), timing_from_table(table)
            measure = lambda net: measure_network(settings, net, timing)  # noqa: E731
        chosen, taken = measured_pick(ranked, config.budget_ms, measure, say)
        summary["measured"] = as_dicts(taken)
        ranked = [chosen]
    if ranked:
        best = ranked[0]
        net = space.network(best.net.cell, "dpc-best").with_meta(
            {"lut": config.table, "data": config.data, "space": "dpc", "budget_ms": config.budget_ms})
        save_arch(net, out / "best.json")
        summary["best"] = {"trial": best.trial, "miou": best.proxy_miou, "latency_ms": best.latency_ms,
                           "cell": [b.to_dict() for b in net.cell], "arch": str(out / "best.json")}
    atomic_write_json(out / "study.json", {"format": STUDY_FORMAT, "version": 1, **summary, "trial_rows": rows})
    return summary


#: ``OUT/study.json``: the summary and every trial, what ``nas2deploy report OUT`` draws.
STUDY_FORMAT = "nas2deploy-dpc-study"
