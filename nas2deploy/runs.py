"""Search runs from their configuration: one preparation path for starting a search and for
re-opening a finished one (``derive``, ``report``, the demo).

``prepare`` resolves a ``SearchConfig`` against the registry (the space's built-in data, its
options checked), loads the table, builds the space the table was profiled for with the
config's overrides (the table must cover it), seeds torch and makes the space's search.
``start_search`` adds the data and hands everything to a ``SearchRun``; ``open_run`` rebuilds the
space's search from a run folder's checkpoint, without the data.
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
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.search.config import SearchConfig, parse_crop, provenance
from nas2deploy.search.distributed import DEFAULT_TIMEOUT_S, join_process_group, compute_device
from nas2deploy.search.interface import SpaceSearch
from nas2deploy.search.loop import SearchRun
from nas2deploy.search.run_folder import RunFolder
from nas2deploy.spaces import SearchSpace, SpaceEntry, get_space, load_table, make_space, require_covers, space_overrides
from nas2deploy.spaces.base import SpaceOption
from nas2deploy.validate import Field


def _option_value(option: SpaceOption, value: Any, where: str) -> Any:
    """A search option's value checked by its declared kind and bounds."""
    f = Field(value, where, "give a valid value", option.field)
    if option.kind == "flag":
        return f.bool()
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
                      for k, v in given.items() if v != entry.search_defaults.get(k)}
    return dataclasses.replace(config, data=config.data or entry.builtin_data, search_options=search_options)


def space_for(config: SearchConfig, table: LatencyTable) -> SearchSpace:
    """The space a search explores: the table's, with the config's overrides; the table must cover it."""
    space_meta = table.meta.get("space", {})
    if space_meta.get("name") != config.space:
        raise UserError(f"latency table {config.table} was profiled for space {space_meta.get('name')!r}, not {config.space!r}")
    space = make_space(config.space, {**space_meta.get("config", {}), **config.space_config})
    require_covers(table, space)
    return space


@dataclass
class Prepared:
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


def prepare(config: SearchConfig, table: LatencyTable | None = None) -> Prepared:
    """The config resolved, its table (``table``, where the caller has already loaded
    ``config.table``), its space and its search."""
    config = resolve(config)
    config.check()
    entry = get_space(config.space)
    table = table or load_table(config.table)
    space = space_for(config, table)
    torch.manual_seed(config.seed)  # the supernet's initial weights
    space_search = entry.make_search(space, table, {**entry.search_defaults, **config.search_options})
    if not space_search.expected_floor() > 0:  # log of the expected latency would be NaN
        raise UserError(f"latency table {config.table}: its calibration (offset_ms {table.offset_ms:g}) lets the "
                        "expected latency fall to 0 ms or below; run `nas2deploy lut validate` again")
    return Prepared(config, entry, table, space, space_search)


def start_search(config: SearchConfig, run_dir: str | Path, resume: bool = False,
                 progress: Callable[[str], None] | None = None, dist_backend: str = "auto",
                 dist_timeout_s: float = DEFAULT_TIMEOUT_S, force: bool = False) -> SearchRun:
    """A search run of ``config`` writing ``run_dir`` (resumed from its checkpoint with ``resume``;
    with ``force``, into a folder holding other files or another search, which it replaces), on
    its device; under torchrun, this rank joins the process group first (``nas2deploy.search.distributed``)."""
    folder = RunFolder(run_dir)  # before any work: a link planted in the run folder is refused
    folder.claim(resume, force)  # every rank, before any rank can write (they meet in the process group first)
    prepared = prepare(config)
    config, space_search = prepared.config, prepared.space_search
    device = compute_device(config.device)  # before the data: a missing GPU is said at once
    join_process_group(device, dist_backend, dist_timeout_s)
    size, classes = (prepared.space.config_dict()[k] for k in ("input_size", "num_classes"))
    data = open_dataset(config.data, size, config.data_classes, parse_crop(config.crop))
    if data.task != space_search.task:
        raise UserError(f"the {config.space} space searches {space_search.task} networks, data {config.data} is {data.task} data")
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


def open_run(run_dir: str | Path) -> Prepared:
    """A finished (or interrupted) run's search, rebuilt from its checkpoint without the data."""
    state = RunFolder(run_dir).load_checkpoint()
    prepared = prepare(SearchConfig(**state["config"]))
    try:
        prepared.space_search.net.load_state_dict(state["net"])
    except RuntimeError:
        raise UserError(f"run {run_dir}: checkpoint.pt does not fit the space of table {prepared.config.table}; "
                        "was the table replaced?") from None
    return prepared
