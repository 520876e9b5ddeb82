"""Where a black-box study lives and who works on it: Optuna's storages (a journal file, or any
database URL Optuna accepts, with its heartbeat), the workers' identities and the running trials
that dead workers left, and the samplers that draw trials.

A worker killed with SIGKILL leaves its trial running: in a database storage Optuna's heartbeat
fails it after ``GRACE_S``; a journal file has no heartbeat, so the next worker on the same host
fails the trials of its host's dead workers (``fail_dead_workers_trials``, which also acts at once
on a database for this host's workers). Either way the failed trial's network is queued again,
once (Optuna's ``RetryHeartbeatStaleTrialCallback``), and the failed trial no longer counts
toward the study's total (``counted``): a study reaches its count of trained trials however many
workers die. A trial cut short by Ctrl-C is failed and queued again the same way, with no limit
on how often (``requeue_interrupted``): the next start runs it first. The worker that creates a study seeds its sampler with ``--seed``; a worker that joins one (another worker, or
the command run again) mixes its host and process into the seed (``joiner_seed``), so that it does
not redraw the networks the first one drew (Optuna's samplers keep their random state per
process).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import socket
import warnings
from pathlib import Path
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.fileio import read_json_lines, refuse_link

#: Seconds between a worker's heartbeats in a database storage, and how long a silent worker's
#: running trial waits before another worker marks it failed (Optuna's heartbeat).
HEARTBEAT_S, GRACE_S = 20, 60
#: How often a dead worker's trial is queued again: once (a network that kills its worker twice
#: is left failed rather than retried forever).
RETRIES = 1
#: The mark of a trial that workers asked for at the same moment beyond the study's total: the
#: storage numbers trials atomically, so the ones numbered past the total stop before any work.
SURPLUS = "surplus"
#: A study's journal is a line per trial event: 1 GiB is some millions of trials.
MAX_JOURNAL_BYTES = 2**30
SAMPLERS = ("random", "evolution", "spos", "tpe", "nsga2")


def optuna_module() -> Any:
    """Optuna, quiet (its per-trial log lines would drown the command's own)."""
    try:
        import optuna
    except ImportError:
        raise UserError("the black-box search runs on Optuna: pip install 'nas2deploy[search]' (or pip install optuna)") from None
    # ERROR: a failed trial's warning carries its traceback, and every failure reaches the user
    # anyway, as the one line of the error that ended the command
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # the heartbeat and the failed-trial retry are marked experimental; their use here is tested
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_for(url: str) -> Any:
    """A database URL with Optuna's heartbeat (a killed worker's running trial is failed by the
    next worker after ``GRACE_S``); anything else is a journal file (created where missing)."""
    optuna = optuna_module()
    if "://" in url:
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                          heartbeat_stale_trial_callback=requeue)
    from optuna.storages.journal import JournalFileBackend

    path = Path(url).absolute()  # Optuna's lock is a symbolic link to the path: relative, it never resolves
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_journal(path)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def repair_journal(path: Path) -> None:
    """Check a study's journal file before any worker appends to it, under Optuna's own lock: a
    line torn by a kill at its end is cut off (Optuna would append behind it, and the study could
    no longer be read); a corrupt line before the end, a link or a second hard-linked name is
    refused in one line (``fileio.read_json_lines``). Nothing else is changed."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not refuse_link(path).exists():
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        read_json_lines(path, "study journal", "restore the file from a copy, or give another --storage (or --study) "
                        "to start afresh", MAX_JOURNAL_BYTES)
    finally:
        lock.release()


def open_storage_study(url: str, name: str) -> Any:
    """An existing study of a storage, as it is (for reading it: no sampler, no checks)."""
    return optuna_module().load_study(study_name=name, storage=storage_for(url))


def shown_storage(url: str) -> str:
    """A storage as printed and written to OUT/study.json: a database URL's password masked."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def sampler_for(name: str, seed: int) -> Any:
    optuna = optuna_module()
    if name not in SAMPLERS:
        raise UserError(f"--sampler {name}: expected one of {', '.join(SAMPLERS)}")
    if name in ("evolution", "spos"):
        from nas2deploy.search.blackbox.evolution import RegularisedEvolution, SposEvolution

        return RegularisedEvolution(seed=seed) if name == "evolution" else SposEvolution(seed=seed)
    return {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler,
            "nsga2": optuna.samplers.NSGAIISampler}[name](seed=seed)


def joiner_seed(seed: int, worker: str) -> int:
    """The sampler seed of a worker joining a study that exists: ``seed`` mixed with the worker,
    so that it does not replay the draws of the worker that created the study."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{worker}".encode()).digest()[:4], "big")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_dead_workers_trials(study: Any) -> list[int]:
    """Mark failed the running trials of workers of this host that no longer run (a journal file
    has no heartbeat; a worker killed with SIGKILL leaves its trial running) and queue each
    network again, as the heartbeat does in a database. Trials of other hosts are left to their
    own workers; a database storage's heartbeat covers every host."""
    optuna = optuna_module()
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            try:
                finished = study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                # another worker, starting beside this one, failed it first and queued it: Optuna says
                # ValueError when the trial read finished, the other when it finished while written
                continue
            requeue(study, finished)
            failed.append(trial.number)
    return failed


def requeue(study: Any, trial: Any, retries: int | None = RETRIES) -> None:
    """Queue a dead worker's failed trial again (Optuna's ``RetryHeartbeatStaleTrialCallback``,
    ``retries`` times at most, None: always) without its ``worker``: the copy, running in a live
    worker before it records itself, must not look like the dead worker's trial to another worker."""
    trial = copy.deepcopy(trial)
    trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "worker"}
    optuna_module().storages.RetryHeartbeatStaleTrialCallback(retries)(study, trial)


def requeue_interrupted(study: Any) -> list[int]:
    """Queue again the trials this worker was running when Ctrl-C stopped it (Optuna recorded
    them failed): an interruption is not the network's fault, so it is run again however often it
    was interrupted."""
    optuna = optuna_module()
    me, trials = worker_id(), study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    cut = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("worker") == me
           and t.number not in retried and not t.user_attrs.get(SURPLUS)]
    for trial in cut:
        requeue(study, trial, retries=None)
    return [t.number for t in cut]


def retried_numbers(trials: list[Any]) -> set[int]:
    """The trials whose network was queued again (each retry's history: the original and every
    retry that failed before it)."""
    history = optuna_module().storages.RetryHeartbeatStaleTrialCallback.retry_history
    return {n for t in trials for n in history(t)}


def counted(study: Any, before: int | None = None) -> tuple[int, int]:
    """(trials that count toward the study's total, trials waiting to run), among the trials
    numbered below ``before`` when given: finished, pruned, running and queued trials, and failed
    ones unless their network was queued again or they were surplus (``SURPLUS``)."""
    optuna = optuna_module()
    state = optuna.trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False) if before is None or t.number < before]
    retried = retried_numbers(trials)
    waiting = sum(t.state == state.WAITING for t in trials)
    dropped = sum(t.state == state.FAIL and (t.number in retried or bool(t.user_attrs.get(SURPLUS))) for t in trials)
    return len(trials) - dropped, waiting


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
