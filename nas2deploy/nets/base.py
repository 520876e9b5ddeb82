"""The one interface every kind of derived network implements.

A network is plain data (a frozen dataclass), decoded by one builder, in the spirit of timm's
EfficientNet builder: ``op_specs()`` lists the OpSpecs of the deployed layers (the latency table
prices exactly these), ``groups()`` the same ops by block or cell (``arch info``, reports),
``build()`` the torch module made of those specs' modules, ``to_dict()`` / ``from_field()`` its
JSON. The ``kind`` field of the JSON names the class (``nas2deploy.nets.KINDS``), so a third
kind (a backbone with a DPC head, say) is one more module and one registry line.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.ops import OpSpec
from nas2deploy.validate import NETWORK_FIX, Field

N = TypeVar("N", bound="Network")


class Network(ABC):
    #: The JSON ``kind`` of this class, and the task its outputs serve (classification, segmentation).
    kind: ClassVar[str]
    task: ClassVar[str]
    #: What ``groups()`` are called in summaries: "blocks", "cells".
    unit: ClassVar[str]

    # Fields every kind has (declared by the dataclass of each kind).
    name: str
    input_size: int
    num_classes: int
    meta: dict[str, Any]

    @abstractmethod
    def op_specs(self, include_free: bool = False) -> list[OpSpec]:
        """Every deployed layer's OpSpec in execution order; ``include_free`` keeps skips."""

    @abstractmethod
    def groups(self) -> list[tuple[str, list[OpSpec]]]:
        """The deployed ops grouped for people: stem, each block or cell, head or tail."""

    @abstractmethod
    def build(self, affine: bool = True) -> nn.Module:
        """The deployable torch module; every layer is ``spec.build()`` of its OpSpec."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The JSON document (with ``format``, ``version``, ``kind``)."""

    @classmethod
    @abstractmethod
    def from_field(cls, doc: Field) -> Network:
        """Validate a JSON document field by field (``nas2deploy.validate``)."""

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<arch>") -> Network:
        return cls.from_field(Field(doc, f"arch {source}", NETWORK_FIX))

    @abstractmethod
    def units(self) -> int:
        """How many blocks or cells the network has."""

    def layout(self) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str]]]:
        """Where a diagram draws each of ``groups()`` (x, y) and which feeds which: by default a
        chain left to right; a kind whose groups form another graph says so."""
        names = [name for name, _ in self.groups()]
        return {name: (float(i), 0.0) for i, name in enumerate(names)}, list(zip(names, names[1:]))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) of one input: square ``input_size`` unless a kind says otherwise."""
        return 3, self.input_size, self.input_size

    def at_input(self: N, height: int, width: int) -> N:
        """The same network for another input size, validated again as if read from a file."""
        if height != width:
            raise UserError(f"a {self.kind} network takes square inputs, not {height}x{width}")
        return type(self).from_dict({**self.to_dict(), "input_size": height}, self.name)  # type: ignore[return-value]

    def for_data(self: N, height: int, width: int, num_classes: int) -> N:
        """The same layers at another input size with another number of classes (its logits),
        validated again: a shipped network trained on a user's data (a classification chain
        trained as a DPC backbone keeps the shapes of every layer the backbone takes)."""
        resized = self.at_input(height, width)
        return type(self).from_dict({**resized.to_dict(), "num_classes": num_classes}, self.name)  # type: ignore[return-value]

    def figures(self) -> dict[str, Any]:
        """Figures of this kind that ``arch info`` adds (a DPC network: its context module's size)."""
        return {}

    def size_label(self) -> str:
        return f"{self.units()} {self.unit}"

    def with_meta(self: N, meta: dict[str, Any]) -> N:
        """The same network recording where it came from (budget, table, data, space)."""
        return dataclasses.replace(self, meta=meta)  # type: ignore[type-var]

    def renamed(self: N, name: str) -> N:
        return dataclasses.replace(self, name=name)  # type: ignore[type-var]
