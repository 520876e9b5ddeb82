"""Black-box search of DPC cells on Optuna (issue 15, item 5; the library half, no command yet).

A trial is one cell: for each branch i, its input (``b{i}_input``: -1 for the backbone's
features, or an earlier branch) and its op (``b{i}_op``: one of the 81, named as
``conv1x1``, ``sep3x3_r6x21``, ``pool_g2x4``). The latency budget is a hard constraint checked on
the table before anything is trained: a cell predicted over budget is recorded as pruned with
its predicted latency and never trained. A cell within budget is trained on the cached features
(``proxy.train_cell``) and its validation mIoU is the trial's value.

The study lives in Optuna's storage: a journal file (a path) or any database URL Optuna accepts,
so workers started with the same storage and study name cooperate, and running again continues
the study. The study records the space, the table, the budget and the cache it was created for,
and a study of other ones is refused naming the difference.

Samplers: ``random`` (the paper's baseline), ``tpe`` (Optuna's TPESampler), ``nsga2`` (Optuna's
NSGA-II on the single objective: a genetic algorithm, standing in for regularised evolution,
which Optuna's core does not ship).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas2deploy.errors import UserError, first_line
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets.dpc import Branch, DPCNet
from nas2deploy.spaces.dpc.proxy import FeatureCache, train_cell
from nas2deploy.spaces.dpc.space import BRANCH_CHOICES, DPCSpace

SAMPLERS = ("random", "tpe", "nsga2")


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


def storage_for(url: str) -> Any:
    """A database URL as it is; anything else is a journal file (created where it is missing)."""
    optuna = _optuna()
    if "://" in url:
        return url
    from optuna.storages.journal import JournalFileBackend

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def sampler_for(name: str, seed: int) -> Any:
    optuna = _optuna()
    if name not in SAMPLERS:
        raise UserError(f"--sampler {name}: expected one of {', '.join(SAMPLERS)}")
    return {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler,
            "nsga2": optuna.samplers.NSGAIISampler}[name](seed=seed)


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
    features = list(space.network(tuple(BRANCH_CHOICES[:1]), "probe").features())
    if list(cache.features["train"].shape[1:]) != features:
        raise UserError(f"feature cache {cache.folder} holds {'x'.join(map(str, cache.features['train'].shape[1:]))} features, "
                        f"the dpc space {space.config_dict()} reads {'x'.join(map(str, features))}: build the cache for it")
    try:
        study = optuna.create_study(storage=storage_for(storage), study_name=name, direction="maximize",
                                    sampler=sampler_for(sampler, seed), load_if_exists=True)
    except Exception as exc:  # storages fail in their own ways: sqlalchemy, the journal, the URL parser
        raise UserError(f"--storage {storage}: cannot open study {name} ({first_line(exc)}); give a journal file path "
                        "or a database URL that this machine reaches") from None
    want = {"space": space.config_dict(), "table": str(table.path), "budget_ms": budget_ms, "cache": str(cache.folder)}
    have = study.user_attrs
    if not have:
        for key, value in want.items():
            study.set_user_attr(key, value)
    elif (differ := [k for k in want if have.get(k) != want[k]]):
        raise UserError(f"study {name} in {storage} was created for another {', '.join(differ)} "
                        f"({'; '.join(f'{k}: {have.get(k)!r}' for k in differ)}); give another --study")
    return study


def run_trials(study: Any, space: DPCSpace, table: LatencyTable, cache: FeatureCache, budget_ms: float, trials: int,
               epochs: int = 10, batch_size: int = 8, patience: int = 3) -> None:
    """Run ``trials`` more trials of ``study`` in this process (other processes may run theirs)."""
    optuna = _optuna()

    def objective(trial: Any) -> float:
        net: DPCNet = space.network(cell_of(trial, space.config.branches), f"trial-{trial.number}")
        predicted = table.predict(net).best_ms
        trial.set_user_attr("latency_ms", predicted)
        if predicted > budget_ms:  # the hard constraint: never trained
            raise optuna.TrialPruned(f"predicted {predicted:.4g} ms > budget {budget_ms:.4g} ms")
        score = train_cell(net, cache, epochs=epochs, batch_size=batch_size, patience=patience, seed=trial.number)
        trial.set_user_attr("epochs", score.epochs)
        trial.set_user_attr("seconds", round(score.seconds, 2))
        return score.miou

    study.optimize(objective, n_trials=trials)
