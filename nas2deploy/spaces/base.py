"""What a search space is, and the one object it registers.

A ``SearchSpace`` enumerates the unique OpSpecs to profile, samples concrete networks, and names
one reference op for drift correction. A space registers a ``SpaceEntry``: its name, task and
config class, the options commands take for it, its built-in data, how to make its search (the
``SpaceSearch`` the loop drives), its report plots and its demo. Everything that differs between
spaces hangs off that entry, so a new space is one package and one registration
(``nas2deploy.spaces.register``), and no module outside ``spaces/`` compares space names.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.ops import OpSpec
from nas2deploy.search.interface import SpaceSearch


class SearchSpace(ABC):
    """A graph of nodes and edges with candidate OpSpecs."""

    name: ClassVar[str]

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The JSON-able configuration that rebuilds this space (stored in table metadata)."""

    @abstractmethod
    def op_specs(self) -> list[OpSpec]:
        """Unique OpSpecs to profile (free ops such as skip excluded), in a stable order."""

    @abstractmethod
    def counts(self) -> dict[str, Any]:
        """Sizes of the graph for ``nas2deploy space info``."""

    @abstractmethod
    def sample_arch(self, rng: random.Random) -> Network:
        """One architecture drawn at random: path uniform over out-edges, ops uniform per layer."""

    @abstractmethod
    def reference_op(self) -> OpSpec:
        """An op of this space measured alongside every table and validation, to cancel drift."""

    def latency_range(self, table: LatencyTable) -> tuple[float, float] | None:
        """The predicted latencies of this space's fastest and slowest network under ``table``,
        where the space computes them itself; None where its search's derivation does
        (``SpaceSearch.latency_range``)."""
        return None


@dataclass(frozen=True)
class SpaceOption:
    """A field of a space's configuration (``scope`` "space") or of its search ("search"), or a
    derivation choice ("derive"), that commands take as an option: ``--input-size``,
    ``--path-samples``, ``--viterbi``. ``kind`` is int, float, str or flag; ``low`` bounds it."""

    field: str
    kind: str
    help: str
    scope: tuple[str, ...] = ("space",)
    low: float | None = None
    high: float | None = None

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


Plots = Callable[[Path, SpaceSearch, LatencyTable], list[str]]


@dataclass(frozen=True)
class SpaceEntry:
    """Everything the rest of nas2deploy needs to know about one space."""

    name: str
    task: str
    config_class: type
    make: Callable[[Any], SearchSpace]
    #: the space's differentiable search (supernet, latency model, derivation) for a table and
    #: search options (a space that is not searched that way refuses here: DPC)
    make_search: Callable[[Any, LatencyTable, dict[str, Any]], SpaceSearch]
    builtin_data: str
    options: tuple[SpaceOption, ...] = ()
    #: the search options and their defaults (``search`` and ``derive`` scoped options)
    search_defaults: dict[str, Any] = field(default_factory=dict)
    plots: Plots | None = None
    demo: DemoPlan | None = None
    #: the space's black-box search, where it has one instead of ``make_search`` (DPC): run by
    #: ``nas2deploy search`` with the table, the space, a progress callback and the search's
    #: options, returning its summary
    study: Callable[..., dict[str, Any]] | None = None

    def option_fields(self, scope: str) -> list[str]:
        return [o.field for o in self.options if scope in o.scope]
