"""The search loop of both spaces: warm-up, then alternating architecture and weight passes.

Schedule as published for DenseNAS (reference.md section 2), and used for DCNAS too: for
``warmup_epochs`` only the weights train, on sub-networks sampled uniformly; afterwards each
epoch first makes one pass over the validation split updating alpha and beta (loss: the task's
loss + lambda * log_tau(expected latency)), then one pass over the training split updating the
weights. Which sub-network each step runs is the space's business (``space_search.py``: DenseNAS
samples ops and re-balances alpha; DCNAS samples connections by softmax(beta) and runs its
mixture layers on a channel fraction). The task decides the loss and the logged score
(``objective.py``: top-1 for classification; per-pixel cross-entropy skipping the ignore label
and mIoU for segmentation).

A run folder holds ``config.json``, ``log.jsonl`` (one record per epoch), ``checkpoint.pt``
(written atomically after every epoch, loaded with ``weights_only=True``) and, at the end,
``arch.json``. ``resume=True`` continues from the checkpoint and refuses a different
configuration, naming the fields. Runs are seeded: batch order and op sampling come from
generators seeded by (seed, epoch) and (seed, step), so a CPU run repeats bit for bit.

Under torch.distributed (``torchrun``), every rank draws the same batches and ops; rank r takes
rows r, r + world, ... of each global batch, and gradients of weights and architecture
parameters are averaged over ranks before each step, so the ranks stay identical.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from nas2deploy.nets import Network, save_arch
from nas2deploy.data import open_dataset, split_train_val
from nas2deploy.errors import UserError
from nas2deploy.fileio import (
    append_line,
    atomic_write_bytes,
    atomic_write_json,
    exclusive,
    read_json,
    refuse_link,
)
from nas2deploy.latency.table import LatencyTable
from nas2deploy.objective import LABEL, METRIC, Score, task_loss
from nas2deploy.search.dcnas_supernet import CHANNEL_FRACTION, PATH_SAMPLES
from nas2deploy.search.derive import DEFAULT_FILL
from nas2deploy.search.loss import BudgetController, latency_loss
from nas2deploy.search.sampling import step_generator
from nas2deploy.search.space_search import SpaceSearch, make_space_search
from nas2deploy.spaces import OPTION_FIELDS, SearchSpace, make_space, space_overrides
from nas2deploy.validate import MAX_OP_MS, Field

#: What a run folder holds (``.lock`` while a process writes it).
RUN_FILES = ("config.json", "log.jsonl", "checkpoint.pt", "arch.json", ".lock")
#: The data a search uses when none is named: each space's built-in set.
BUILTIN_DATA = {"densenas": "synthetic", "dcnas": "seg-synthetic"}


@dataclass
class SearchConfig:
    """Paper defaults (reference.md section 2) except the batch: 64 instead of 352, with the
    weights' learning rate scaled linearly (0.2 x 64 / 352 ~= 0.036) and gradients clipped at
    norm 5 (at 0.2 and batch 32 the supernet's loss diverged to ~70 within an epoch here)."""

    table: str
    data: str = ""  # "": the space's built-in data (BUILTIN_DATA)
    space: str = "densenas"
    epochs: int = 150
    warmup_epochs: int = 50
    batch_size: int = 64
    val_fraction: float = 0.2
    max_batches: int = 0  # per pass; 0 = the whole split (small runs, tests and the demo use a cap)
    w_lr: float = 0.036
    w_lr_min: float = 1e-5
    w_momentum: float = 0.9
    w_weight_decay: float = 4e-5
    grad_clip: float = 5.0
    #: Micro-batches per step: each rank's batch is split into this many chunks whose gradients
    #: add up. A run with accumulate=N computes exactly what N torchrun ranks compute (BN then
    #: normalises over the same chunks), and it fits a large batch into little memory.
    accumulate: int = 1
    a_lr: float = 3e-4
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    lam: float = 0.15
    tau: float = 15.0
    budget_ms: float | None = None
    lam_rate: float = 0.05
    seed: int = 0
    #: DCNAS: connections run per cell and step, and the channel share through the candidates.
    path_samples: int = PATH_SAMPLES
    channel_fraction: float = CHANNEL_FRACTION
    #: DCNAS: derive the single best scale path (Auto-DeepLab's Viterbi) instead of top-k inputs.
    viterbi: bool = False
    #: The space to search (OPTION_FIELDS); None takes the value the table was profiled with.
    input_size: int | None = None
    width_mult: float | None = None
    num_classes: int | None = None
    max_stack_layers: int | None = None
    layers: int | None = None
    base_width: int | None = None
    max_back: int | None = None
    derive_inputs: int | None = None

    def __post_init__(self) -> None:
        if not self.data:
            self.data = BUILTIN_DATA.get(self.space, "synthetic")

    @staticmethod
    def read(doc: Field, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """The fields of a config read from a file (a ``--config`` file or a checkpoint), each
        by its rule in ``CONFIG_RULES``; unknown fields are refused by name."""
        known = [name for name in CONFIG_RULES if name not in exclude]
        unknown = sorted(set(doc.object()) - set(known))
        if unknown:
            raise UserError(f"{doc.source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return {key: None if value.value is None and key in OPTIONAL else CONFIG_RULES[key](value)
                for key, value in doc.items()}

    @staticmethod
    def from_file(path: str | Path) -> dict[str, Any]:
        doc = Field(read_json(path, "search config"), f"search config {path}", "correct the field")
        return SearchConfig.read(doc, exclude=("table", "space"))  # given by --lut, --space

    def check(self) -> None:
        """The same rules for a config built from command-line options."""
        SearchConfig.read(Field(asdict(self), "search options", "give a valid value"))


#: The rule of each SearchConfig field (``nas2deploy.validate``); None is allowed for OPTIONAL.
CONFIG_RULES: dict[str, Callable[[Field], Any]] = {
    "table": lambda f: f.str(max_len=4096), "data": lambda f: f.str(max_len=4096), "space": lambda f: f.str(),
    "epochs": lambda f: f.int(1, 10**6), "warmup_epochs": lambda f: f.int(0, 10**6),
    "batch_size": lambda f: f.int(1, 65536), "val_fraction": lambda f: f.number(0, 0.99, lo_open=True),
    "max_batches": lambda f: f.int(0, 10**9), "w_lr": lambda f: f.number(0, 10, lo_open=True),
    "w_lr_min": lambda f: f.number(0, 10), "w_momentum": lambda f: f.number(0, 0.999),
    "w_weight_decay": lambda f: f.number(0, 1), "grad_clip": lambda f: f.number(0, 1e6, lo_open=True),
    "accumulate": lambda f: f.int(1, 1024), "a_lr": lambda f: f.number(0, 10, lo_open=True),
    "a_beta1": lambda f: f.number(0, 0.999), "a_beta2": lambda f: f.number(0, 0.99999),
    "a_weight_decay": lambda f: f.number(0, 1), "lam": lambda f: f.number(0, 1e3), "tau": lambda f: f.number(1, 1e6, lo_open=True),
    "budget_ms": lambda f: f.number(0, MAX_OP_MS, lo_open=True), "lam_rate": lambda f: f.number(0, 10, lo_open=True),
    "seed": lambda f: f.int(0, 2**62), "path_samples": lambda f: f.int(0, 1000),
    "channel_fraction": lambda f: f.number(0, 1, lo_open=True), "viterbi": lambda f: f.bool(),
    "input_size": lambda f: f.int(1, 2**31), "width_mult": lambda f: f.number(), "num_classes": lambda f: f.int(1, 2**31),
    "max_stack_layers": lambda f: f.int(0, 2**31), "layers": lambda f: f.int(1, 2**31),
    "base_width": lambda f: f.int(1, 2**31), "max_back": lambda f: f.int(0, 2**31), "derive_inputs": lambda f: f.int(1, 2**31),
}
OPTIONAL = ("budget_ms", *OPTION_FIELDS)


def space_for(config: SearchConfig, table: LatencyTable) -> SearchSpace:
    """The space a search explores: the table's, with the config's overrides; the table must cover it."""
    space_meta = table.meta.get("space", {})
    if space_meta.get("name") != config.space:
        raise UserError(f"latency table {config.table} was profiled for space {space_meta.get('name')!r}, not {config.space!r}")
    overrides = space_overrides(config.space, {name: getattr(config, name) for name in OPTION_FIELDS})
    space = make_space(config.space, {**space_meta.get("config", {}), **overrides})
    table.require_space(space)
    return space


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over ranks. Candidates that were not sampled have no gradient on any
    rank (all ranks sample the same ops), and stay without one: a zero gradient would let SGD's
    weight decay and momentum move them, which a single-process run does not do."""
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


class Search:
    def __init__(self, config: SearchConfig, run_dir: str | Path, resume: bool = False,
                 progress: Callable[[str], None] | None = None):
        config.check()
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress or (lambda _: None)
        for name in RUN_FILES:  # before any work: a link planted in the run folder is refused
            refuse_link(self.run_dir / name)
        self.rank, self.world = _world()
        if config.batch_size % (self.world * config.accumulate):
            raise UserError(
                f"--batch-size {config.batch_size} must be divisible by processes x accumulate "
                f"({self.world} x {config.accumulate})"
            )
        self.table = LatencyTable.load(config.table)
        self.space = space_for(config, self.table)
        size, classes = self.space.config_dict()["input_size"], self.space.config_dict()["num_classes"]
        data = open_dataset(config.data, size)
        torch.manual_seed(config.seed)
        self.searched = make_space_search(self.space, self.table, config.path_samples, config.channel_fraction)
        if data.task != self.searched.task:
            raise UserError(f"the {config.space} space searches {self.searched.task} networks, data {config.data} is {data.task} data")
        if data.image_size != size:
            raise UserError(
                f"the search space has {size}px inputs but data {config.data} has "
                f"{data.image_size}px images: search with a table profiled with --input-size {data.image_size}"
            )
        if data.num_classes != classes:
            raise UserError(
                f"latency table {config.table} covers {classes} classes but data "
                f"{config.data} has {data.num_classes}: profile a table with --num-classes {data.num_classes}"
            )
        self.task, self.classes = data.task, data.num_classes
        if not self.searched.expected_floor() > 0:  # log of the expected latency would be NaN
            raise UserError(f"latency table {config.table}: its calibration (offset_ms {self.table.offset_ms:g}) lets the "
                            "expected latency fall to 0 ms or below; run `nas2deploy lut validate` again")
        if config.budget_ms is not None and config.budget_ms < (fastest := self.searched.fastest_ms()):
            raise UserError(
                f"--budget-ms {config.budget_ms:g} is below the fastest network of this space: "
                f"{fastest:.3f} ms with table {config.table}"
            )
        self.train_set, self.val_set = split_train_val(data.train, config.val_fraction, config.seed)
        self.w_opt = torch.optim.SGD(self.searched.weight_parameters(), lr=config.w_lr, momentum=config.w_momentum,
                                     weight_decay=config.w_weight_decay)
        self.a_opt = torch.optim.Adam(self.searched.arch_parameters(), lr=config.a_lr,
                                      betas=(config.a_beta1, config.a_beta2), weight_decay=config.a_weight_decay)
        self.controller = BudgetController(config.lam, config.budget_ms, config.lam_rate)
        self.epoch = 0
        self.step = 0  # every step (seeds the op sampling)
        self.w_step = 0  # weight steps (drive the cosine schedule)
        self.steps_per_epoch = self._batches(len(self.train_set))
        if resume:
            self._resume()
        elif self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if (self.run_dir / "checkpoint.pt").exists():
                raise UserError(f"run {self.run_dir} already holds a search: pass --resume to continue it, or another --out")
            atomic_write_json(self.run_dir / "config.json", asdict(config))
            atomic_write_bytes(self.run_dir / "log.jsonl", b"")

    @property
    def net(self) -> torch.nn.Module:
        return self.searched.net

    @property
    def model(self) -> Any:
        """The space's latency model (expected latency, differentiable)."""
        return self.searched.model

    # -- data -----------------------------------------------------------------------------------
    def _batches(self, n: int) -> int:
        full = n // self.config.batch_size
        return min(full, self.config.max_batches) if self.config.max_batches else full

    def _loader(self, dataset: Dataset, salt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of each global batch, in an order seeded by (seed, epoch, salt)."""
        g = torch.Generator().manual_seed(self.config.seed * 7919 + self.epoch * 2 + salt)
        if len(dataset) < self.config.batch_size:  # type: ignore[arg-type]
            raise UserError(f"a split of {len(dataset)} samples is smaller than --batch-size {self.config.batch_size}")  # type: ignore[arg-type]
        # Whole batches only: a short last batch could leave a rank or micro-batch empty.
        loader = DataLoader(dataset, batch_size=self.config.batch_size, shuffle=True, generator=g, drop_last=True)
        out = []
        for i, (x, y) in enumerate(loader):
            if i >= self._batches(len(dataset)):  # type: ignore[arg-type]
                break
            out.append((x[self.rank::self.world], y[self.rank::self.world]))
        return out

    # -- steps ----------------------------------------------------------------------------------
    def _lr(self) -> float:
        total = max(1, self.config.epochs * self.steps_per_epoch)
        c = self.config
        return c.w_lr_min + 0.5 * (c.w_lr - c.w_lr_min) * (1 + math.cos(math.pi * min(self.w_step, total) / total))

    def _backward(self, x: torch.Tensor, y: torch.Tensor, choice: Any, with_latency: bool, score: Score) -> torch.Tensor:
        """Forward and backward over ``accumulate`` micro-batches (rows c, c + n, ...); gradients
        add up to those of the mean loss. Scores the outputs; returns the mean task loss."""
        n = self.config.accumulate
        loss_total = torch.zeros(())
        for c in range(n):
            out = self.net(x[c::n], choice)
            task = task_loss(self.task, out, y[c::n])
            loss = task
            if with_latency:  # once per micro-batch, as each rank does: keeps accumulate=N equal to N ranks
                loss = loss + latency_loss(self.model(), self.controller.lam, self.config.tau)
            (loss / n).backward()
            score.add(out.detach(), y[c::n])
            loss_total += task.detach() / n
        return loss_total

    def _weight_pass(self, warm: bool) -> tuple[float, float]:
        self.net.train()
        loss_sum = seen = 0.0
        score = Score(self.task, self.classes)
        for x, y in self._loader(self.train_set, 0):
            choice = self.searched.weight_choice(warm, step_generator(self.config.seed, self.step))
            for group in self.w_opt.param_groups:
                group["lr"] = self._lr()
            self.w_opt.zero_grad(set_to_none=True)
            self.a_opt.zero_grad(set_to_none=True)
            loss = self._backward(x, y, choice, False, score)
            _average_grads(self.searched.weight_parameters(), self.world)
            torch.nn.utils.clip_grad_norm_(self.searched.weight_parameters(), self.config.grad_clip)
            self.w_opt.step()
            self.step += 1
            self.w_step += 1
            loss_sum += float(loss) * len(y)
            seen += len(y)
        return loss_sum / max(seen, 1), score.value

    def _arch_pass(self) -> tuple[float, float]:
        self.net.train()
        loss_sum = seen = 0.0
        score = Score(self.task, self.classes)
        for x, y in self._loader(self.val_set, 1):
            choice = self.searched.arch_choice(step_generator(self.config.seed, self.step))
            self.a_opt.zero_grad(set_to_none=True)
            self.w_opt.zero_grad(set_to_none=True)
            loss = self._backward(x, y, choice, True, score)
            _average_grads(self.searched.arch_parameters(), self.world)
            self.a_opt.step()
            self.searched.after_arch_step(choice)
            self.controller.update(float(self.model().detach()))
            self.step += 1
            loss_sum += float(loss) * len(y)
            seen += len(y)
        return loss_sum / max(seen, 1), score.value

    @torch.no_grad()
    def evaluate(self) -> float:
        """The score on the validation split of the supernet restricted to what derivation keeps
        (DenseNAS: the argmax ops; DCNAS: each cell's strongest connections)."""
        self.net.eval()
        choice = self.searched.eval_choice()
        score = Score(self.task, self.classes)
        for x, y in self._loader(self.val_set, 2):
            score.add(self.net(x, choice), y)
        return score.value

    # -- the run --------------------------------------------------------------------------------
    def derive(self) -> Network:
        budget, name, viterbi = self.config.budget_ms, self.run_dir.name, self.config.viterbi
        arch: Network | None = None
        if budget is not None:
            try:
                arch = self.searched.derive(name, budget, viterbi=viterbi)
            except UserError as exc:
                self.progress(f"budget derivation failed ({exc}); showing the unconstrained derivation instead")
                budget = None
        arch = arch or self.searched.derive(name, viterbi=viterbi)
        return arch.with_meta(provenance(self.config, budget))

    def run(self, until: int | None = None) -> dict[str, Any]:
        """Search to the configured number of epochs (or stop after epoch ``until``); one process
        writes a run folder at a time (rank 0 holds ``RUN/.lock``)."""
        if self.rank != 0:
            return self._run(until)
        with exclusive(self.run_dir / ".lock", f"search run {self.run_dir}"):
            return self._run(until)

    def _run(self, until: int | None) -> dict[str, Any]:
        record: dict[str, Any] = {}
        durations: list[float] = []
        arch = None
        while self.epoch < min(self.config.epochs, until or self.config.epochs):
            start = time.perf_counter()
            warm = self.epoch < self.config.warmup_epochs
            val_loss = val_score = None
            if not warm:
                val_loss, val_score = self._arch_pass()
            train_loss, train_score = self._weight_pass(warm)
            arch = self.derive()
            metric = METRIC[self.task]
            record = {
                "epoch": self.epoch + 1,
                "phase": "warmup" if warm else "search",
                "metric": metric,
                "train_loss": round(train_loss, 5), f"train_{metric}": round(train_score, 4),
                "arch_loss": None if val_loss is None else round(val_loss, 5),
                f"arch_{metric}": None if val_score is None else round(val_score, 4),
                f"val_{metric}_argmax": round(self.evaluate(), 4),
                "expected_ms": round(float(self.model().detach()), 5),
                "lambda": self.controller.lam,
                "derived_ms": round(self.table.predict(arch).best_ms, 5),
                **{k: round(v, 4) for k, v in self.searched.entropies().items()},
                "derived": arch.to_dict(),
                "wall_s": round(time.perf_counter() - start, 2),
            }
            self.epoch += 1
            if self.rank == 0:  # the log line first: a resume drops lines past the checkpoint
                append_line(self.run_dir / "log.jsonl", json.dumps(record))
                self._checkpoint()
            durations.append(record["wall_s"])
            eta = sum(durations) / len(durations) * (self.config.epochs - self.epoch)
            label = LABEL[metric]
            self.progress(
                f"epoch {record['epoch']}/{self.config.epochs} {record['phase']}: train {label} {train_score:.3f}, "
                f"val {label} {record[f'val_{metric}_argmax']:.3f}, expected {record['expected_ms']:.3f} ms, "
                f"lambda {record['lambda']:.4g}, derived {record['derived_ms']:.3f} ms ({record['wall_s']:.1f} s, "
                f"ETA {eta / 60:.1f} min)"
            )
        if self.rank == 0 and self.epoch == self.config.epochs:
            save_arch(arch or self.derive(), self.run_dir / "arch.json")  # derived already, unless resumed at the end
        return record

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        # through JSON: plain Python values only (a numpy float in the config would make the
        # checkpoint unreadable with weights_only=True)
        return {"config": json.loads(json.dumps(asdict(self.config))), "epoch": self.epoch, "step": self.step, "w_step": self.w_step,
                "lambda": self.controller.lam,
                "net": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def _checkpoint(self) -> None:
        buf = io.BytesIO()
        torch.save(self._state(), buf)
        atomic_write_bytes(self.run_dir / "checkpoint.pt", buf.getvalue())

    def _resume(self) -> None:
        state = load_checkpoint(self.run_dir)
        saved = state["config"]
        diff = [k for k, v in asdict(self.config).items() if k != "epochs" and saved.get(k) != v]
        if diff:
            raise UserError(
                f"--resume: run {self.run_dir} was started with a different configuration: "
                + "; ".join(f"{k}: {saved.get(k)!r} vs {getattr(self.config, k)!r}" for k in diff)
            )
        try:
            self.net.load_state_dict(state["net"])
            self.w_opt.load_state_dict(state["w_opt"])
            self.a_opt.load_state_dict(state["a_opt"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"--resume: run {self.run_dir}: checkpoint.pt does not fit this search "
                            f"({type(exc).__name__}); it is corrupt or from another version: search again") from None
        self.epoch, self.step, self.w_step = state["epoch"], state["step"], state["w_step"]
        self.controller.lam = state["lambda"]
        if self.rank == 0:  # drop log lines past the checkpoint, or torn by a kill
            log = self.run_dir / "log.jsonl"
            kept = []
            for line in log.read_text().splitlines() if log.exists() else []:
                try:
                    if json.loads(line)["epoch"] <= self.epoch:
                        kept.append(line)
                except (json.JSONDecodeError, RecursionError, KeyError, TypeError):
                    continue
            atomic_write_bytes(log, "".join(ln + "\n" for ln in kept).encode())


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise UserError(f"run {run_dir}: no checkpoint.pt; start the search without --resume")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise UserError(f"run {run_dir}: checkpoint.pt cannot be read ({type(exc).__name__}); it is corrupt") from None
    if not isinstance(state, dict) or "config" not in state or "net" not in state:
        raise UserError(f"run {run_dir}: checkpoint.pt is not a nas2deploy search checkpoint")
    doc = Field(state, f"run {run_dir}: checkpoint.pt", "search again or restore the checkpoint")
    doc["config"]["table"].str(max_len=4096)
    state["config"] = SearchConfig.read(doc["config"])
    for key in ("epoch", "step", "w_step"):
        doc[key].int(0, 2**62)
    doc["lambda"].number(0, 1e3)
    if not isinstance(state["net"], dict) or not all(
            isinstance(v, torch.Tensor) and (not v.is_floating_point() or bool(torch.isfinite(v).all()))
            for v in state["net"].values()):
        raise doc["net"].error("must map names to finite tensors", shown=False)
    return state


@dataclass
class SearchedModel:
    """What derivation needs from a run: its table, the space's search (supernet with trained
    alpha and beta, latency model) and config; rebuilt from the checkpoint without the data."""

    table: LatencyTable
    searched: SpaceSearch
    config: SearchConfig

    def derive(self, name: str, budget_ms: float | None = None, fill: float = DEFAULT_FILL, viterbi: bool = False) -> Network:
        """The derived network, its ``meta`` recording where it came from."""
        arch = self.searched.derive(name, budget_ms, fill, viterbi)
        return arch.with_meta(provenance(self.config, budget_ms))


def provenance(config: SearchConfig, budget_ms: float | None) -> dict[str, Any]:
    """What an architecture file records of its origin: ``export`` reads the budget, the table
    to compare against and the data to check accuracy on from here."""
    meta: dict[str, Any] = {"lut": config.table, "data": config.data, "space": config.space}
    if budget_ms is not None:
        meta["budget_ms"] = budget_ms
    return meta


def open_run(run_dir: str | Path) -> SearchedModel:
    state = load_checkpoint(run_dir)
    config = SearchConfig(**state["config"])
    table = LatencyTable.load(config.table)
    searched = make_space_search(space_for(config, table), table, config.path_samples, config.channel_fraction)
    try:
        searched.net.load_state_dict(state["net"])
    except RuntimeError:
        raise UserError(f"run {run_dir}: checkpoint.pt does not fit the space of table {config.table}; was the table replaced?") from None
    return SearchedModel(table, searched, config)
