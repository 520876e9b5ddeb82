"""A new search space is one package plus one registration: two toy spaces defined here, and
registered here, go through profile, search, report and export without a line of nas2deploy
changed.

The supernet toy: a MBConv chain of ``layers`` blocks of one layer each, every layer choosing
between k3e3 and k5e3 (the first with stride 2), priced by its own table. Its search adapter is
the smallest honest one: a supernet of mixed ops, expected latency softmax(alpha) . costs, and
derivation by enumerating the 2^layers networks.

The black-box toy (``toybox``) brings its own op kind and network kind: a chain of separable
convolutions, each layer choosing its kernel and its activation, searched trial by trial on the
black-box search; a network within the budget is scored by a short training on the built-in
shapes, its one study option the training's epochs.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from nas2deploy import plotting
from nas2deploy.cli import cli
from nas2deploy.errors import UserError
from nas2deploy.data import open_dataset
from nas2deploy.nets import Network, load_arch, register_kind
from nas2deploy.nets.chain import Arch, Block, stem_specs, tail_specs
from nas2deploy.ops import Classifier, ConvBNAct, OpSpec, candidate_layer, register_op
from nas2deploy.search.blackbox.space import BlackBoxSpace, Evaluator, TrialScore
from nas2deploy.search.budget import DEFAULT_FILL, check_budget
from nas2deploy.search.interface import entropy
from nas2deploy.spaces import SPACES, SpaceEntry, SpaceOption, SpaceParts, register
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.train import train_arch
from nas2deploy.validate import Field

OPS = ("k3e3", "k5e3")
WIDTH, TAIL = 16, 64


@dataclass(frozen=True)
class ToyConfig:
    input_size: int = 32
    num_classes: int = 10
    layers: int = 3


class ToySpace(SearchSpace):
    name = "toy"

    def __init__(self, config: ToyConfig):
        self.config = config

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def stem(self) -> list[OpSpec]:
        return stem_specs(self.config.input_size, 8, 8, 1)

    def candidates(self, layer: int) -> list[OpSpec]:
        c, h, w = (self.stem()[-1] if layer == 0 else self.candidates(layer - 1)[0]).out_shape()
        return [candidate_layer(op, c, h, w, WIDTH, 2 if layer == 0 else 1) for op in OPS]

    def tail(self) -> list[OpSpec]:
        c, h, w = self.candidates(self.config.layers - 1)[0].out_shape()
        return tail_specs(c, h, w, TAIL, self.config.num_classes)

    def op_specs(self) -> list[OpSpec]:
        specs = [*self.stem(), *(s for layer in range(self.config.layers) for s in self.candidates(layer)), *self.tail()]
        return list({s.key: s for s in specs}.values())

    def counts(self) -> dict[str, Any]:
        return {"layers": self.config.layers, "architectures": len(OPS) ** self.config.layers}

    def make_arch(self, ops: tuple[str, ...], name: str) -> Arch:
        blocks = tuple(Block(WIDTH, 2 if i == 0 else 1, op) for i, op in enumerate(ops))
        return Arch(self.config.input_size, self.config.num_classes, 8, 8, 1, blocks, TAIL, name)

    def sample_arch(self, rng: random.Random) -> Arch:
        return self.make_arch(tuple(rng.choice(OPS) for _ in range(self.config.layers)), "sampled")

    def reference_op(self) -> OpSpec:
        return self.candidates(1)[1]


class ToySupernet(nn.Module):
    def __init__(self, space: ToySpace):
        super().__init__()
        self.space = space
        self.stem = nn.Sequential(*[s.build(affine=False) for s in space.stem()])
        self.layers = nn.ModuleList([nn.ModuleList([s.build(affine=False) for s in space.candidates(i)])
                                     for i in range(space.config.layers)])
        self.tail = nn.Sequential(*[s.build(affine=False) for s in space.tail()])
        self.alpha = nn.Parameter(1e-3 * torch.randn(space.config.layers, len(OPS)))

    def forward(self, x: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """``choice[l]``: the ops layer l runs, weighted by softmax(alpha) over them."""
        x = self.stem(x)
        for layer, (candidates, picked) in enumerate(zip(self.layers, choice)):
            weights = torch.softmax(self.alpha[layer, picked], 0)
            x = sum(w * candidates[int(i)](x) for w, i in zip(weights, picked))  # type: ignore[assignment]
        return self.tail(x)


class ToyLatency:
    def __init__(self, net: ToySupernet, table):
        self.net, self.table = net, table
        space = net.space
        table.require(space.op_specs(), "the toy space")
        self.costs = torch.tensor([[table.cost(s) for s in space.candidates(i)] for i in range(space.config.layers)],
                                  dtype=torch.float64)
        self.fixed = sum(table.cost(s) for s in [*space.stem(), *space.tail()]) + table.offset_ms

    def __call__(self) -> torch.Tensor:
        return self.fixed + (torch.softmax(self.net.alpha, -1) * self.costs.to(self.net.alpha)).sum()


class ToySearch:
    task = "classification"
    eval_label = "argmax ops"

    def __init__(self, space: ToySpace, table, options: dict[str, Any]):
        self.net = ToySupernet(space)
        self.latency_model = ToyLatency(self.net, table)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.net.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p is not self.net.alpha]

    def weight_choice(self, warm: bool, generator: torch.Generator) -> torch.Tensor:
        probs = torch.ones_like(self.net.alpha) if warm else torch.softmax(self.net.alpha.detach(), -1)
        return torch.multinomial(probs, 1, generator=generator)

    def arch_choice(self, generator: torch.Generator) -> torch.Tensor:
        return torch.arange(len(OPS)).repeat(self.net.space.config.layers, 1)

    def after_arch_step(self, choice: Any) -> None:
        """Every op runs in an architecture step: nothing to re-balance."""

    def eval_choice(self) -> torch.Tensor:
        return self.net.alpha.detach().argmax(-1, keepdim=True)

    def _all(self) -> list[tuple[float, float, tuple[str, ...]]]:
        """(predicted ms, log p, ops) of every network of the space."""
        logp = torch.log_softmax(self.net.alpha.detach().double(), -1).numpy()
        out = []
        for picks in itertools.product(range(len(OPS)), repeat=self.net.space.config.layers):
            ops = tuple(OPS[i] for i in picks)
            ms = self.latency_model.table.predict(self.net.space.make_arch(ops, "toy")).best_ms
            out.append((ms, float(sum(logp[l, i] for l, i in enumerate(picks))), ops))
        return out

    def fastest_ms(self) -> float:
        return min(ms for ms, _, _ in self._all())

    def expected_floor(self) -> float:
        return self.fastest_ms()

    def latency_range(self) -> tuple[float, float]:
        found = [ms for ms, _, _ in self._all()]
        return min(found), max(found)

    def derive(self, name: str, budget_ms: float | None = None, fill: float = DEFAULT_FILL, **options: Any) -> Arch:
        networks = self._all()
        if budget_ms is not None:
            check_budget(budget_ms, fill)
            fits = [n for n in networks if n[0] <= budget_ms]
            if not fits:
                raise UserError(f"no toy network fits {budget_ms:g} ms: the fastest is {self.fastest_ms():.3f} ms")
            networks = [n for n in fits if n[0] >= fill * budget_ms] or fits
        return self.net.space.make_arch(max(networks, key=lambda n: n[1])[2], name)

    def entropies(self) -> dict[str, float]:
        return {"alpha_entropy": entropy(self.net.alpha), "beta_entropy": 0.0}


def toy_plots(run, searched: ToySearch, table) -> list[str]:
    probs = torch.softmax(searched.net.alpha.detach(), -1).numpy()
    return [plotting.heatmap(run / "alpha.png", probs, [f"layer {i}" for i in range(len(probs))], OPS,
                             "softmax(alpha)", "probability")]


TOY = SpaceEntry(name="toy", task="classification", builtin_data="synthetic",
                 parts=lambda: SpaceParts(ToyConfig, ToySpace, ToySearch, toy_plots))


@pytest.fixture
def toy_registered():
    register(TOY)
    yield TOY
    SPACES.pop("toy")


@pytest.mark.slow
def test_a_registered_toy_space_goes_through_every_command(tmp_path, toy_registered):
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    table = tmp_path / "toy.json"
    assert "architectures" in run("space", "info", "toy")
    assert f"wrote {table}: 8 ops" in run("profile", "--space", "toy", "--runs", "5", "--out", str(table))
    run_dir = tmp_path / "run"
    out = run("search", "--space", "toy", "--lut", str(table), "--data", "synthetic:200", "--epochs", "2",
              "--warmup-epochs", "1", "--batch-size", "16", "--max-batches", "2", "--a-lr", "0.05", "--out", str(run_dir))
    assert "epoch 2/2 search" in out and (run_dir / "arch.json").exists()
    refused = runner.invoke(cli, ["search", "--space", "toy", "--lut", str(table), "--strategy", "evolution",
                                  "--budget-ms", "1", "--out", str(tmp_path / "one-shot")])
    assert refused.exit_code == 1 and "supernet runs no single networks" in refused.output  # a space without routes
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log[-1]["alpha_entropy"] < np.log(len(OPS))  # the architecture step moved alpha
    space, priced = ToySpace(ToyConfig()), _load(table)
    latencies = sorted(priced.predict(space.make_arch(ops, "t")).best_ms for ops in itertools.product(OPS, repeat=3))
    budget = round(latencies[len(latencies) // 2] * 1.001, 4)
    derived = tmp_path / "fast.json"
    assert "wrote" in run("derive", str(run_dir), "--budget-ms", str(budget), "--out", str(derived))
    arch = load_arch(derived)
    assert arch.meta["space"] == "toy" and priced.predict(arch).best_ms <= budget
    assert "report.md" in run("report", str(run_dir)) and (run_dir / "alpha.png").exists()
    out = run("export", "--arch", str(derived), "--samples", "8", "--out", str(tmp_path / "export"))
    report = json.loads((tmp_path / "export" / "report.json").read_text())
    assert report["passed"] and report["budget_ms"] == budget


# -- the black-box toy: its own op kind, network kind, space and study ----------------------------
@dataclass(frozen=True)
class ToyConv(OpSpec):
    """Depthwise kxk (stride) + BN + activation, then pointwise to ``out`` + BN + activation."""

    out: int
    kernel: int
    stride: int
    act: str

    type_name: ClassVar[str] = "toy_sepconv"

    @property
    def cout(self) -> int:
        return self.out

    @property
    def key(self) -> str:
        return f"toy_sepconv_k{self.kernel}_s{self.stride}_{self.act}_{self._shape()}_o{self.out}"

    def build(self, affine: bool = True) -> nn.Module:
        act = {"relu": nn.ReLU, "hardswish": nn.Hardswish}[self.act]
        return nn.Sequential(nn.Conv2d(self.cin, self.cin, self.kernel, self.stride, self.kernel // 2, groups=self.cin,
                                       bias=False), nn.BatchNorm2d(self.cin, affine=affine), act(),
                             nn.Conv2d(self.cin, self.out, 1, bias=False), nn.BatchNorm2d(self.out, affine=affine), act())

    def macs(self) -> int:
        _, ho, wo = self.out_shape()
        return ho * wo * self.cin * (self.kernel**2 + self.out)

    def params(self) -> int:
        return self.cin * (self.kernel**2 + 2 + self.out) + 2 * self.out


register_op(ToyConv, act=lambda f: f.str(("relu", "hardswish")))
CHOICES = ((3, "relu"), (3, "hardswish"), (5, "relu"), (5, "hardswish"))


@dataclass(frozen=True)
class ToyNet(Network):
    input_size: int
    num_classes: int
    layers: tuple[tuple[int, str], ...]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind: ClassVar[str] = "toy-chain"
    task: ClassVar[str] = "classification"
    unit: ClassVar[str] = "layers"

    def op_specs(self, include_free: bool = False) -> list[OpSpec]:
        specs: list[OpSpec] = [ConvBNAct(3, self.input_size, self.input_size, 16, 3, 1)]
        for i, (kernel, act) in enumerate(self.layers):
            c, h, w = specs[-1].out_shape()
            specs.append(ToyConv(c, h, w, WIDTH, kernel, 2 if i == 0 else 1, act))
        return specs + [Classifier(*specs[-1].out_shape(), self.num_classes)]

    def groups(self) -> list[tuple[str, list[OpSpec]]]:
        return [(f"op {i}", [s]) for i, s in enumerate(self.op_specs())]

    def build(self, affine: bool = True) -> nn.Module:
        return nn.Sequential(*[s.build(affine) for s in self.op_specs()])

    def to_dict(self) -> dict[str, Any]:
        return {"format": "nas2deploy.arch", "version": 1, "kind": self.kind, "name": self.name, "input_size": self.input_size,
                "num_classes": self.num_classes, "layers": [list(x) for x in self.layers], "meta": self.meta}

    @classmethod
    def from_field(cls, doc: Field) -> ToyNet:
        layers = tuple((x[0].int(choices=(3, 5)), x[1].str(("relu", "hardswish"))) for x in
                       (layer.list(min_len=2, max_len=2) for layer in doc["layers"].list(max_len=8)))
        return ToyNet(doc["input_size"].int(32, 64), doc["num_classes"].int(1, 100), layers,
                      doc["name"].str() if doc.has("name") else "", dict(doc["meta"].object()) if doc.has("meta") else {})

    def units(self) -> int:
        return len(self.layers)


register_kind(ToyNet)


@dataclass(frozen=True)
class ToyBoxConfig:
    input_size: int = 32
    num_classes: int = 10
    layers: int = 3


class ToyBoxSpace(SearchSpace):
    name = "toybox"

    def __init__(self, config: ToyBoxConfig):
        self.config = config

    def network(self, layers: tuple[tuple[int, str], ...], name: str) -> ToyNet:
        return ToyNet(self.config.input_size, self.config.num_classes, layers, name)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def op_specs(self) -> list[OpSpec]:
        specs = [s for choice in CHOICES for s in self.network((choice,) * self.config.layers, "all").op_specs()]
        return list({s.key: s for s in specs}.values())

    def counts(self) -> dict[str, Any]:
        return {"layers": self.config.layers, "architectures": len(CHOICES) ** self.config.layers}

    def sample_arch(self, rng: random.Random) -> ToyNet:
        return self.network(tuple(rng.choice(CHOICES) for _ in range(self.config.layers)), "sampled")

    def reference_op(self) -> OpSpec:
        return self.network((CHOICES[0],) * 2, "ref").op_specs()[2]

    def latency_range(self, table) -> tuple[float, float]:
        """Exact: every layer's shapes are fixed, so the ends take each layer's cheapest (dearest) choice."""
        ends = [self.network(tuple(min(CHOICES, key=lambda c: table.latency(self.network((c,) * n, "x").op_specs()[n]))
                                   if pick == "min" else
                                   max(CHOICES, key=lambda c: table.latency(self.network((c,) * n, "x").op_specs()[n]))
                                   for n in range(1, self.config.layers + 1)), "end") for pick in ("min", "max")]
        return table.predict(ends[0]).best_ms, table.predict(ends[1]).best_ms


class ShortTraining(Evaluator):
    def __init__(self, data, epochs: int):
        self.data, self.epochs, self.identity = data, epochs, {"data": data.name, "epochs": epochs}

    def score(self, net, seed: int) -> TrialScore:
        return TrialScore(train_arch(net, self.data, self.epochs, batch_size=16, seed=seed)[1], {"epochs": self.epochs})

    def train_end_to_end(self, net, epochs: int, seed: int) -> float:
        return train_arch(net, self.data, epochs, batch_size=16, seed=seed)[1]


class ToyBoxStudy(BlackBoxSpace):
    score_label = "top-1 after a short training"

    def suggest(self, trial, space, name: str) -> ToyNet:
        return space.network(tuple(CHOICES[trial.suggest_categorical(f"l{i}", list(range(len(CHOICES))))]
                                   for i in range(space.config.layers)), name)

    def cell(self, net) -> list[list[Any]]:
        return [list(layer) for layer in net.layers]

    def describe(self, cell) -> str:
        return ", ".join(f"k{k}/{act}" for k, act in cell)

    def prepare(self, space, table, config, out, say) -> ShortTraining:
        return ShortTraining(open_dataset(config.data, space.config.input_size), config.options["train_epochs"])


TOYBOX = SpaceEntry(name="toybox", task="classification", builtin_data="synthetic:64", searched_by="trials",
                    parts=lambda: SpaceParts(ToyBoxConfig, ToyBoxSpace, study=ToyBoxStudy()),
                    options=(SpaceOption("layers", "int", "separable layers (3)", low=1, high=8),
                             SpaceOption("train_epochs", "int", "epochs a network trains before it is scored", ("study",),
                                         low=1, default=1)))


@pytest.mark.slow
def test_a_registered_black_box_space_with_its_own_ops_is_profiled_searched_reported_and_exported(tmp_path):
    pytest.importorskip("optuna")
    register(TOYBOX)
    try:
        runner = CliRunner()

        def run(*args: str, code: int = 0) -> str:
            result = runner.invoke(cli, list(args))
            assert result.exit_code == code, result.output
            return result.stdout if "--json" in args else result.output

        table = tmp_path / "toybox.json"
        assert "--train-epochs" in run("search", "--space", "toybox", "--help")
        assert f"wrote {table}: 10 ops" in run("profile", "--space", "toybox", "--runs", "5", "--out", str(table))
        assert "toy_sepconv_k5_s2_hardswish_i16x32x32_o16" in json.loads(table.read_text())["entries"]  # its own op
        fastest, slowest = ToyBoxSpace(ToyBoxConfig()).latency_range(_load(table))
        budget = f"{(fastest + slowest) / 2:.4f}"
        out = tmp_path / "study"
        summary = json.loads(run("search", "--space", "toybox", "--lut", str(table), "--budget-ms", budget, "--trials", "6",
                                 "--sampler", "evolution", "--rerank", "2", "--rerank-epochs", "1", "--out", str(out), "--json"))
        assert summary["trials"] == 6 and summary["complete"] + summary["pruned"] == 6 and summary["complete"] >= 2
        best = load_arch(out / "best.json")
        assert isinstance(best, ToyNet) and _load(table).predict(best).best_ms <= float(budget)
        report = (out / "report.md").read_text()
        assert "# toybox study `toybox`" in report and "top-1 after a short training" in report
        assert summary["best"]["cell"] == [list(x) for x in best.layers] and ", k" in report.split("Chosen")[1]
        exported = tmp_path / "export"
        run("export", "--arch", str(out / "best.json"), "--samples", "4", "--out", str(exported))
        assert json.loads((exported / "report.json").read_text())["passed"]
        assert "is an option of the search of the densenas and dcnas" in run(
            "search", "--space", "toybox", "--lut", str(table), "--budget-ms", budget, "--epochs", "3", "--out", str(out), code=2)
    finally:
        SPACES.pop("toybox")


def test_an_unregistered_space_is_refused_by_name(tmp_path):
    result = CliRunner().invoke(cli, ["space", "info", "toy"])
    assert result.exit_code == 2 and "'toy' is not one of" in result.output
    with pytest.raises(UserError, match="unknown search space 'toy'"):
        from nas2deploy.spaces import make_space

        make_space("toy")


def _load(path):
    from nas2deploy.spaces.tables import load_table

    return load_table(path)
