"""What the generic search machinery (the loop, the closed loop, the reports) needs from a space.

The loop (``search/loop.py``) owns the schedule, data, optimisers, budget controller,
checkpoints and ranks; a ``SpaceSearch`` owns the supernet, its latency model and the choices
that differ between spaces: which sub-network a weight step and an architecture step run, what
the validation score is measured on, how a network is derived, and which entropies are logged.
Each space implements it in its own package (``spaces/<name>/search.py``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network


class LatencyModel(Protocol):
    """A space's differentiable expected latency, priced by ``table``."""

    table: LatencyTable

    def __call__(self) -> torch.Tensor:
        """The supernet's current expected latency (ms), differentiable in alpha and beta."""
        ...


class SpaceSearch(Protocol):
    task: str
    #: what the validation score is measured on, for people ("argmax ops", "top connections")
    eval_label: str

    @property
    def net(self) -> nn.Module: ...
    @property
    def latency_model(self) -> LatencyModel: ...

    def arch_parameters(self) -> list[nn.Parameter]: ...
    def weight_parameters(self) -> list[nn.Parameter]: ...
    def weight_choice(self, warm: bool, generator: torch.Generator) -> Any: ...
    def arch_choice(self, generator: torch.Generator) -> Any: ...
    def after_arch_step(self, choice: Any) -> None: ...
    def eval_choice(self) -> Any: ...
    def fastest_ms(self) -> float: ...
    def expected_floor(self) -> float: ...
    def latency_range(self) -> tuple[float, float]: ...
    def derive(self, name: str, budget_ms: float | None = None, fill: float = ..., **options: Any) -> Network: ...
    def entropies(self) -> dict[str, float]: ...


def entropy(logits: torch.Tensor) -> float:
    """Mean entropy (nats) of softmax over the last dimension."""
    p = torch.softmax(logits.detach(), -1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())
