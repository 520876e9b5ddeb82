"""The DCNAS search adapter: what the generic loop runs at each step of a DCNAS search.

A step runs ``path_samples`` connections per cell, drawn uniformly in the warm-up and by
softmax(beta) after; the mixture layers always run every candidate on their
``channel_fraction`` of the channels (no op sampling: channel sampling is what keeps them cheap).
The score is measured on the connections derivation keeps (``DCNASSupernet.top_paths``).
Derivation decodes each cell's top inputs, or with ``viterbi`` the single best scale path.

The evolution strategy runs single networks of the supernet (a *route*: a network's cells, each
with its inputs and op); its candidates are built at full width (``channel_fraction`` 1, that
strategy's default), so that a candidate is the op a network deploys.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import torch
from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.search.interface import entropy
import nas2deploy.spaces.dcnas.derive as derivation
from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel
from nas2deploy.spaces.dcnas.space import DCNASSpace
from nas2deploy.spaces.dcnas import SEARCH_DEFAULTS
from nas2deploy.nets.cells import STEM, Cell
from nas2deploy.spaces.dcnas.supernet import DCNASSupernet, PathSample

#: The search options of the space and their defaults (the CLI's --path-samples, ...).


class DCNASSearch:
    task = "segmentation"
    eval_label = "top connections"

    def __init__(self, space: DCNASSpace, table: LatencyTable, options: dict[str, Any] | None = None):
        unknown = set(options or {}) - set(SEARCH_DEFAULTS)
        if unknown:
            raise UserError(f"the dcnas search takes {', '.join(SEARCH_DEFAULTS)}, not {', '.join(sorted(unknown))}")
        self.options = {**SEARCH_DEFAULTS, **(options or {})}
        self.net = DCNASSupernet(space, self.options["path_samples"], self.options["channel_fraction"])
        self.latency_model = DCNASLatencyModel(self.net, table)

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.net.arch_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        return self.net.weight_parameters()

    def weight_choice(self, warm: bool, generator: torch.Generator) -> PathSample:
        return self.net.sample_paths(generator, uniform=warm)

    def arch_choice(self, generator: torch.Generator) -> PathSample:
        return self.net.sample_paths(generator)

    def after_arch_step(self, choice: PathSample) -> None:
        """Nothing to restore: the renormalised fusion weights already confine each step's
        update to the sampled connections' share."""

    def eval_choice(self) -> PathSample:
        return self.net.top_paths()

    def fastest_ms(self) -> float:
        return derivation.fastest_latency(self.net, self.latency_model, self.options["viterbi"])

    def expected_floor(self) -> float:
        """The relaxed expected latency never falls below this: the fixed part plus the last
        layer's cells (always alive) at their cheapest op; transforms cost >= 0."""
        model = self.latency_model
        return model.fixed + sum(model.fusion[c] + float(model.ops[i].min()) for i, c in enumerate(self.net.cells)
                                 if c[0] == self.net.space.config.layers - 1)

    def latency_range(self) -> tuple[float, float]:
        """Predicted latencies of the fastest and slowest networks the budget derivation reaches."""
        return derivation.latency_range(self.net, self.latency_model, self.options["viterbi"])

    def derive(self, name: str, budget_ms: float | None = None, fill: float = DEFAULT_FILL, **options: Any) -> Network:
        viterbi = bool(options.pop("viterbi", self.options["viterbi"]))
        if options:
            raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in options)} does not apply to dcnas derivation")
        if budget_ms is not None:
            return derivation.derive_under_budget(self.net, self.latency_model, budget_ms, name, fill, viterbi)
        return derivation.derive(self.net, name, viterbi)

    def entropies(self) -> dict[str, float]:
        net = self.net
        return {
            "alpha_entropy": entropy(net.alpha),
            "beta_entropy": sum(entropy(net.beta[s]) for s in net.slices.values()) / len(net.slices),
        }

    # -- one-shot: single networks of the supernet (the evolution strategy) ----------------------
    def one_shot_refusal(self) -> str | None:
        if self.net.full_width():
            return None
        return (f"its candidates see {self.options['channel_fraction']:g} of each cell's channels; single networks need "
                "them whole: give --channel-fraction 1 (the evolution strategy's default)")

    def single_path(self, generator: torch.Generator) -> tuple[Cell, ...]:
        """A network drawn as the space's sampler draws one (``sample_route``), seeded by ``generator``."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.net.space.sample_route(random.Random(seed))

    def suggest_route(self, trial: Any) -> tuple[Cell, ...]:
        """The network a black-box trial draws: from the output block back, each cell that feeds
        it its inputs (``c{layer}_{scale}_inputs``, one of the sets of ``derive_inputs`` candidate
        inputs) and its op (``c{layer}_{scale}_op``); cells nothing reads are never drawn."""
        space = self.net.space
        alive = {c for c in space.cells if c[0] == space.config.layers - 1}
        chosen: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {}
        ops: dict[tuple[int, int], str] = {}
        for cell in reversed(space.cells):
            if cell in alive:
                sets = _input_sets(space.inputs[cell], space.config.derive_inputs)
                chosen[cell] = _parse_set(trial.suggest_categorical(f"c{cell[0]}_{cell[1]}_inputs", sets))
                ops[cell] = trial.suggest_categorical(f"c{cell[0]}_{cell[1]}_op", list(space.config.ops))
                alive.update(src for src in chosen[cell] if src != STEM)
        return space.arch_from(chosen, ops, "route").cells

    def route_params(self, route: tuple[Cell, ...]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for c in route:
            params[f"c{c.layer}_{c.scale}_inputs"] = _set_name(c.inputs)
            params[f"c{c.layer}_{c.scale}_op"] = c.op
        return params

    def route_network(self, route: tuple[Cell, ...], name: str) -> Network:
        """The SegArch of ``route``, recording the route (``meta.route``) it runs as in the supernet."""
        arch = self.net.space.make_arch(route, name)
        return arch.with_meta({**arch.meta, "route": self.net.space.route_to_dict(route)})

    def route_of(self, net: Network) -> tuple[Cell, ...]:
        return self.net.space.route_from_dict(net.meta.get("route"), f"network {net.name}: meta.route")

    def routes_of(self, net: Network) -> list[tuple[Cell, ...]]:
        return self.net.space.routes_of_arch(net)

    def describe_route(self, doc: Any) -> str:
        """A route as read back from a study: its cells per scale and its ops (``12 cells, 1/4:3
        1/8:4 ..., sep3 x5 sep5 x4 ...``)."""
        route = self.net.space.route_from_dict(doc)
        scales = " ".join(f"1/{4 * 2**s}:{n}" for s in range(4) if (n := sum(c.scale == s for c in route)))
        ops = " ".join(f"{op} x{n}" for op in self.net.space.config.ops if (n := sum(c.op == op for c in route)))
        return f"{len(route)} cells, {scales}, {ops}"


def _set_name(inputs: tuple[tuple[int, int], ...]) -> str:
    """A set of inputs as a trial's categorical value: ``-1.0+2.1`` (layer.scale, the stem -1.0)."""
    return "+".join(f"{l}.{s}" for l, s in sorted(inputs))


def _parse_set(name: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(v) for v in part.split(".")) for part in name.split("+"))  # type: ignore[misc]


def _input_sets(inputs: list[tuple[int, int]], k: int) -> list[str]:
    """Every set of ``k`` of a cell's candidate inputs (all of them where it has fewer)."""
    return [_set_name(c) for c in itertools.combinations(sorted(inputs), min(k, len(inputs)))]
