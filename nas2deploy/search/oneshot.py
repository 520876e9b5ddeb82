"""The evolution strategy: single-path one-shot NAS (Guo et al. 2020, "Single Path One-Shot Neural
Architecture Search with Uniform Sampling") on a space's supernet, searched by the black-box
search.

1. **The supernet** trains its weights on networks drawn uniformly, one per step (the search loop
   with ``strategy="evolution"``; a space's ``OneShotSearch`` draws and runs them).
2. **A network's score** is its accuracy with the weights it inherits from the supernet
   (``InheritedScore``): its batch-norm statistics recalibrated on ``CALIBRATION`` training images
   first (as SPOS does: the supernet's running statistics mix every network's), then scored on
   the validation split, carved from the training images and never trained on (the search
   loop's architecture split, unused by a one-shot supernet). The test split is left for the
   final networks.
3. **The search** is a black-box study (``search/blackbox``) whose trials are networks of the
   space (``OneShotStudy``: the space's ``suggest_route``), pruned untrained when the table
   predicts them outside the budget's window, scored as above; by default with SPOS's own
   evolution (``storage.SposEvolution``: top-k parents, mutation and crossover). The study's
   storage, workers, re-ranking and closed loop are the black-box search's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nas2deploy.data import Splits
from nas2deploy.data.splits import split_indices
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.objective import METRIC, Score
from nas2deploy.search.blackbox.space import BlackBoxSpace, Evaluator, TrialScore
from nas2deploy.search.blackbox.study import StudyConfig
from nas2deploy.search.config import VALIDATION, SearchConfig
from nas2deploy.search.interface import OneShotSearch

#: Draws per network of the first population before a window is declared too narrow to fill.
DRAWS = 2000
#: Training images whose statistics each network's batch norms are recalibrated on (SPOS: 20,000
#: ImageNet images; a few hundred settle the statistics of the small networks searched here).
CALIBRATION = 512


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate(model: nn.Module, forward: Callable[[torch.Tensor], object], batches: list[torch.Tensor]) -> None:
    """Set the running statistics of ``model``'s batch norms to the plain average over
    ``batches`` of what ``forward`` (one network of the supernet) computes: each norm's statistics
    reset, then batch k given momentum 1 / (k + 1), so that after the last one they are the mean
    of every batch's (the norms the network does not use keep the reset values, and are not read)."""
    norms = batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
    model.train()
    try:
        for k, x in enumerate(batches):
            for m in norms:
                m.momentum = 1.0 / (k + 1)
            forward(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


@dataclasses.dataclass(frozen=True)
class Holdout:
    """The training images a one-shot search scores networks with: ``calibration`` (for the batch
    norms; from the weights' split) and ``validation`` (the score; the architecture split)."""

    calibration: list[int]
    validation: list[int]

    @staticmethod
    def of(config: SearchConfig, data: Splits, validation: int = VALIDATION) -> Holdout:
        """The search loop's own split of the training images (``split_indices``): the weights
        trained on the first part, which gives the calibration images; the second part was never
        trained on by a one-shot supernet, and scores networks (its first ``validation`` images;
        0: all of them)."""
        train, val = split_indices(len(data.train), config.val_fraction, config.seed)  # type: ignore[arg-type]
        return Holdout(train[:CALIBRATION], val[:validation] if validation else val)


class InheritedScore(Evaluator):
    """A network's score with its inherited weights (the module docstring, step 2)."""

    def __init__(self, search: OneShotSearch, data: Splits, holdout: Holdout, batch_size: int, device: torch.device,
                 channels_last: bool, identity: dict[str, Any]):
        self.search, self.data, self.holdout, self.identity = search, data, holdout, identity
        self.batch_size, self.device, self.channels_last = batch_size, device, channels_last
        self.calibration = self._stack(holdout.calibration)[0]
        self.validation = self._stack(holdout.validation)

    def _stack(self, indices: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The images (evaluation view) and labels of ``indices``, in batches on the device."""
        xs, ys = [], []
        for start in range(0, len(indices), self.batch_size):
            items = [self.data.train[i] for i in indices[start:start + self.batch_size]]
            x = torch.stack([torch.as_tensor(im) for im, _ in items]).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            xs.append(x)
            ys.append(torch.stack([torch.as_tensor(y) for _, y in items]).to(self.device))
        return xs, ys

    @torch.no_grad()
    def score(self, net: Network, seed: int) -> TrialScore:
        route, supernet = self.search.route_of(net), self.search.net
        recalibrate(supernet, lambda x: supernet(x, route), self.calibration)
        score = Score(self.data.task, self.data.num_classes, self.device)
        for x, y in zip(*self.validation):
            score.add(supernet(x, route), y)
        return TrialScore(score.value, {})


class OneShotStudy(BlackBoxSpace):
    """The black-box search's view of a trained supernet: trials draw routes of the space."""

    own_files = ()
    starts_in_window = True

    def __init__(self, search: OneShotSearch, evaluator: InheritedScore, task: str):
        self.search, self.evaluator = search, evaluator
        self.score_label = f"inherited {METRIC[task]}"

    def suggest(self, trial: Any, space: Any, name: str) -> Network:
        return self.search.route_network(self.search.suggest_route(trial), name)

    def cell(self, net: Network) -> Any:
        return net.meta.get("route")

    def describe(self, cell: Any) -> str:
        return self.search.describe_route(cell)

    def prepare(self, space: Any, table: LatencyTable, config: StudyConfig, out: Path,
                say: Callable[[str], None] | None) -> Evaluator:
        return self.evaluator

    def initial_trials(self, space: Any, table: LatencyTable, config: StudyConfig, count: int) -> list[dict[str, Any]]:
        """``count`` distinct networks of the window (``window_routes``) as trial parameters."""
        routes = window_routes(self.search, table, config.budget_ms, config.fill, count, config.seed)
        return [self.search.route_params(r) for r in routes]


def window_routes(search: OneShotSearch, table: LatencyTable, budget_ms: float, fill: float, count: int,
                  seed: int) -> list[Any]:
    """Up to ``count`` distinct routes whose networks the table predicts in [fill x budget,
    budget], drawn as the space's sampler draws networks (rejection, at most ``DRAWS`` draws a
    network): the networks of a window as single-path one-shot search draws them."""
    rng = torch.Generator().manual_seed(seed)
    found: dict[Network, Any] = {}
    for _ in range(DRAWS * count):
        if len(found) == count:
            break
        route = search.single_path(rng)
        net = search.route_network(route, "drawn")
        if fill * budget_ms <= table.predict(net).best_ms <= budget_ms:
            found.setdefault(net.renamed(""), route)
    return list(found.values())
