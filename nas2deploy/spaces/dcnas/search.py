"""The DCNAS search adapter: what the generic loop runs at each step of a DCNAS search.

A step runs ``path_samples`` connections per cell, drawn uniformly in the warm-up and by
softmax(beta) after; the mixture layers always run every candidate on their
``channel_fraction`` of the channels (no op sampling: channel sampling is what keeps them cheap).
The score is measured on the connections derivation keeps (``DCNASSupernet.top_paths``).
Derivation decodes each cell's top inputs, or with ``viterbi`` the single best scale path.
"""

from __future__ import annotations

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
