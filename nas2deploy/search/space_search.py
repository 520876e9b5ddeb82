"""What the search loop needs from each space, behind one interface.

The loop (``search/loop.py``) owns the schedule, data, optimisers, budget controller,
checkpoints and ranks; a ``SpaceSearch`` owns the supernet, its latency model and the choices
that differ between spaces: which sub-network a weight step and an architecture step run, what
the validation score is measured on, how a network is derived, and which entropies are logged.

- DenseNAS (classification): a weight step runs one op per mixed op (uniform in the warm-up,
  else by softmax(alpha)); an architecture step two, followed by the re-balancing shift; the
  score is measured on the argmax ops.
- DCNAS (segmentation): a step runs ``path_samples`` connections per cell, drawn uniformly in
  the warm-up and by softmax(beta) after; the mixture layers always run every candidate on
  their channel fraction (no op sampling: channel sampling is what keeps them cheap). The
  score is measured on the connections derivation keeps (``DCNASSupernet.top_paths``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from nas2deploy.nets import Network
from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.search import dcnas_derive, derive
from nas2deploy.search.dcnas_latency import DCNASLatencyModel
from nas2deploy.search.dcnas_supernet import DCNASSupernet
from nas2deploy.search.expected_latency import LatencyModel
from nas2deploy.search.sampling import argmax_ops, rebalance_, sample_ops
from nas2deploy.search.supernet import DenseNASSupernet, OpChoice
from nas2deploy.spaces import SearchSpace
from nas2deploy.spaces.dcnas import DCNASSpace
from nas2deploy.spaces.densenas import DenseNASSpace


def entropy(logits: torch.Tensor) -> float:
    """Mean entropy (nats) of softmax over the last dimension."""
    p = torch.softmax(logits.detach(), -1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())


class SpaceSearch(Protocol):
    task: str

    @property
    def net(self) -> nn.Module: ...
    @property
    def model(self) -> Any: ...  # the space's latency model: callable, differentiable expected latency (ms)

    def arch_parameters(self) -> list[nn.Parameter]: ...
    def weight_parameters(self) -> list[nn.Parameter]: ...
    def weight_choice(self, warm: bool, generator: torch.Generator) -> Any: ...
    def arch_choice(self, generator: torch.Generator) -> Any: ...
    def after_arch_step(self, choice: Any) -> None: ...
    def eval_choice(self) -> Any: ...
    def fastest_ms(self) -> float: ...
    def expected_floor(self) -> float: ...
    def latency_range(self) -> tuple[float, float]: ...
    def derive(self, name: str, budget_ms: float | None = None, fill: float = derive.DEFAULT_FILL,
               viterbi: bool = False) -> Network: ...
    def entropies(self) -> dict[str, float]: ...


class DenseNASSearch:
    task = "classification"

    def __init__(self, space: DenseNASSpace, table: LatencyTable):
        self.net = DenseNASSupernet(space)
        self.model = LatencyModel(self.net, table)
        self._old: tuple[torch.Tensor, torch.Tensor] | None = None

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.net.arch_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        return self.net.weight_parameters()

    def weight_choice(self, warm: bool, generator: torch.Generator) -> OpChoice:
        net = self.net
        return OpChoice(sample_ops(net.alpha_head, 1, warm, generator), sample_ops(net.alpha_stack, 1, warm, generator))

    def arch_choice(self, generator: torch.Generator) -> OpChoice:
        net = self.net
        choice = OpChoice(sample_ops(net.alpha_head, 2, False, generator), sample_ops(net.alpha_stack, 2, False, generator))
        self._old = (net.alpha_head.detach().gather(1, choice.head), net.alpha_stack.detach().gather(1, choice.stack))
        return choice

    def after_arch_step(self, choice: OpChoice) -> None:
        assert self._old is not None
        rebalance_(self.net.alpha_head, choice.head, self._old[0])
        rebalance_(self.net.alpha_stack, choice.stack, self._old[1])

    def eval_choice(self) -> OpChoice:
        return OpChoice(argmax_ops(self.net.alpha_head), argmax_ops(self.net.alpha_stack))

    def fastest_ms(self) -> float:
        return derive.fastest_latency(self.model)

    def expected_floor(self) -> float:
        """The expected latency never falls below this: it is a mixture over architectures."""
        return self.fastest_ms()

    def latency_range(self) -> tuple[float, float]:
        """Predicted latencies of the space's fastest and slowest networks (exact)."""
        return derive.fastest_latency(self.model), derive.slowest_latency(self.model)

    def derive(self, name: str, budget_ms: float | None = None, fill: float = derive.DEFAULT_FILL,
               viterbi: bool = False) -> Network:
        """Argmax ops on the Viterbi path (always: DenseNAS's path is a Viterbi decode), or the
        best under the budget."""
        if viterbi:
            raise UserError("--viterbi is a DCNAS option: DenseNAS always decodes its block path by Viterbi")
        if budget_ms is not None:
            return derive.derive_under_budget(self.net, self.model, budget_ms, name=name, fill=fill)
        return derive.derive_argmax(self.net, name)

    def entropies(self) -> dict[str, float]:
        net = self.net
        return {
            "alpha_entropy": entropy(torch.cat([net.alpha_head.flatten(), net.alpha_stack.flatten()]).view(1, -1)),
            "alpha_head_entropy": entropy(net.alpha_head),
            "alpha_stack_entropy": entropy(net.alpha_stack),
            "beta_entropy": sum(entropy(net.beta[s]) for s in net.out_slices.values()) / len(net.out_slices),
        }


class DCNASSearch:
    task = "segmentation"

    def __init__(self, space: DCNASSpace, table: LatencyTable, path_samples: int, channel_fraction: float):
        self.net = DCNASSupernet(space, path_samples, channel_fraction)
        self.model = DCNASLatencyModel(self.net, table)

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.net.arch_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        return self.net.weight_parameters()

    def weight_choice(self, warm: bool, generator: torch.Generator) -> Any:
        return self.net.sample_paths(generator, uniform=warm)

    def arch_choice(self, generator: torch.Generator) -> Any:
        return self.net.sample_paths(generator)

    def after_arch_step(self, choice: Any) -> None:
        """Nothing to restore: the renormalised fusion weights already confine each step's
        update to the sampled connections' share."""

    def eval_choice(self) -> Any:
        return self.net.top_paths()

    def fastest_ms(self) -> float:
        return dcnas_derive.fastest_latency(self.net, self.model)

    def expected_floor(self) -> float:
        """The relaxed expected latency never falls below this: the fixed part plus the last
        layer's cells (always alive) at their cheapest op; transforms cost >= 0."""
        model = self.model
        return model.fixed + sum(model.fusion[c] + float(model.ops[i].min()) for i, c in enumerate(self.net.cells)
                                 if c[0] == self.net.space.config.layers - 1)

    def latency_range(self) -> tuple[float, float]:
        """Predicted latencies of the fastest and slowest networks the budget derivation reaches."""
        return dcnas_derive.latency_range(self.net, self.model)

    def derive(self, name: str, budget_ms: float | None = None, fill: float = derive.DEFAULT_FILL,
               viterbi: bool = False) -> Network:
        if budget_ms is not None:
            return dcnas_derive.derive_under_budget(self.net, self.model, budget_ms, name, fill, viterbi)
        return dcnas_derive.derive(self.net, name, viterbi)

    def entropies(self) -> dict[str, float]:
        net = self.net
        return {
            "alpha_entropy": entropy(net.alpha),
            "beta_entropy": sum(entropy(net.beta[s]) for s in net.slices.values()) / len(net.slices),
        }


def make_space_search(space: SearchSpace, table: LatencyTable, path_samples: int, channel_fraction: float) -> SpaceSearch:
    if isinstance(space, DenseNASSpace):
        return DenseNASSearch(space, table)
    if isinstance(space, DCNASSpace):
        return DCNASSearch(space, table, path_samples, channel_fraction)
    raise UserError(f"no search for the {space.name} space")
