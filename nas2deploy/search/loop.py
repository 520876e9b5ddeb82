"""The search loop of every gradient space: warm-up, then alternating architecture and weight passes.

Schedule as published for DenseNAS (reference.md section 2), and used for DCNAS too: for
``warmup_epochs`` only the weights train, on sub-networks sampled uniformly; afterwards each
epoch first makes one pass over the validation split updating alpha and beta (loss: the task's
loss + lambda * log_tau(expected latency)), then one pass over the training split updating the
weights. Which sub-network each step runs is the space's business (its ``SpaceSearch``:
DenseNAS samples ops and re-balances alpha; DCNAS samples connections by softmax(beta) and runs
its mixture layers on a channel fraction). The task decides the loss and the logged score
(``objective.py``: top-1 for classification; per-pixel cross-entropy skipping the ignore label
and mIoU for segmentation).

A ``SearchRun`` is handed what it runs, prepared from the configuration by ``nas2deploy.runs``
(the table, the space's search, the data); it writes a ``RunFolder``. ``resume=True`` continues
from the checkpoint and refuses a different configuration, naming the fields. Runs are seeded:
batch order and op sampling come from generators seeded by (seed, epoch) and (seed, step), so a
CPU run repeats bit for bit.

Under torch.distributed (``torchrun``), every rank draws the same batches and ops; rank r takes
rows r, r + world, ... of each global batch, and gradients of weights and architecture
parameters are averaged over ranks before each step, so the ranks stay identical.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from nas2deploy.data import Splits, split_train_val
from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.objective import LABEL, METRIC, Score, task_loss
from nas2deploy.search.config import SearchConfig, provenance
from nas2deploy.search.interface import SpaceSearch
from nas2deploy.search.loss import BudgetController, latency_loss
from nas2deploy.search.run_folder import RunFolder
from nas2deploy.search.sampling import step_generator


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


class SearchRun:
    """One search: the schedule over a space's search, written to a run folder."""

    def __init__(self, config: SearchConfig, folder: RunFolder, table: LatencyTable, space_search: SpaceSearch,
                 data: Splits, derive_options: dict[str, Any] | None = None, resume: bool = False,
                 progress: Callable[[str], None] | None = None):
        self.config, self.folder, self.table, self.space_search = config, folder, table, space_search
        self.derive_options = derive_options or {}
        self.progress = progress or (lambda _: None)
        self.rank, self.world = _world()
        if config.batch_size % (self.world * config.accumulate):
            raise UserError(
                f"--batch-size {config.batch_size} must be divisible by processes x accumulate "
                f"({self.world} x {config.accumulate})"
            )
        self.task, self.classes = data.task, data.num_classes
        self.train_set, self.val_set = split_train_val(data.train, config.val_fraction, config.seed)
        self.w_opt = torch.optim.SGD(space_search.weight_parameters(), lr=config.w_lr, momentum=config.w_momentum,
                                     weight_decay=config.w_weight_decay)
        self.a_opt = torch.optim.Adam(space_search.arch_parameters(), lr=config.a_lr,
                                      betas=(config.a_beta1, config.a_beta2), weight_decay=config.a_weight_decay)
        self.controller = BudgetController(config.lam, config.budget_ms, config.lam_rate)
        self.epoch = 0
        self.step = 0  # every step (seeds the op sampling)
        self.w_step = 0  # weight steps (drive the cosine schedule)
        self.steps_per_epoch = self._batches(len(self.train_set))
        if resume:
            self._resume()
        elif self.rank == 0:
            folder.start(config)

    @property
    def net(self) -> torch.nn.Module:
        return self.space_search.net

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
                loss = loss + latency_loss(self.space_search.latency_model(), self.controller.lam, self.config.tau)
            (loss / n).backward()
            score.add(out.detach(), y[c::n])
            loss_total += task.detach() / n
        return loss_total

    def _weight_pass(self, warm: bool) -> tuple[float, float]:
        self.net.train()
        loss_sum = seen = 0.0
        score = Score(self.task, self.classes)
        for x, y in self._loader(self.train_set, 0):
            choice = self.space_search.weight_choice(warm, step_generator(self.config.seed, self.step))
            for group in self.w_opt.param_groups:
                group["lr"] = self._lr()
            self.w_opt.zero_grad(set_to_none=True)
            self.a_opt.zero_grad(set_to_none=True)
            loss = self._backward(x, y, choice, False, score)
            _average_grads(self.space_search.weight_parameters(), self.world)
            torch.nn.utils.clip_grad_norm_(self.space_search.weight_parameters(), self.config.grad_clip)
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
            choice = self.space_search.arch_choice(step_generator(self.config.seed, self.step))
            self.a_opt.zero_grad(set_to_none=True)
            self.w_opt.zero_grad(set_to_none=True)
            loss = self._backward(x, y, choice, True, score)
            _average_grads(self.space_search.arch_parameters(), self.world)
            self.a_opt.step()
            self.space_search.after_arch_step(choice)
            self.controller.update(float(self.space_search.latency_model().detach()))
            self.step += 1
            loss_sum += float(loss) * len(y)
            seen += len(y)
        return loss_sum / max(seen, 1), score.value

    @torch.no_grad()
    def evaluate(self) -> float:
        """The score on the validation split of the supernet restricted to what derivation keeps
        (DenseNAS: the argmax ops; DCNAS: each cell's strongest connections)."""
        self.net.eval()
        choice = self.space_search.eval_choice()
        score = Score(self.task, self.classes)
        for x, y in self._loader(self.val_set, 2):
            score.add(self.net(x, choice), y)
        return score.value

    # -- the run --------------------------------------------------------------------------------
    def derive(self) -> Network:
        budget, name = self.config.budget_ms, self.folder.path.name
        arch: Network | None = None
        if budget is not None:
            try:
                arch = self.space_search.derive(name, budget, **self.derive_options)
            except UserError as exc:
                self.progress(f"budget derivation failed ({exc}); showing the unconstrained derivation instead")
                budget = None
        arch = arch or self.space_search.derive(name, **self.derive_options)
        return arch.with_meta(provenance(self.config, budget))

    def run(self, until: int | None = None) -> dict[str, Any]:
        """Search to the configured number of epochs (or stop after epoch ``until``); one process
        writes a run folder at a time (rank 0 holds ``RUN/.lock``)."""
        if self.rank != 0:
            return self._run(until)
        with self.folder.lock():
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
                "expected_ms": round(float(self.space_search.latency_model().detach()), 5),
                "lambda": self.controller.lam,
                "derived_ms": round(self.table.predict(arch).best_ms, 5),
                **{k: round(v, 4) for k, v in self.space_search.entropies().items()},
                "derived": arch.to_dict(),
                "wall_s": round(time.perf_counter() - start, 2),
            }
            self.epoch += 1
            if self.rank == 0:  # the log line first: a resume drops lines past the checkpoint
                self.folder.append(record)
                self.folder.save_checkpoint(self._state())
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
            self.folder.save_arch(arch or self.derive())  # derived already, unless resumed at the end
        return record

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        # through JSON: plain Python values only (a numpy float in the config would make the
        # checkpoint unreadable with weights_only=True)
        return {"config": json.loads(json.dumps(self.config.to_dict())), "epoch": self.epoch, "step": self.step,
                "w_step": self.w_step,
                "lambda": self.controller.lam,
                "net": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def _resume(self) -> None:
        state = self.folder.load_checkpoint()
        saved = {**SearchConfig(table="").to_dict(), **state["config"]}
        diff = [k for k, v in self.config.to_dict().items() if k != "epochs" and saved.get(k) != v]
        if diff:
            raise UserError(
                f"--resume: run {self.folder.path} was started with a different configuration: "
                + "; ".join(f"{k}: {saved.get(k)!r} vs {getattr(self.config, k)!r}" for k in diff)
            )
        try:
            self.net.load_state_dict(state["net"])
            self.w_opt.load_state_dict(state["w_opt"])
            self.a_opt.load_state_dict(state["a_opt"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"--resume: run {self.folder.path}: checkpoint.pt does not fit this search "
                            f"({type(exc).__name__}); it is corrupt or from another version: search again") from None
        self.epoch, self.step, self.w_step = state["epoch"], state["step"], state["w_step"]
        self.controller.lam = state["lambda"]
        if self.rank == 0:  # drop log lines past the checkpoint, or torn by a kill
            self.folder.keep_log_until(self.epoch)
