"""DPC's side of the black-box search (``search/blackbox``): how a trial draws a cell, and what
scores it (the cached-feature proxy, ``proxy.py``).

A trial is one cell: for each branch i, its input (``b{i}_input``: -1 for the backbone's
features, or an earlier branch) and its op (``b{i}_op``: one of the 81, named as ``conv1x1``,
``sep3x3_r6x21``, ``pool_g2x4``). Before the trials, the backbone's features on the data are
cached in ``OUT/cache`` from the study's ``--weights`` (resumed after a kill); a cell within the
budget is trained on them (``proxy.train_cell``) and its validation mIoU is the trial's value:
the validation part is ``VALIDATION_FRACTION`` of the training images (a seeded split), so the
test split is scored only for the final networks (the paper held out Cityscapes' validation set).
The study records what the cache was computed from, so workers on other machines, each with its
own cache, cooperate, and a study continued with other weights or data is refused. Re-ranking
fine-tunes a whole network from the pretrained backbone (the cell from scratch) at the proxy's
batch and learning rate, and scores it on the split the proxy scored: the paper re-ranked its
top 50 cells that way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nas2deploy.data import Splits, open_dataset
from nas2deploy.data.splits import validation_splits
from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.nets.dpc import Branch, DPCModule, DPCNet
from nas2deploy.search.blackbox.space import BlackBoxSpace, Evaluator, TrialScore
from nas2deploy.search.blackbox.study import StudyConfig
from nas2deploy.spaces.dpc.proxy import FeatureCache, build_cache, load_backbone, train_cell
from nas2deploy.spaces.dpc.space import BRANCH_CHOICES, DPCSpace
from nas2deploy.train import train_arch
from nas2deploy.validate import Field

#: The share of the training images the proxy and re-ranking score cells on (the search loop's
#: default architecture split: DenseNAS's 80 / 20), split with seed 0 so every worker caches the same.
VALIDATION_FRACTION = 0.2

#: What to do when the data is not what the table's space was profiled for.
PROFILE_FOR_DATA = ("profile a table for this data: nas2deploy profile --space dpc --input-size {size} --input-width "
                    "{size} --num-classes {classes} --out TABLE")

#: Fine-tuning a cell on its pretrained backbone: the proxy's batch and learning rate.
RERANK_BATCH, RERANK_LR = 8, 0.02


def op_name(branch: Branch) -> str:
    if branch.op == "sep3x3":
        return f"sep3x3_r{branch.rate[0]}x{branch.rate[1]}"
    if branch.op == "pool":
        return f"pool_g{branch.grid[0]}x{branch.grid[1]}"
    return branch.op


#: The 81 ops by their trial names.
OPS = {op_name(b): b for b in BRANCH_CHOICES}


def describe(cell: tuple[Branch, ...] | None) -> str:
    """A cell as the paper writes it: b0(F, sep3x3_r1x6), b1(b0, ...), ..."""
    if cell is None:
        return "-"
    return ", ".join(f"b{i}({'F' if b.input < 0 else f'b{b.input}'}, {op_name(b)})" for i, b in enumerate(cell))


def pretrained(net: DPCNet, weights: str | Path) -> DPCModule:
    """``net`` built with its backbone's weights from ``weights`` (the cell and head fresh)."""
    model = DPCModule(net, affine=True)
    load_backbone(model.backbone, net, weights)
    return model


class ProxyEvaluator(Evaluator):
    """Cells trained on the cached features; re-ranking trains whole networks on the data."""

    rerank_recipe = {"batch": RERANK_BATCH, "lr": RERANK_LR}

    def __init__(self, cache: FeatureCache, data: Splits, weights: str, epochs: int,
                 say: Callable[[str], None] | None = None):
        self.cache, self.data, self.weights, self.epochs, self.say = cache, data, weights, epochs, say
        self.identity = {"cache": cache.origin}

    def score(self, net: Network, seed: int) -> TrialScore:
        assert isinstance(net, DPCNet)
        proxy = train_cell(net, self.cache, epochs=self.epochs, batch_size=8, patience=3, seed=seed, progress=self.say)
        return TrialScore(proxy.miou, {"epochs": proxy.epochs, "seconds": round(proxy.seconds, 2)})

    def train_end_to_end(self, net: Network, epochs: int, seed: int) -> float:
        assert isinstance(net, DPCNet)
        return float(train_arch(net, self.data, epochs, RERANK_BATCH, RERANK_LR, seed=seed,
                                initial=pretrained(net, self.weights), progress=self.say)[1])


class DPCCells(BlackBoxSpace):
    own_files = ("cache",)
    score_label = "proxy mIoU"

    def suggest(self, trial: Any, space: Any, name: str) -> DPCNet:
        assert isinstance(space, DPCSpace), "the registry hands a dpc study its own space"
        cell = []
        for i in range(space.config.branches):
            source = trial.suggest_categorical(f"b{i}_input", list(range(-1, i)))
            op = OPS[trial.suggest_categorical(f"b{i}_op", list(OPS))]
            cell.append(Branch(op.op, source, op.rate, op.grid))
        return space.network(tuple(cell), name)

    def cell(self, net: Network) -> list[dict[str, Any]]:
        assert isinstance(net, DPCNet)
        return [b.to_dict() for b in net.cell]

    def describe(self, cell: Any) -> str:
        f = Field(cell, "a DPC cell", "search again")
        return describe(tuple(Branch.from_field(b, i) for i, b in enumerate(f.list(max_len=16))))

    def prepare(self, space: Any, table: LatencyTable, config: StudyConfig, out: Path,
                say: Callable[[str], None] | None) -> ProxyEvaluator:
        """The feature cache in OUT/cache, built from the study's backbone weights (once)."""
        assert isinstance(space, DPCSpace)
        weights = config.options["weights"]
        probe = space.reference_net.renamed(f"dpc (table {table.name})")
        data = validation_splits(open_dataset(config.data, probe.input_size, fit=probe, fix=PROFILE_FOR_DATA),
                                 VALIDATION_FRACTION, seed=0)
        cache = build_cache(probe, weights, data, f"{config.data}[validation {VALIDATION_FRACTION:g}]", out / "cache",
                            progress=say)
        features = list(probe.features())
        if list(cache.features["train"].shape[1:]) != features:
            raise UserError(f"feature cache {cache.folder} holds {'x'.join(map(str, cache.features['train'].shape[1:]))} "
                            f"features, the dpc space {space.config_dict()} reads {'x'.join(map(str, features))}: build "
                            "the cache for it")
        return ProxyEvaluator(cache, data, str(weights), int(config.options["proxy_epochs"]), say)
