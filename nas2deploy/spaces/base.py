"""The interface every search space implements, so profile / validate / search need not care which."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from nas2deploy.nets import Network
from nas2deploy.ops import OpSpec


class SearchSpace(ABC):
    """A graph of nodes and edges with candidate OpSpecs.

    It enumerates the unique OpSpecs to profile, samples concrete architectures, and names one
    reference op that every table measures for drift correction.
    """

    name: ClassVar[str]

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The JSON-able configuration that rebuilds this space (stored in table metadata)."""

    @abstractmethod
    def op_specs(self) -> list[OpSpec]:
        """Unique OpSpecs to profile (free ops such as skip excluded), in a stable order."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Sizes of the graph for ``nas2deploy space info``."""

    @abstractmethod
    def sample_arch(self, rng: random.Random) -> Network:
        """One architecture drawn at random: path uniform over out-edges, ops uniform per layer."""

    @abstractmethod
    def reference_op(self) -> OpSpec:
        """An op of this space measured alongside every table and validation, to cancel drift."""
