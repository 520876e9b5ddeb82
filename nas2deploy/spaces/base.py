"""What a search space is: a ``SearchSpace`` enumerates the unique OpSpecs to profile, samples
concrete networks, and names one reference op for drift correction.

A space package registers a ``SpaceEntry`` (``spaces/entry.py``) that makes its space, its
search and its plots; everything that differs between spaces hangs off that entry, so a new
space is one package and one registration (``nas2deploy.spaces.register``), and no module
outside ``spaces/`` compares space names.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from nas2deploy.latency.table import LatencyTable
    from nas2deploy.nets import Network
    from nas2deploy.ops import OpSpec


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
