"""What the generic search machinery (the loop, the closed loop, the reports) needs from a space.

The loop (``search/loop.py``) owns the schedule, data, optimisers, budget controller,
checkpoints and ranks; a ``SpaceSearch`` owns the supernet, its latency model and the choices
that differ between spaces: which sub-network a weight step and an architecture step run, what
the validation score is measured on, how a network is derived, and which entropies are logged.
Each space implements it in its own package (``spaces/<name>/search.py``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class OneShotSearch(SpaceSearch, Protocol):
    """A space's search that also runs single networks of its supernet (the evolution strategy:
    ``search/oneshot.py``). A network is a *route* (the space's own value) that the supernet's
    ``forward`` runs alone, with the supernet's weights."""

    def one_shot_refusal(self) -> str | None:
        """Why this supernet, as its options built it, cannot run single networks (naming the
        option to change), or None."""
        ...

    def single_path(self, generator: torch.Generator) -> Any:
        """A route drawn as the space's sampler draws a network."""
        ...

    def suggest_route(self, trial: Any) -> Any:
        """The route a black-box trial draws (``trial.suggest_categorical``), or a finished trial holds."""
        ...

    def route_params(self, route: Any) -> dict[str, Any]:
        """The trial parameters that make ``suggest_route`` draw ``route``."""
        ...

    def route_network(self, route: Any, name: str) -> Network:
        """The network of ``route``, recording the route in its ``meta``."""
        ...

    def route_of(self, net: Network) -> Any:
        """The route a network recorded (``route_network``), checked against the space."""
        ...

    def routes_of(self, net: Network) -> list[Any]:
        """The routes that build ``net``, a network of the space that records none (derived by
        the gradient strategy, drawn by ``space sample``); empty when it is not of the space."""
        ...

    def describe_route(self, doc: Any) -> str:
        """A recorded route in words."""
        ...


def entropy(logits: torch.Tensor) -> float:
    """Mean entropy (nats) of softmax over the last dimension."""
    p = torch.softmax(logits.detach(), -1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())
