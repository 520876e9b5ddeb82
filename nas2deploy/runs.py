"""Searches from what the user asked: one preparation path for starting a supernet search and
for re-opening a finished one (``derive``, ``report``, the demo), and one for a black-box study.

``prepare`` resolves a ``SearchConfig`` against the registry (the space's built-in data, its
options checked), loads the table, builds the space the table was profiled for with the
config's overrides (the table must cover it), seeds torch and makes the space's search: a
``SearchSetup``. ``start_search`` adds the data and hands everything to a ``SearchRun``;
``open_run`` rebuilds the space's search from a run folder's checkpoint, without the data.
``start_study`` does the same for a space searched trial by trial and runs its study
(``search/blackbox``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nas2deploy.data import open_dataset
from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.search.blackbox.study import StudyConfig
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.search.config import VALIDATION, SearchConfig, parse_crop, provenance
from nas2deploy.search.distributed import DEFAULT_TIMEOUT_S, compute_device, join_process_group, launched_as_writer
from nas2deploy.search.interface import OneShotSearch, SpaceSearch
from nas2deploy.search.loop import SearchRun
from nas2deploy.search.oneshot import Holdout, InheritedScore, OneShotStudy
from nas2deploy.search.run_folder import RunFolder
from nas2deploy.spaces import SpaceEntry, get_space, make_space, space_overrides
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.spaces.tables import load_table, require_covers
from nas2deploy.spaces.entry import SpaceOption
from nas2deploy.validate import Field


def _option_value(option: SpaceOption, value: Any, where: str) -> Any:
    """A search option's value checked by its declared kind and bounds."""
    f = Field(value, where, "give a valid value", option.field)
    if option.kind == "flag":
        return f.bool()
    if option.kind == "str":
        return f.str(max_len=4096)
    low, high = option.low if option.low is not None else -1e18, option.high if option.high is not None else 1e18
    return f.int(int(low), int(min(high, 2**31))) if option.kind == "int" else f.number(low, high)


def resolve(config: SearchConfig) -> SearchConfig:
    """The config with the space's built-in data filled in and its options checked: space
    options the space lacks are refused by name, search options are typed and kept only where
    they differ from the space's defaults (so a run compares equal to its resumption, whatever
    release wrote its checkpoint)."""
    entry = get_space(config.space)
    space_overrides(config.space, config.space_config, "space")
    given = space_overrides(config.space, config.search_options, "search")
    options = {o.field: o for o in entry.options}
    search_options = {k: _option_value(options[k], v, f"search options of the {entry.name} space")
                      for k, v in given.items() if v != entry.defaults_for(config.strategy).get(k)}
    return dataclasses.replace(config, data=config.data or entry.builtin_data, search_options=search_options)


def space_for(table: LatencyTable, name: str, overrides: dict[str, Any]) -> SearchSpace:
    """The space a search explores: the table's, with ``overrides``; the table must cover it."""
    space_meta = table.meta.get("space", {})
    if space_meta.get("name") != name:
        raise UserError(f"latency table {table.name} was profiled for space {space_meta.get('name')!r}, not {name!r}")
    space = make_space(name, {**space_meta.get("config", {}), **overrides})
    require_covers(table, space)
    return space


@dataclass
class SearchSetup:
    """A resolved configuration and what it searches: the table, the space and its search."""

    config: SearchConfig
    entry: SpaceEntry
    table: LatencyTable
    space: SearchSpace
    space_search: SpaceSearch

    @property
    def derive_options(self) -> dict[str, Any]:
        """The configured search options that steer derivation (DCNAS: ``viterbi``)."""
        scoped = self.entry.option_fields("derive")
        return {k: v for k, v in self.config.search_options.items() if k in scoped}

    def derive(self, name: str, budget_ms: float | None = None, fill: float = DEFAULT_FILL, **options: Any) -> Network:
        """The derived network (``options`` override the configured ones), recording its origin."""
        space_overrides(self.config.space, options, "derive")
        arch = self.space_search.derive(name, budget_ms, fill, **{**self.derive_options, **options})
        return arch.with_meta(provenance(self.config, budget_ms))


def prepare(config: SearchConfig, table: LatencyTable | None = None) -> SearchSetup:
    """The config resolved, its table (``table``, where the caller has already loaded
    ``config.table``), its space and its search."""
    config = resolve(config)
    config.check()
    entry = get_space(config.space)
    table = table or load_table(config.table)
    space = space_for(table, config.space, config.space_config)
    torch.manual_seed(config.seed)  # the supernet's initial weights
    space_search = entry.make_search(space, table, {**entry.defaults_for(config.strategy), **config.search_options})
    if config.strategy == "evolution":
        if not isinstance(space_search, OneShotSearch):
            raise UserError(f"the {config.space} space's supernet runs no single networks: --strategy evolution is not "
                            "available for it; search it with --strategy gradient")
        if (why := space_search.one_shot_refusal()) is not None:
            raise UserError(f"--strategy evolution: {why}")
    if not space_search.expected_floor() > 0:  # log of the expected latency would be NaN
        raise UserError(f"latency table {config.table}: its calibration (offset_ms {table.offset_ms:g}) lets the "
                        "expected latency fall to 0 ms or below; run `nas2deploy lut validate` again")
    return SearchSetup(config, entry, table, space, space_search)


def start_search(config: SearchConfig, run_dir: str | Path, resume: bool = False,
                 progress: Callable[[str], None] | None = None, dist_backend: str = "auto",
                 dist_timeout_s: float = DEFAULT_TIMEOUT_S, force: bool = False) -> SearchRun:
    """A search run of ``config`` writing ``run_dir`` (resumed from its checkpoint with ``resume``;
    with ``force``, into a folder holding other files or another search, which it replaces), on
    its device; under torchrun, this rank joins the process group first (``nas2deploy.search.distributed``).

    The writing process holds the folder's lock from here (``RunFolder.hold``: before the folder
    is checked or changed) until the run's ``run`` returns, or the caller's ``release``."""
    folder = RunFolder(run_dir)  # before any work: a link planted in the run folder is refused
    if launched_as_writer():
        folder.hold()  # before anything in the folder is read, replaced or started; the run releases it
    try:
        folder.claim(resume, force)  # every rank, before any rank can write (they meet in the process group first)
        return _search_run(config, folder, resume, progress, dist_backend, dist_timeout_s)
    except BaseException:
        folder.release()
        raise


def _search_run(config: SearchConfig, folder: RunFolder, resume: bool, progress: Callable[[str], None] | None,
                dist_backend: str, dist_timeout_s: float) -> SearchRun:
    prepared = prepare(config)
    config, space_search = prepared.config, prepared.space_search
    device = compute_device(config.device)  # before the data: a missing GPU is said at once
    join_process_group(device, dist_backend, dist_timeout_s)
    size, classes = (prepared.space.config_dict()[k] for k in ("input_size", "num_classes"))
    data = open_dataset(config.data, size, config.data_classes, parse_crop(config.crop), task=space_search.task)
    if data.image_size != size:
        raise UserError(f"the search space has {size}px inputs but data {config.data} has {data.image_size}px images: "
                        f"search with a table profiled with --input-size {data.image_size}")
    if data.num_classes != classes:
        raise UserError(f"latency table {config.table} covers {classes} classes but data {config.data} has "
                        f"{data.num_classes}: profile a table with --num-classes {data.num_classes}")
    if config.budget_ms is not None and config.budget_ms < (fastest := space_search.fastest_ms()):
        raise UserError(f"--budget-ms {config.budget_ms:g} is below the fastest network of this space: "
                        f"{fastest:.3f} ms with table {config.table}")
    return SearchRun(config, folder, prepared.table, space_search, data, prepared.derive_options, resume, progress,
                     device)


def search_after_warmup(config: SearchConfig, run_dir: str | Path, warm: SearchRun | None) -> SearchRun:
    """The search of ``config`` in ``run_dir`` run to its end, resumed where a killed one stopped.
    A new search starts from ``warm``'s weights: searches under several budgets or tables share
    one weight warm-up, as the DenseNAS paper's latency sweep does. Without ``warm``, the run is
    that warm-up: it stops after ``config.warmup_epochs``."""
    resume = (Path(run_dir) / "checkpoint.pt").exists()
    run = start_search(config, run_dir, resume=resume)
    if warm is not None and not resume:
        run.continue_from(warm)
    run.run(until=None if warm is not None else config.warmup_epochs)
    return run


def open_run(run_dir: str | Path) -> SearchSetup:
    """A finished (or interrupted) run's search, rebuilt from its checkpoint without the data."""
    folder = RunFolder(run_dir)
    state = folder.load_checkpoint()
    prepared = prepare(SearchConfig(**state["config"]))
    folder.load_net(prepared.space_search.net, state)
    return prepared


def study_options(entry: SpaceEntry, given: dict[str, Any]) -> dict[str, Any]:
    """The space's study options: those given, typed by their declaration, the rest at their
    defaults; a required one missing, or one the space lacks, is refused by name."""
    declared = {o.field: o for o in entry.scoped("study")}
    for name in given:
        if name not in declared:
            raise UserError(f"--{name.replace('_', '-')} does not apply to the {entry.name} space's study")
    options = {}
    for name, option in declared.items():
        value = given.get(name)
        if value is None and option.required:
            raise UserError(f"the {entry.name} search needs {option.flag}: {option.help}")
        options[name] = option.default if value is None else _option_value(option, value, f"the {entry.name} study's options")
    return options


def start_study(config: StudyConfig, space_name: str, space_config: dict[str, Any] | None = None,
                say: Callable[[str], None] | None = None, measure: Callable[[Network], float] | None = None) -> dict[str, Any]:
    """A black-box study of ``config`` on space ``space_name`` (the table's space narrowed by
    ``space_config``), run in this process until the study holds its trials (``run_study``);
    its summary. ``measure`` times a network on the table's device (tests inject it)."""
    from nas2deploy.search.blackbox.study import run_study

    entry = get_space(space_name)
    adapter = entry.study
    if adapter is None:
        raise UserError(f"the {space_name} space is searched by its supernet, not trial by trial: leave out the study's options")
    overrides = space_overrides(space_name, dict(space_config or {}), "space")
    options = study_options(entry, config.options)
    table = load_table(config.table)
    space = space_for(table, space_name, overrides)
    config = dataclasses.replace(config, data=config.data or entry.builtin_data, options=options,
                                 study=config.study or space_name)
    return run_study(config, adapter, space, table, say, measure)


def inherited_scores(setup: SearchSetup, run_dir: str | Path, validation: int = VALIDATION) -> InheritedScore:
    """What scores networks by the inherited weights of a one-shot run's trained supernet
    (``open_run``): the supernet on the run's device and memory format, the run's data and its
    holdout (``search/oneshot.py``; ``validation`` images of it, 0: all), identified by the
    checkpoint it was read from."""
    from nas2deploy.fileio import sha256_file

    config, search = setup.config, setup.space_search
    if config.strategy != "evolution" or not isinstance(search, OneShotSearch):
        raise UserError(f"run {run_dir} searched by {config.strategy}: it has no one-shot supernet to score networks with")
    device = compute_device(config.device)
    search.net.to(device)
    if config.channels_last:
        search.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    size = setup.space.config_dict()["input_size"]
    data = open_dataset(config.data, size, config.data_classes, parse_crop(config.crop), task=search.task)
    holdout = Holdout.of(config, data, validation)
    identity = {"supernet": sha256_file(Path(run_dir) / "checkpoint.pt"), "val_fraction": config.val_fraction,
                "seed": config.seed, "validation_images": len(holdout.validation)}
    return InheritedScore(search, data, holdout, config.batch_size, device, config.channels_last, identity)


def evolve(setup: SearchSetup, run_dir: str | Path, budget_ms: float, out: str | Path, trials: int = 200,
           sampler: str = "spos", fill: float = DEFAULT_FILL, storage: str = "", study: str = "", measure: bool = False,
           force: bool = False, say: Callable[[str], None] | None = None,
           measured: Callable[[Network], float] | None = None, validation: int = VALIDATION) -> dict[str, Any]:
    """The evolution strategy's search of a one-shot run's trained supernet (``open_run``) under
    ``budget_ms``: a black-box study in ``out`` whose trials are networks of the space, pruned
    outside [fill x budget, budget] on the table and scored by their inherited weights
    (``inherited_scores``, on ``validation`` images of the architecture split; 0: all of them);
    its summary (the chosen network in ``out``/best.json).

    The study is named after the supernet's checkpoint unless ``study`` names it: a search
    resumed for more epochs scores with new weights, so it opens a study of its own beside the
    old one instead of joining trials scored by the weights it replaced. A study resumed with
    another number of validation images is refused, naming it: its scores would not compare."""
    from nas2deploy.search.blackbox.study import run_study

    evaluator = inherited_scores(setup, run_dir, validation)
    config = setup.config
    study = study or f"{setup.space.name}-supernet-{evaluator.identity['supernet'][:12]}"
    study_config = StudyConfig(table=config.table, data=config.data, budget_ms=budget_ms, out=str(out), trials=trials,
                               storage=storage, study=study, sampler=sampler, measure=measure, seed=config.seed,
                               force=force, fill=fill)
    return run_study(study_config, OneShotStudy(evaluator.search, evaluator, evaluator.search.task), setup.space,
                     setup.table, say, measured)
