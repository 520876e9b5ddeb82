"""The DenseNAS search loop: warm-up, then alternating architecture and weight passes.

Schedule and sampling as published (reference.md section 2): for ``warmup_epochs`` only the
weights train, one op per mixed op sampled uniformly; afterwards each epoch first makes one pass
over the validation split updating alpha and beta (two ops sampled per mixed op by softmax(alpha),
loss CE + lambda * log_tau(expected latency), re-balancing shift after each step), then one pass
over the training split updating the weights (one op sampled by softmax(alpha)).

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

import dataclasses
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from nas2deploy.arch import Arch, save_arch
from nas2deploy.data import open_dataset, split_train_val
from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_bytes, atomic_write_json, read_json
from nas2deploy.latency.table import LatencyTable
from nas2deploy.search.derive import derive_argmax, derive_under_budget, fastest_latency
from nas2deploy.search.expected_latency import LatencyModel
from nas2deploy.search.loss import BudgetController, latency_loss
from nas2deploy.search.sampling import (
    argmax_ops,
    rebalance_,
    sample_ops,
    step_generator,
)
from nas2deploy.search.supernet import DenseNASSupernet, OpChoice
from nas2deploy.spaces.densenas import DenseNASConfig, DenseNASSpace


@dataclass
class SearchConfig:
    """Paper defaults (reference.md section 2) except the batch: 64 instead of 352, with the
    weights' learning rate scaled linearly (0.2 x 64 / 352 ~= 0.036) and gradients clipped at
    norm 5 (at 0.2 and batch 32 the supernet's loss diverged to ~70 within an epoch here)."""

    table: str
    data: str = "synthetic"
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
    #: The space to search; None takes the value the table was profiled with.
    input_size: int | None = None
    width_mult: float | None = None
    max_stack_layers: int | None = None

    @staticmethod
    def from_file(path: str | Path) -> dict[str, Any]:
        doc = read_json(path, "search config")
        if not isinstance(doc, dict):
            raise UserError(f"search config {path}: must be a JSON object of SearchConfig fields")
        known = {f.name for f in dataclasses.fields(SearchConfig)} - {"table", "space"}  # given by --lut, --space
        unknown = sorted(set(doc) - known)
        if unknown:
            raise UserError(f"search config {path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dict(doc)


def space_for(config: SearchConfig, table: LatencyTable) -> DenseNASSpace:
    """The space a search explores: the table's, with the config's overrides; the table must cover it."""
    space_meta = table.meta.get("space", {})
    if space_meta.get("name") != config.space:
        raise UserError(f"latency table {config.table} was profiled for space {space_meta.get('name')!r}, not {config.space!r}")
    space_cfg = dict(space_meta.get("config", {}))
    for name in ("input_size", "width_mult", "max_stack_layers"):
        if getattr(config, name) is not None:
            space_cfg[name] = getattr(config, name)
    space = DenseNASSpace(DenseNASConfig(**space_cfg))
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


def _entropy(logits: torch.Tensor) -> float:
    p = torch.softmax(logits.detach(), -1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())


class Search:
    def __init__(self, config: SearchConfig, run_dir: str | Path, resume: bool = False,
                 progress: Callable[[str], None] | None = None):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress or (lambda _: None)
        self.rank, self.world = _world()
        if config.batch_size % (self.world * config.accumulate):
            raise UserError(
                f"--batch-size {config.batch_size} must be divisible by processes x accumulate "
                f"({self.world} x {config.accumulate})"
            )
        self.table = LatencyTable.load(config.table)
        self.space = space_for(config, self.table)
        data = open_dataset(config.data, self.space.config.input_size)
        if data.image_size != self.space.config.input_size:
            raise UserError(
                f"the search space has {self.space.config.input_size}px inputs but data {config.data} has "
                f"{data.image_size}px images: search with a table profiled with --input-size {data.image_size}"
            )
        if data.num_classes != self.space.config.num_classes:
            raise UserError(
                f"latency table {config.table} covers a {self.space.config.num_classes}-class classifier but data "
                f"{config.data} has {data.num_classes} classes: profile a table with --num-classes {data.num_classes}"
            )
        torch.manual_seed(config.seed)
        self.net = DenseNASSupernet(self.space)
        self.model = LatencyModel(self.net, self.table)
        if config.budget_ms is not None and config.budget_ms < fastest_latency(self.model):
            raise UserError(
                f"--budget-ms {config.budget_ms:g} is below the fastest network of this space: "
                f"{fastest_latency(self.model):.3f} ms with table {config.table}"
            )
        self.train_set, self.val_set = split_train_val(data.train, config.val_fraction, config.seed)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=config.w_lr, momentum=config.w_momentum,
                                     weight_decay=config.w_weight_decay)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=config.a_lr,
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
            (self.run_dir / "log.jsonl").write_text("")

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

    def _backward(self, x: torch.Tensor, y: torch.Tensor, choice: OpChoice, with_latency: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward over ``accumulate`` micro-batches (rows c, c + n, ...); gradients
        add up to those of the mean loss. Returns the logits and the mean cross-entropy."""
        n = self.config.accumulate
        logits = torch.empty(len(y), self.space.config.num_classes)
        ce_total = torch.zeros(())
        for c in range(n):
            out = self.net(x[c::n], choice)
            ce = F.cross_entropy(out, y[c::n])
            loss = ce
            if with_latency:  # once per micro-batch, as each rank does: keeps accumulate=N equal to N ranks
                loss = loss + latency_loss(self.model(), self.controller.lam, self.config.tau)
            (loss / n).backward()
            logits[c::n] = out.detach()
            ce_total += ce.detach() / n
        return logits, ce_total

    def _weight_pass(self, warm: bool) -> tuple[float, float]:
        self.net.train()
        loss_sum = correct = seen = 0.0
        for x, y in self._loader(self.train_set, 0):
            g = step_generator(self.config.seed, self.step)
            choice = OpChoice(sample_ops(self.net.alpha_head, 1, warm, g), sample_ops(self.net.alpha_stack, 1, warm, g))
            for group in self.w_opt.param_groups:
                group["lr"] = self._lr()
            self.w_opt.zero_grad(set_to_none=True)
            self.a_opt.zero_grad(set_to_none=True)
            logits, loss = self._backward(x, y, choice, with_latency=False)
            _average_grads(self.net.weight_parameters(), self.world)
            torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.config.grad_clip)
            self.w_opt.step()
            self.step += 1
            self.w_step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += float((logits.argmax(-1) == y).sum())
            seen += len(y)
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def _arch_pass(self) -> tuple[float, float]:
        self.net.train()
        loss_sum = correct = seen = 0.0
        for x, y in self._loader(self.val_set, 1):
            g = step_generator(self.config.seed, self.step)
            head, stack = sample_ops(self.net.alpha_head, 2, False, g), sample_ops(self.net.alpha_stack, 2, False, g)
            old_head, old_stack = self.net.alpha_head.detach().gather(1, head), self.net.alpha_stack.detach().gather(1, stack)
            self.a_opt.zero_grad(set_to_none=True)
            self.w_opt.zero_grad(set_to_none=True)
            logits, ce = self._backward(x, y, OpChoice(head, stack), with_latency=True)
            _average_grads(self.net.arch_parameters(), self.world)
            self.a_opt.step()
            rebalance_(self.net.alpha_head, head, old_head)
            rebalance_(self.net.alpha_stack, stack, old_stack)
            self.controller.update(float(self.model().detach()))
            self.step += 1
            loss_sum += float(ce.detach()) * len(y)
            correct += float((logits.argmax(-1) == y).sum())
            seen += len(y)
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Top-1 on the validation split of the supernet restricted to the argmax ops."""
        self.net.eval()
        choice = OpChoice(argmax_ops(self.net.alpha_head), argmax_ops(self.net.alpha_stack))
        correct = seen = 0
        for x, y in self._loader(self.val_set, 2):
            correct += int((self.net(x, choice).argmax(-1) == y).sum())
            seen += len(y)
        return correct / max(seen, 1)

    # -- the run --------------------------------------------------------------------------------
    def derive(self) -> Arch:
        budget = self.config.budget_ms
        arch = None
        if budget is not None:
            try:
                arch = derive_under_budget(self.net, self.model, budget, name=self.run_dir.name)
            except UserError as exc:
                self.progress(f"budget derivation failed ({exc}); showing the argmax architecture instead")
                budget = None
        arch = arch or derive_argmax(self.net, self.run_dir.name)
        return dataclasses.replace(arch, meta=provenance(self.config, budget))

    def run(self, until: int | None = None) -> dict[str, Any]:
        """Search to the configured number of epochs (or stop after epoch ``until``)."""
        record: dict[str, Any] = {}
        durations: list[float] = []
        arch = None
        while self.epoch < min(self.config.epochs, until or self.config.epochs):
            start = time.perf_counter()
            warm = self.epoch < self.config.warmup_epochs
            val_loss = val_top1 = None
            if not warm:
                val_loss, val_top1 = self._arch_pass()
            train_loss, train_top1 = self._weight_pass(warm)
            arch = self.derive()
            record = {
                "epoch": self.epoch + 1,
                "phase": "warmup" if warm else "search",
                "train_loss": round(train_loss, 5), "train_top1": round(train_top1, 4),
                "arch_loss": None if val_loss is None else round(val_loss, 5),
                "arch_top1": None if val_top1 is None else round(val_top1, 4),
                "val_top1_argmax": round(self.evaluate(), 4),
                "expected_ms": round(float(self.model().detach()), 5),
                "lambda": self.controller.lam,
                "derived_ms": round(self.table.predict(arch).best_ms, 5),
                "alpha_entropy": round(_entropy(torch.cat([self.net.alpha_head.flatten(), self.net.alpha_stack.flatten()]).view(1, -1)), 4),
                "alpha_head_entropy": round(_entropy(self.net.alpha_head), 4),
                "alpha_stack_entropy": round(_entropy(self.net.alpha_stack), 4),
                "beta_entropy": round(sum(_entropy(self.net.beta[s]) for s in self.net.out_slices.values()) / len(self.net.out_slices), 4),
                "derived": arch.to_dict(),
                "wall_s": round(time.perf_counter() - start, 2),
            }
            self.epoch += 1
            if self.rank == 0:  # the log line first: a resume drops lines past the checkpoint
                with (self.run_dir / "log.jsonl").open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                self._checkpoint()
            durations.append(record["wall_s"])
            eta = sum(durations) / len(durations) * (self.config.epochs - self.epoch)
            self.progress(
                f"epoch {record['epoch']}/{self.config.epochs} {record['phase']}: train top-1 {train_top1:.3f}, "
                f"val top-1 {record['val_top1_argmax']:.3f}, expected {record['expected_ms']:.3f} ms, "
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
        self.net.load_state_dict(state["net"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.epoch, self.step, self.w_step = state["epoch"], state["step"], state["w_step"]
        self.controller.lam = state["lambda"]
        if self.rank == 0:  # drop log lines past the checkpoint, or torn by a kill
            log = self.run_dir / "log.jsonl"
            kept = []
            for line in log.read_text().splitlines() if log.exists() else []:
                try:
                    if json.loads(line)["epoch"] <= self.epoch:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
            log.write_text("".join(ln + "\n" for ln in kept))


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
    return state


@dataclass
class SearchedModel:
    """What derivation needs from a run: its table, supernet (with trained alpha and beta) and
    latency model; rebuilt from the checkpoint without opening the data."""

    table: LatencyTable
    net: DenseNASSupernet
    model: LatencyModel
    config: SearchConfig


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
    net = DenseNASSupernet(space_for(config, table))
    try:
        net.load_state_dict(state["net"])
    except RuntimeError:
        raise UserError(f"run {run_dir}: checkpoint.pt does not fit the space of table {config.table}; was the table replaced?") from None
    return SearchedModel(table, net, LatencyModel(net, table), config)
