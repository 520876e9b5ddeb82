"""A black-box study on Optuna: ``run_study`` is what ``nas2deploy search`` runs for a space
searched trial by trial (``runs.start_study``).

A trial is one network, drawn by the space (``BlackBoxSpace.suggest``). The latency budget is a
hard constraint checked on the table before anything is trained: a network predicted over the
budget is recorded as pruned with its predicted latency and never scored. A network within the
budget is scored by the space's evaluator and its score is the trial's value.

The study lives in Optuna's storage (``storage.py``): workers started with the same storage and
study name cooperate, and running again continues the study. The study records the space, the
table (its SHA-256), the budget and the evaluator's identity it was created for, and a study of
other ones is refused naming the difference.

After the trials, the best networks may be re-ranked by end-to-end training and measured on the
table's device until one fits (``selection.py``); the chosen network is written as
``OUT/best.json`` and every trial as ``OUT/study.json``, which ``nas2deploy report OUT`` draws.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from nas2deploy.errors import UserError, first_line
from nas2deploy.fileio import atomic_write_json, claim_folder, folder_lock, sha256_file
from nas2deploy.heartbeat import Heartbeat
from nas2deploy.latency.measure import measure_network, settings_from_table, timing_from_table
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network, save_arch
from nas2deploy.validate import Field
from nas2deploy.search.blackbox.selection import Candidate, as_dicts, measured_pick, rerank
from nas2deploy.search.blackbox.space import BlackBoxSpace, Evaluator
from nas2deploy.search.blackbox.storage import (
    SURPLUS,
    counted,
    fail_dead_workers_trials,
    joiner_seed,
    optuna_module,
    requeue_interrupted,
    sampler_for,
    shown_storage,
    storage_for,
    worker_id,
)

#: Networks a new study starts from where its space draws them (``BlackBoxSpace.initial_trials``):
#: SPOS's population.
INITIAL_POPULATION = 50
#: ``OUT/study.json``: the summary and every trial, what ``nas2deploy report OUT`` draws.
STUDY_FORMAT, STUDY_VERSION = "nas2deploy.study", 2
#: What ``search`` writes into its OUT (``claim_folder`` lets it write there again), besides the
#: space's own files (``BlackBoxSpace.own_files``).
OWN = (".lock", "study.log", "best.json", "study.json", "rerank.jsonl", "rerank.jsonl.lock", "report.md", "trajectory.png",
       "pareto.png")


@dataclass(frozen=True)
class StudyConfig:
    """What ``nas2deploy search`` was given for a space searched trial by trial."""

    table: str
    data: str
    budget_ms: float
    out: str
    trials: int = 20  # the study's total: each worker runs until the study holds this many
    storage: str = ""  # default: OUT/study.log (a journal file)
    study: str = ""  # default: the space's name
    sampler: str = "random"
    rerank: int = 0  # the top networks trained end to end (0: the study's best is its best)
    rerank_epochs: int = 10
    measure: bool = False  # closed loop: the best network that measures within the budget here
    #: The window's lower end as a share of the budget: networks predicted below it are pruned
    #: unscored too (0: every network within the budget is scored).
    fill: float = 0.0
    seed: int = 0
    force: bool = False  # write into an OUT that holds other files
    #: The space's own study options (``SpaceOption`` scope "study"), at their defaults where not given.
    options: dict[str, Any] = field(default_factory=dict)


#: The study's user attribute recording what it was created for (space, table, budget, evaluator).
IDENTITY = "nas2deploy_identity"


def open_study(space: Any, table: LatencyTable, evaluator: Evaluator, budget_ms: float, storage: str, name: str,
               sampler: str = "random", seed: int = 0) -> Any:
    """Create or join the study ``name`` in ``storage``; one created for another space, table,
    budget or evaluator is refused, naming what differs."""
    optuna = optuna_module()
    try:
        study = optuna.create_study(storage=storage_for(storage), study_name=name, direction="maximize",
                                    sampler=sampler_for(sampler, seed), load_if_exists=True)
    except UserError:
        raise
    except Exception as exc:  # storages fail in their own ways: sqlalchemy, the journal, the URL parser
        raise UserError(f"--storage {shown_storage(storage)}: cannot open study {name} ({first_line(exc)}); give a journal file path "
                        "or a database URL that this machine reaches") from None
    # Workers on other machines have their own paths: a table counts by its contents, an
    # evaluator by what it computes from.
    want = {"space": space.config_dict(), "table": sha256_file(table.path) if table.path else "", "budget_ms": budget_ms,
            **evaluator.identity}
    # One attribute, written at once: a worker starting at the same moment sees all of it or none
    # (studies of earlier releases hold one attribute per key). Read back after writing, so of two
    # workers creating the study together with different options the later one is refused.
    have = study.user_attrs
    found = have.get(IDENTITY) if IDENTITY in have else {k: have[k] for k in want if k in have} or None
    if found is None:
        study.set_user_attr(IDENTITY, want)
        found = study.user_attrs[IDENTITY]
    else:
        study.sampler = sampler_for(sampler, joiner_seed(seed, worker_id()))
    if not isinstance(found, dict) or (differ := [k for k in want if found.get(k) != want[k]]):
        differ = list(want) if not isinstance(found, dict) else differ
        shown = found if isinstance(found, dict) else {}
        raise UserError(f"study {name} in {shown_storage(storage)} was created for another {', '.join(differ)} "
                        f"({'; '.join(f'{k}: {shown.get(k)!r}' for k in differ)}); give another --study")
    return study


class Surplus(Exception):
    """A trial asked for beyond the study's total (recorded failed, marked ``SURPLUS``, not counted)."""


def run_trials(study: Any, adapter: BlackBoxSpace, space: Any, table: LatencyTable, evaluator: Evaluator, budget_ms: float,
               trials: int, fill: float = 0.0, say: Callable[[str], None] | None = None) -> None:
    """Run trials in this process until the study holds ``trials`` trials (finished, or running
    in other workers, a failed one counting only when its network was not queued again:
    ``storage.counted``), so that several workers share one total; the running trials of dead
    workers on this host are marked failed and queued again first (``fail_dead_workers_trials``),
    and so is a trial cut short by Ctrl-C (``requeue_interrupted``). ``say`` hears a heartbeat:
    the trials done and the best score so far."""
    optuna = optuna_module()
    fail_dead_workers_trials(study)
    beat = Heartbeat(say, "trials", trials)

    def enough(study: Any, _: Any = None) -> bool:
        total, waiting = counted(study)
        return total >= trials and not waiting

    if enough(study):
        return

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", worker_id())
        if counted(study, before=trial.number)[0] >= trials:  # another worker took the last place first
            trial.set_user_attr(SURPLUS, True)
            raise Surplus(f"trial {trial.number} is beyond the study's {trials} trials")
        net = adapter.suggest(trial, space, f"trial-{trial.number}")
        predicted = table.predict(net).best_ms
        trial.set_user_attr("latency_ms", predicted)
        if predicted > budget_ms:  # the hard constraint: never scored
            raise optuna.TrialPruned(f"predicted {predicted:.4g} ms > budget {budget_ms:.4g} ms")
        if predicted < fill * budget_ms:  # under the window the user asked for
            raise optuna.TrialPruned(f"predicted {predicted:.4g} ms < {fill:g} x budget {budget_ms:.4g} ms")
        scored = evaluator.score(net, seed=trial.number)
        for key, value in scored.attrs.items():
            trial.set_user_attr(key, value)
        return scored.value

    def stop_when_enough(study: Any, trial: Any) -> None:
        # running trials count too: a worker stops when the others' running trials will make up
        # the total, so the study ends with ``trials`` trials, none run twice; a queued network
        # (a dead worker's) is run before stopping
        if enough(study):
            study.stop()
        if say:  # counting the trials reads the storage: only for someone listening
            state = optuna.trial.TrialState
            beat.tick(len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED))),
                      best_so_far(study, adapter.score_label))

    try:
        study.optimize(objective, callbacks=[stop_when_enough], catch=(Surplus,))
    except KeyboardInterrupt:
        requeue_interrupted(study)
        raise


def best_so_far(study: Any, label: str) -> str:
    """The study's best score so far, in words (a heartbeat's item)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna_module().trial.TrialState.COMPLETE,))
            if _number(t.value, 0) is not None]
    if not done:
        return "none trained yet"
    best = max(done, key=lambda t: t.value)
    return f"best {label} {best.value:.4f} (trial {best.number})"


def poisoned(trial: Any, adapter: BlackBoxSpace, space: Any) -> str | None:
    """Why a finished trial read back from the storage cannot be trusted, or None. A study's
    storage is a file or a database anyone may edit: a score must be a number in [0, 1] (top-1,
    mIoU and the proxy's mIoU all are), the predicted latency a finite positive number, and the
    trial's choices must still decode into a network of the space."""
    doc = Field({"score": trial.value, "latency_ms": trial.user_attrs.get("latency_ms")}, f"trial {trial.number}",
                "the storage was edited or damaged; the trial is left out")
    try:
        doc["score"].number(0, 1)
        doc["latency_ms"].number(0, 1e9, lo_open=True)
    except UserError as exc:
        return str(exc)
    return None if _network(trial, adapter, space) is not None else \
        f"trial {trial.number}: its choices are not a network of the space; the trial is left out"


def _network(trial: Any, adapter: BlackBoxSpace, space: Any) -> Network | None:
    """The trial's network, or None when its choices do not decode (a trial that failed before it
    drew them all, or a storage edited since)."""
    try:
        return adapter.suggest(trial, space, f"trial-{trial.number}")
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _number(value: Any, lo: float, lo_open: bool = False) -> float | None:
    """``value`` when it is a finite number of at least (above) ``lo``, else None."""
    try:
        return Field(value, "", "").number(lo, math.inf, lo_open)
    except UserError:
        return None


def ranked_candidates(study: Any, adapter: BlackBoxSpace, space: Any) -> list[Candidate]:
    """The study's scored networks, best score first and, among equal scores, fastest first
    (a tie goes to the lower predicted latency, so the choice lies on the score / latency Pareto
    front); each network once; poisoned trials (``poisoned``) left out."""
    optuna = optuna_module()
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if poisoned(t, adapter, space) is None]
    found, seen = [], set()
    for t in sorted(done, key=lambda t: (-t.value, t.user_attrs["latency_ms"], t.number)):
        net = adapter.suggest(t, space, f"trial-{t.number}")
        body = net.renamed("")
        if body not in seen:
            seen.add(body)
            found.append(Candidate(t.number, net, t.value, t.user_attrs["latency_ms"]))
    return found


def trial_rows(study: Any, adapter: BlackBoxSpace, space: Any) -> list[dict[str, Any]]:
    """Every trial of the study as the report reads it (``OUT/study.json``); a poisoned one keeps
    its number and state, loses its values and says why (``poisoned``)."""
    optuna = optuna_module()
    rows = []
    for t in study.get_trials(deepcopy=False):
        why = poisoned(t, adapter, space) if t.state == optuna.trial.TrialState.COMPLETE else None
        net = None if why else _network(t, adapter, space)
        cell = adapter.cell(net) if net is not None else None
        row = {"number": t.number, "state": t.state.name.lower(), "score": None if why else t.value,
               "latency_ms": None if why else _number(t.user_attrs.get("latency_ms"), 0, lo_open=True),
               "worker": str(t.user_attrs.get("worker", ""))[:256] or None,
               "seconds": _number(t.user_attrs.get("seconds"), 0), "cell": cell,
               "label": adapter.describe(cell) if cell is not None else "-"}
        if why:
            row["poisoned"] = why
        rows.append(row)
    return rows


def run_study(config: StudyConfig, adapter: BlackBoxSpace, space: Any, table: LatencyTable,
              say: Callable[[str], None] | None = None, measure: Callable[[Network], float] | None = None) -> dict[str, Any]:
    """Prepare the space's evaluator in OUT (once; resumed after a kill), run trials until the
    study (joined where it exists) holds ``config.trials``, re-rank and measure its best networks
    where asked, write the chosen network as OUT/best.json and the study's trials as
    OUT/study.json, and return the summary. ``measure`` times a network on the table's backend
    (injected by tests)."""
    reach = space.latency_range(table)
    if reach is not None and config.budget_ms < reach[0]:
        raise UserError(f"--budget-ms {config.budget_ms:g}: the fastest network of the {space.name} space is predicted at "
                        f"{reach[0]:.4g} ms with table {table.name}")
    if not adapter.starts_in_window:
        require_reachable_window(space, table, config.budget_ms, config.fill)
    with folder_lock(config.out, f"study folder {config.out}"):  # one worker per folder; they share the storage
        return _run_study(config, adapter, space, table, say, measure)


#: Random networks drawn to tell, before any work, whether a study's draws can land in its window.
WINDOW_DRAWS = 1000


def require_reachable_window(space: Any, table: LatencyTable, budget_ms: float, fill: float, seed: int = 0) -> None:
    """Refuse a window [fill x budget, budget] that none of ``WINDOW_DRAWS`` random networks of the
    space is predicted in (under a second of table look-ups): trials drawn as the samplers start
    (at random) would all be pruned, and the study would train nothing after its set-up (DPC's
    feature cache). The refusal gives the draws' range and a budget that reaches a tenth of them."""
    rng = random.Random(seed)
    draws = sorted(table.predict(space.sample_arch(rng)).best_ms for _ in range(WINDOW_DRAWS))
    if any(fill * budget_ms <= ms <= budget_ms for ms in draws):
        return
    below = draws[-1] < fill * budget_ms
    hint = (f"lower --fill below {draws[-1] / budget_ms:.2f} or the budget" if below
            else f"give --budget-ms {draws[len(draws) // 10]:.4g} or more (a tenth of them fit)")
    raise UserError(f"--budget-ms {budget_ms:g}{f' --fill {fill:g}' if fill else ''}: none of {WINDOW_DRAWS} random "
                    f"networks of the {space.name} space is predicted within [{fill * budget_ms:.4g}, {budget_ms:.4g}] ms "
                    f"with table {table.name} (they lie at {draws[0]:.4g}-{draws[-1]:.4g} ms), so every trial would be "
                    f"pruned untrained: {hint}")


#: Scores closer than this (in score units: 0.5 points of top-1 or mIoU) do not tell networks apart.
SEPARATION = 0.005


def separation_warning(ranked: list[Candidate], label: str) -> str | None:
    """A warning when the trained networks' scores do not separate them: the choice among them is
    then the tie-break's (the fastest), not the score's."""
    if len(ranked) < 2 or ranked[0].score - ranked[-1].score >= SEPARATION:
        return None
    return (f"the {len(ranked)} trained networks' {label} scores lie within {ranked[0].score - ranked[-1].score:.4f} of "
            f"each other ({ranked[-1].score:.4f}-{ranked[0].score:.4f}): the score does not tell them apart (equal "
            "scores go to the faster network); train the scores longer (the space's epochs option), on more data, or from better weights")


class StudyFailed(UserError):
    """A study that ran but delivers no network (every trial pruned, or none measuring within the
    budget): ``OUT/study.json`` is written first, so its trials and measurements stay readable."""


def _run_study(config: StudyConfig, adapter: BlackBoxSpace, space: Any, table: LatencyTable,
               say: Callable[[str], None] | None, measure: Callable[[Network], float] | None) -> dict[str, Any]:
    out = claim_folder(config.out, config.force, own=OWN + adapter.own_files)
    evaluator = adapter.prepare(space, table, config, out, say)
    storage, name = config.storage or str(out / "study.log"), config.study or space.name
    study = open_study(space, table, evaluator, config.budget_ms, storage, name, config.sampler, config.seed)
    if not study.get_trials(deepcopy=False):  # a new study: the space's first population, if it gives one
        for params in adapter.initial_trials(space, table, config, min(config.trials, INITIAL_POPULATION)):
            study.enqueue_trial(params)
    run_trials(study, adapter, space, table, evaluator, config.budget_ms, config.trials, config.fill, say)
    rows = trial_rows(study, adapter, space)
    warnings = [f"study {name}: {row['poisoned']}" for row in rows if "poisoned" in row]
    states = [r["state"] for r in rows]
    summary: dict[str, Any] = {"study": name, "storage": shown_storage(storage), "trials": len(states),
                               "complete": states.count("complete"), "pruned": states.count("pruned"),
                               "failed": states.count("fail"), "budget_ms": config.budget_ms, "table": config.table,
                               "space_name": space.name, "space": space.config_dict(), "sampler": config.sampler,
                               "fill": config.fill,
                               "options": config.options, "score_label": adapter.score_label,
                               "poisoned": [{"trial": r["number"], "why": r["poisoned"]} for r in rows if "poisoned" in r]}
    ranked = order = ranked_candidates(study, adapter, space)
    if (separation := separation_warning(order, adapter.score_label)) is not None:
        warnings.append(separation)
    for warning in warnings:
        if say:
            say(f"warning: {warning}")
    summary["warnings"] = warnings
    failure = None if order else (
        f"none of the study's {summary['trials']} trials drew a network predicted within the window "
        f"[{config.fill * config.budget_ms:.4g}, {config.budget_ms:.4g}] ms (all pruned untrained): widen the window "
        "(--budget-ms, --fill) or give more --trials")
    if order and config.rerank:
        reranked = rerank(order[:config.rerank], evaluator, config.rerank_epochs, out / "rerank.jsonl", say)
        by_trial = {c.trial: c for c in order}
        ranked = [by_trial[r.trial] for r in reranked] + order[config.rerank:]
        summary["rerank"] = {"epochs": config.rerank_epochs, "cells": as_dicts(reranked)}
    if order and config.measure:
        if measure is None:
            settings, timing = settings_from_table(table), timing_from_table(table)
            measure = lambda net: measure_network(settings, net, timing)  # noqa: E731
        chosen, taken = measured_pick(ranked, config.budget_ms, measure, say)
        summary["measured"] = as_dicts(taken)
        ranked = [chosen] if chosen is not None else []
        if chosen is None:
            failure = (f"none of the {len(taken)} trained networks measures within --budget-ms {config.budget_ms:g} on "
                       f"this machine (the fastest {min(m.measured_ms for m in taken):.4g} ms): the table was measured on "
                       "another device or under other load; profile here, or raise the budget")
    (out / "best.json").unlink(missing_ok=True)  # a network chosen by an earlier run is not this run's choice
    if ranked:
        best = ranked[0]
        net = best.net.renamed(f"{space.name}-best").with_meta(
            {**best.net.meta, "lut": config.table, "data": config.data, "space": space.name, "budget_ms": config.budget_ms})
        save_arch(net, out / "best.json")
        summary["best"] = {"trial": best.trial, "score": best.score, "latency_ms": best.latency_ms,
                           "cell": adapter.cell(net), "arch": str(out / "best.json")}
    if failure:
        summary["failure"] = failure
    atomic_write_json(out / "study.json", {"format": STUDY_FORMAT, "version": STUDY_VERSION, **summary, "trial_rows": rows})
    if failure:
        raise StudyFailed(failure)
    return summary
