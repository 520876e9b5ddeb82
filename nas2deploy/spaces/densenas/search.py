"""The DenseNAS search adapter: what the generic loop runs at each step of a DenseNAS search.

A weight step runs one op per mixed op (uniform in the warm-up, else by softmax(alpha)); an
architecture step two, followed by the re-balancing shift; the score is measured on the argmax
ops. Derivation: argmax ops on the Viterbi path, or the best under a budget (``derive.py``).
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.search.interface import entropy
from nas2deploy.search.sampling import argmax_ops, on_device, rebalance_, sample_ops
from nas2deploy.spaces.densenas import SEARCH_DEFAULTS
from nas2deploy.spaces.densenas.derive import derive_argmax, derive_under_budget, fastest_latency, slowest_latency
from nas2deploy.spaces.densenas.latency_model import LatencyModel
from nas2deploy.spaces.densenas.space import HEAD_OPS, STACK_OPS, DenseNASSpace, Route
from nas2deploy.spaces.densenas.supernet import DenseNASSupernet, OpChoice


#: ``separate_op_weights``: the published independent candidate weights instead of shared ones
#: (``supernet.py`` says why sharing is the default).


class DenseNASSearch:
    task = "classification"
    eval_label = "argmax ops"

    def __init__(self, space: DenseNASSpace, table: LatencyTable, options: dict[str, Any] | None = None):
        unknown = set(options or {}) - set(SEARCH_DEFAULTS)
        if unknown:
            raise UserError(f"the densenas search takes {', '.join(SEARCH_DEFAULTS)}, not {', '.join(sorted(unknown))}")
        options = {**SEARCH_DEFAULTS, **(options or {})}
        self.net = DenseNASSupernet(space, bool(options["separate_op_weights"]))
        self.latency_model = LatencyModel(self.net, table)
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
        device = net.alpha_head.device
        self._old = (net.alpha_head.detach().gather(1, on_device(choice.head, device)),
                     net.alpha_stack.detach().gather(1, on_device(choice.stack, device)))
        return choice

    def after_arch_step(self, choice: OpChoice) -> None:
        assert self._old is not None
        rebalance_(self.net.alpha_head, choice.head, self._old[0])
        rebalance_(self.net.alpha_stack, choice.stack, self._old[1])

    def eval_choice(self) -> OpChoice:
        return OpChoice(argmax_ops(self.net.alpha_head), argmax_ops(self.net.alpha_stack))

    def fastest_ms(self) -> float:
        return fastest_latency(self.latency_model)

    def expected_floor(self) -> float:
        """The expected latency never falls below this: it is a mixture over architectures."""
        return self.fastest_ms()

    def latency_range(self) -> tuple[float, float]:
        """Predicted latencies of the space's fastest and slowest networks (exact)."""
        return fastest_latency(self.latency_model), slowest_latency(self.latency_model)

    def derive(self, name: str, budget_ms: float | None = None, fill: float = DEFAULT_FILL, **options: Any) -> Network:
        """Argmax ops on the Viterbi path (always: DenseNAS's path is a Viterbi decode), or the
        best under the budget."""
        if options:
            raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in options)} does not apply to the densenas space "
                            "(DenseNAS always decodes its block path by Viterbi)")
        if budget_ms is not None:
            return derive_under_budget(self.net, self.latency_model, budget_ms, name=name, fill=fill)
        return derive_argmax(self.net, name)

    def entropies(self) -> dict[str, float]:
        """Mean entropy per mixed op (head and stacking rows; a space without stacking layers
        has no stacking entry) and per block's outgoing edges."""
        net = self.net
        heads, stacks = len(net.alpha_head), len(net.alpha_stack)
        head = entropy(net.alpha_head)
        values = {"alpha_entropy": head, "alpha_head_entropy": head}
        if stacks:
            values["alpha_stack_entropy"] = entropy(net.alpha_stack)
            values["alpha_entropy"] = (head * heads + values["alpha_stack_entropy"] * stacks) / (heads + stacks)
        values["beta_entropy"] = sum(entropy(net.beta[s]) for s in net.out_slices.values()) / len(net.out_slices)
        return values

    # -- one-shot: single paths of the supernet (the evolution strategy) -------------------------
    def one_shot_refusal(self) -> str | None:
        return None  # a route runs its ops as built, independent or shared

    def single_path(self, generator: torch.Generator) -> Route:
        """A network drawn as the space's sampler draws one (``sample_route``), seeded by ``generator``."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.net.space.sample_route(random.Random(seed))

    def suggest_route(self, trial: Any) -> Route:
        """The network a black-box trial draws: from the stem, each visited block's next block
        (``n{i}_next``), then that block's head op (``n{j}_head``) and stacking ops (``n{j}_stack{l}``)."""
        space = self.net.space
        edges, heads, stacks = [], [], []
        node = 0
        while node != space.tail_node:
            nexts = [e.dst for e in space.out_edges(node)]
            dst = trial.suggest_categorical(f"n{node}_next", nexts)
            edges.append(next(e for e in space.out_edges(node) if e.dst == dst))
            node = dst
            if node != space.tail_node:
                heads.append(trial.suggest_categorical(f"n{node}_head", list(HEAD_OPS)))
                stacks.append(tuple(trial.suggest_categorical(f"n{node}_stack{l}", list(STACK_OPS))
                                    for l in range(space.stack_layers[node])))
        return Route(tuple(edges), tuple(heads), tuple(stacks))

    def route_params(self, route: Route) -> dict[str, Any]:
        params: dict[str, Any] = {}
        blocks = iter(zip(route.heads, route.stacks))
        for edge in route.edges:
            params[f"n{edge.src}_next"] = edge.dst
            if edge.dst != self.net.space.tail_node:
                head, stack = next(blocks)
                params[f"n{edge.dst}_head"] = head
                params.update({f"n{edge.dst}_stack{l}": op for l, op in enumerate(stack)})
        return params

    def route_network(self, route: Route, name: str) -> Network:
        """The Arch of ``route``, recording the route (``meta.route``) it runs as in the supernet."""
        arch = self.net.space.route_arch(route, name)
        return arch.with_meta({**arch.meta, "route": route.to_dict()})

    def route_of(self, net: Network) -> Route:
        return self.net.space.route_from_dict(net.meta.get("route"), f"network {net.name}: meta.route")

    def routes_of(self, net: Network) -> list[Route]:
        return self.net.space.routes_of_arch(net)

    def describe_route(self, doc: Any) -> str:
        """A route as read back from a study: its blocks' widths and ops (``24:k3e6+k5e3``)."""
        route = self.net.space.route_from_dict(doc)
        widths = self.net.space.widths
        return " ".join(f"{widths[e.dst]}:{'+'.join([h, *stack])}"
                        for e, h, stack in zip([e for e in route.edges if e.dst != self.net.space.tail_node],
                                               route.heads, route.stacks))
