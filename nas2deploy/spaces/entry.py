"""What a search space registers: its ``SpaceEntry``.

An entry says, as plain data, what the command line and the rest of nas2deploy need before any
network is built: the space's name and task, the options commands take for it (``SpaceOption``:
its configuration, its search, its derivation, its black-box study), its built-in data and its
demo. What needs torch (the space itself, its supernet search, its plots, its black-box study) is
reached through ``parts``, a function the package defines that imports them when first asked, so
reading the registry costs no more than importing this module: ``nas2deploy search --space dcnas
--help`` answers without loading torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from nas2deploy.latency.table import LatencyTable
    from nas2deploy.search.blackbox.space import BlackBoxSpace
    from nas2deploy.search.interface import SpaceSearch
    from nas2deploy.spaces.base import SearchSpace

#: The scopes of a space's options: its configuration, its supernet search, a derivation choice,
#: its black-box study.
SCOPES = ("space", "search", "derive", "study")


@dataclass(frozen=True)
class SpaceOption:
    """A field of a space's configuration (``scope`` "space"), of its supernet search ("search"),
    a derivation choice ("derive") or an option of its black-box study ("study"), that commands
    take as an option: ``--input-size``, ``--path-samples``, ``--viterbi``, ``--proxy-epochs``.
    ``kind`` is int, float, str or flag; ``low`` and ``high`` bound it. A study option has its
    ``default`` here, or is ``required`` (a DPC study's backbone weights); the other scopes take
    their defaults from the space's configuration class and ``search_defaults``."""

    field: str
    kind: str
    help: str
    scope: tuple[str, ...] = ("space",)
    low: float | None = None
    high: float | None = None
    required: bool = False
    default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


@dataclass(frozen=True)
class DemoPlan:
    """What ``nas2deploy demo`` runs for a space: a small configuration, its built-in data and a
    search short enough for 2 cores, then training settings and the budget rule."""

    space_config: dict[str, Any]
    data: str
    table_name: str
    #: a table shipped with the package, used when it was measured on this kind of CPU
    shipped: Path | None
    search: dict[str, Any]  # SearchConfig fields of the demo-sized search
    train_epochs: int
    train_batch: int
    train_lr: float
    #: the budget from the (fastest, slowest) predicted latency the derivation reaches
    budget: Callable[[float, float], float]


Plots = Callable[[Path, "SpaceSearch", "LatencyTable"], list[str]]


@dataclass(frozen=True)
class SpaceParts:
    """The parts of a space that need torch, imported when first used: its configuration class,
    how to make the space from it, its supernet search (``SpaceSearch``: a space searched by the
    gradient loop) and the report's plots of it, and its black-box study (``BlackBoxSpace``: a
    space searched trial by trial). A space has a supernet search, a study, or both."""

    config_class: type
    make: Callable[[Any], SearchSpace]
    make_search: Callable[[Any, LatencyTable, dict[str, Any]], SpaceSearch] | None = None
    plots: Plots | None = None
    study: BlackBoxSpace | None = None


@dataclass(frozen=True)
class SpaceEntry:
    """Everything the rest of nas2deploy needs to know about one space."""

    name: str
    task: str
    builtin_data: str
    #: the function that imports the space's parts (``SpaceParts``), called once, when first needed
    parts: Callable[[], SpaceParts]
    options: tuple[SpaceOption, ...] = ()
    #: the supernet search's options and their defaults (``search`` and ``derive`` scoped options)
    search_defaults: dict[str, Any] = field(default_factory=dict)
    #: the defaults the evolution strategy changes (DCNAS: full-width candidates, which single
    #: networks of the supernet need)
    one_shot_defaults: dict[str, Any] = field(default_factory=dict)
    demo: DemoPlan | None = None
    #: whether the space is searched by a supernet (``search`` runs the gradient loop) or trial by
    #: trial (``search`` runs its black-box study); known without importing the parts
    searched_by: str = "supernet"

    def defaults_for(self, strategy: str) -> dict[str, Any]:
        """The search options' defaults under ``strategy`` (gradient or evolution)."""
        return {**self.search_defaults, **(self.one_shot_defaults if strategy == "evolution" else {})}

    def option_fields(self, scope: str) -> list[str]:
        return [o.field for o in self.options if scope in o.scope]

    def scoped(self, *scopes: str) -> list[SpaceOption]:
        """The options of any of ``scopes``, in declaration order."""
        return [o for o in self.options if set(o.scope) & set(scopes)]

    @property
    def loaded(self) -> SpaceParts:
        return _load(self.parts)

    @property
    def config_class(self) -> type:
        return self.loaded.config_class

    @property
    def make(self) -> Callable[[Any], SearchSpace]:
        return self.loaded.make

    @property
    def study(self) -> BlackBoxSpace | None:
        return self.loaded.study

    @property
    def plots(self) -> Plots | None:
        return self.loaded.plots

    def make_search(self, space: Any, table: LatencyTable, options: dict[str, Any]) -> SpaceSearch:
        """The space's supernet search for a table and search options; a space searched only
        black-box refuses here, naming how it is searched."""
        make = self.loaded.make_search
        if make is None:
            from nas2deploy.errors import UserError

            raise UserError(f"the {self.name} space has no supernet search: it is searched trial by trial "
                            f"(nas2deploy search --space {self.name} --budget-ms X --trials N)")
        return make(space, table, options)


@functools.cache
def _load(parts: Callable[[], SpaceParts]) -> SpaceParts:
    return parts()
