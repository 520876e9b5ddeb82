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

With ``strategy="evolution"`` (single-path one-shot, Guo et al. 2020) the loop trains the
supernet's weights only: every step runs one network drawn uniformly (the space's
``single_path``), no architecture pass; the per-epoch score is that of one fixed random network
on the validation split. What it trains is searched afterwards (``search/oneshot.py``).

Under torch.distributed (``torchrun``), every rank draws the same batches and ops; rank r takes
rows r, r + world, ... of each global batch, and gradients of weights and architecture
parameters are averaged over ranks before each step, so the ranks stay identical.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from nas2deploy.heartbeat import Heartbeat
from nas2deploy.data import Splits
from nas2deploy.data.batches import RankBatches, batch_loader, decoded
from nas2deploy.data.splits import split_indices
from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.objective import LABEL, METRIC, Score, task_loss
from nas2deploy.search.config import SearchConfig, provenance
from nas2deploy.search.distributed import process_group_errors
from nas2deploy.search.interface import OneShotSearch, SpaceSearch
from nas2deploy.search.loss import BudgetController, latency_loss
from nas2deploy.search.oneshot import CALIBRATION, recalibrate
from nas2deploy.search.run_folder import RunFolder
from nas2deploy.search.sampling import step_generator
from nas2deploy.train import Precision, out_of_memory

#: Configuration fields a resumed run may change: they do not change what it computes.
RESUMABLE_CHANGES = ("epochs", "device", "workers")


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


@contextmanager
def frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Parameters that a step does not update are constants of its graph: autograd then records
    no backward work for them (a weight step needs no gradient of alpha or beta, an architecture
    step none of the weights: no weight-gradient convolutions). The gradients of the parameters
    that are updated are the same numbers either way (a search gives the same parameters bit for
    bit). On a GPU each ATen op is a host launch, and the DenseNAS-224 step was launch-bound (0.15 s
    a step on an H200, ~30 us for each of its ~5,000 ops); with this and the supernet's own
    savings a weight step of the 224 supernet dispatches 3,336 ops instead of 4,953, an
    architecture step 6,879 instead of 9,132 (counted on a CPU at batch 2, optimisers in their
    CUDA form)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class SearchRun:
    """One search: the schedule over a space's search, written to a run folder."""

    def __init__(self, config: SearchConfig, folder: RunFolder, table: LatencyTable, space_search: SpaceSearch,
                 data: Splits, derive_options: dict[str, Any] | None = None, resume: bool = False,
                 progress: Callable[[str], None] | None = None, device: torch.device | str = "cpu"):
        self.config, self.folder, self.table, self.space_search = config, folder, table, space_search
        self.derive_options = derive_options or {}
        self.progress = progress or (lambda _: None)
        self.clock: Callable[[], float] = time.monotonic  # the heartbeat's (tests inject one)
        self.device = torch.device(device)
        self.rank, self.world = _world()
        if config.batch_size % (self.world * config.accumulate):
            raise UserError(
                f"--batch-size {config.batch_size} must be divisible by processes x accumulate "
                f"({self.world} x {config.accumulate})"
            )
        self.task, self.classes = data.task, data.num_classes
        self.net.to(self.device)
        if self.device.type == "cuda":  # every candidate keeps its shapes: cuDNN picks its kernels once
            torch.backends.cudnn.benchmark = True
        if config.channels_last:
            self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.precision = Precision(config.amp, self.device)
        self.scalers = {"weights": self.precision.scaler(), "arch": self.precision.scaler()}
        train, val = split_indices(len(data.train), config.val_fraction, config.seed)  # type: ignore[arg-type]
        for name, split in (("weight", train), ("architecture", val)):
            if len(split) < config.batch_size:
                raise UserError(f"the {name} split of {len(split)} samples is smaller than --batch-size {config.batch_size}")
        pin = self.device.type == "cuda"
        self.samplers = {name: RankBatches(len(split), config.batch_size, self.rank, self.world, config.max_batches)
                         for name, split in (("train", train), ("val", val))}
        self.loaders = {name: batch_loader(data.train, split, self.samplers[name], config.workers, pin)
                        for name, split in (("train", train), ("val", val))}
        self.w_opt = torch.optim.SGD(space_search.weight_parameters(), lr=config.w_lr, momentum=config.w_momentum,
                                     weight_decay=config.w_weight_decay)
        self.a_opt = torch.optim.Adam(space_search.arch_parameters(), lr=config.a_lr,
                                      betas=(config.a_beta1, config.a_beta2), weight_decay=config.a_weight_decay)
        self.controller = BudgetController(config.lam, config.budget_ms, config.lam_rate, self.device)
        self.epoch = 0
        self.step = 0  # every step (seeds the op sampling)
        self.w_step = 0  # weight steps (drive the cosine schedule)
        self.steps_per_epoch = len(self.samplers["train"])
        self.costs: dict[str, list[float]] = {"warmup": [], "search": [], "single-path": []}  # epoch seconds (ETA)
        self.one_shot = config.strategy == "evolution"
        #: The fixed network whose score the one-shot supernet's epochs report (``runs.prepare``
        #: refuses the strategy for a space whose search runs no single networks).
        self.probe = space_search.single_path(step_generator(config.seed, -1)) \
            if self.one_shot and isinstance(space_search, OneShotSearch) else None
        if resume:
            self._resume()
        elif self.rank == 0:
            folder.start(config)

    @property
    def net(self) -> torch.nn.Module:
        return self.space_search.net

    # -- data -----------------------------------------------------------------------------------
    def _batches(self, split: str, salt: int, augment: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of each global batch of ``split``, in an order seeded by (seed,
        epoch, salt), augmented by a draw of the same (or in the evaluation view), on the
        search's device; the time spent waiting for data is counted."""
        seed = self.config.seed * 7919 + self.epoch * 2 + salt
        self.samplers[split].start(seed, seed if augment else None)
        start = time.perf_counter()
        for x, y in decoded(self.loaders[split]):
            self.data_wait += time.perf_counter() - start
            x = x.to(self.device, non_blocking=True)
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)
            start = time.perf_counter()  # the step ran; from here the wait is the data's

    # -- steps ----------------------------------------------------------------------------------
    def _lr(self) -> float:
        total = max(1, self.config.epochs * self.steps_per_epoch)
        c = self.config
        return c.w_lr_min + 0.5 * (c.w_lr - c.w_lr_min) * (1 + math.cos(math.pi * min(self.w_step, total) / total))

    def _backward(self, x: torch.Tensor, y: torch.Tensor, choice: Any, with_latency: bool, score: Score,
                  scaler: torch.amp.GradScaler) -> torch.Tensor:
        """Forward and backward over ``accumulate`` micro-batches (rows c, c + n, ...); gradients
        add up to those of the mean loss. Scores the outputs; returns the mean task loss."""
        n = self.config.accumulate
        loss_total = torch.zeros((), device=self.device)
        for c in range(n):
            with self.precision.autocast():
                out = self.net(x[c::n], choice)
            task = task_loss(self.task, out.float(), y[c::n])
            loss = task
            if with_latency:  # once per micro-batch, as each rank does: keeps accumulate=N equal to N ranks
                loss = loss + latency_loss(self.space_search.latency_model(), self.controller.lam, self.config.tau)
            scaler.scale(loss / n).backward()
            score.add(out.detach(), y[c::n])
            loss_total += task.detach() / n
        return loss_total

    def _pass(self, split: str, salt: int, step: Callable[[torch.Tensor, torch.Tensor, Score], torch.Tensor]) -> dict[str, float]:
        """One pass over ``split``: loss, score, images per second (all ranks) and data wait."""
        self.net.train()
        self.data_wait = 0.0
        start, seen = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=self.device)
        score = Score(self.task, self.classes, self.device)
        what = "weights" if split == "train" else "architecture"
        say = self.progress if self.rank == 0 else (lambda _: None)  # one voice for all ranks
        beat = Heartbeat(say, f"epoch {self.epoch + 1}/{self.config.epochs} {what} batches", len(self.samplers[split]),
                         clock=self.clock)
        for i, (x, y) in enumerate(self._batches(split, salt), 1):
            loss_sum += step(x, y, score) * len(y)
            seen += len(y)
            if i < beat.total:  # the epoch's own line says the end
                beat.tick(i)
        loss = float(loss_sum) / max(seen, 1)  # the pass's one wait for the device
        wall = time.perf_counter() - start
        return {"loss": loss, "score": score.value, "images_per_s": seen * self.world / wall if wall else 0.0,
                "data_wait_s": self.data_wait, "wall_s": wall}

    def _update(self, x: torch.Tensor, y: torch.Tensor, score: Score, choice: Any, arch: bool) -> torch.Tensor:
        """One optimiser step, of the architecture (with the latency term) or of the weights
        (clipped): both optimisers' gradients cleared, gradients averaged over ranks."""
        opt, scaler = (self.a_opt, self.scalers["arch"]) if arch else (self.w_opt, self.scalers["weights"])
        arch_params, weight_params = self.space_search.arch_parameters(), self.space_search.weight_parameters()
        params, others = (arch_params, weight_params) if arch else (weight_params, arch_params)
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        with frozen(others):
            loss = self._backward(x, y, choice, arch, score, scaler)
        _average_grads(params, self.world)
        if not arch:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        scaler.step(opt)
        scaler.update()
        self.step += 1
        return loss

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor, score: Score, warm: bool) -> torch.Tensor:
        generator = step_generator(self.config.seed, self.step)
        search = self.space_search
        choice = search.single_path(generator) if isinstance(search, OneShotSearch) and self.one_shot \
            else search.weight_choice(warm, generator)
        for group in self.w_opt.param_groups:
            group["lr"] = self._lr()
        self.w_step += 1
        return self._update(x, y, score, choice, arch=False)

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor, score: Score) -> torch.Tensor:
        choice = self.space_search.arch_choice(step_generator(self.config.seed, self.step))
        loss = self._update(x, y, score, choice, arch=True)
        self.space_search.after_arch_step(choice)
        self.controller.update(self.space_search.latency_model())
        return loss

    def continue_from(self, warm: SearchRun) -> None:
        """Take over another run's weights, weight optimiser and counters: searches under several
        budgets share one weight warm-up, as the DenseNAS paper's latency sweep does."""
        self.net.load_state_dict(warm.net.state_dict())
        self.w_opt.load_state_dict(copy.deepcopy(warm.w_opt.state_dict()))
        self.epoch, self.step, self.w_step = warm.epoch, warm.step, warm.w_step

    @torch.no_grad()
    def evaluate(self) -> float:
        """The score on the validation split of the supernet restricted to what derivation keeps
        (DenseNAS: the argmax ops; DCNAS: each cell's strongest connections); of a one-shot run,
        the probe network's with its batch norms recalibrated first, as the study scores networks
        (the running statistics of a single-path supernet mix every network's)."""
        choice = self.probe if self.one_shot else self.space_search.eval_choice()
        if self.one_shot:
            batches = self._batches("train", 3, augment=False)
            calibration = [x for x, _ in itertools.islice(batches, math.ceil(CALIBRATION / self.config.batch_size))]
            with self.precision.autocast():
                recalibrate(self.net, lambda x: self.net(x, choice), calibration)
        self.net.eval()
        score = Score(self.task, self.classes, self.device)
        self.data_wait = 0.0
        for x, y in self._batches("val", 2, augment=False):
            with self.precision.autocast():
                score.add(self.net(x, choice), y)
        return score.value

    # -- the run --------------------------------------------------------------------------------
    def derive(self) -> Network:
        budget, name = self.config.budget_ms, self.folder.path.name
        if self.one_shot and isinstance(self.space_search, OneShotSearch):  # the network the epochs score: a
            return self.space_search.route_network(self.probe, "probe")  # one-shot run derives by evolution
        arch: Network | None = None
        if budget is not None:
            try:
                arch = self.space_search.derive(name, budget, **self.derive_options)
            except UserError as exc:
                self.progress(f"budget derivation failed ({exc}); showing the unconstrained derivation instead")
                budget = None
        arch = arch or self.space_search.derive(name, **self.derive_options)
        return arch.with_meta(provenance(self.config, budget))

    def run(self, until: int | None = None, keep_lock: bool = False) -> dict[str, Any]:
        """Search to the configured number of epochs (or stop after epoch ``until``); one process
        writes a run folder at a time (rank 0 holds ``RUN/.lock``, from ``start_search`` on),
        until this returns, or with ``keep_lock`` until the caller's ``folder.release()``."""
        with process_group_errors():
            if self.rank != 0:
                return self._run(until)
            self.folder.hold()
            try:
                return self._run(until)
            finally:
                if not keep_lock:
                    self.folder.release()

    def _run(self, until: int | None) -> dict[str, Any]:
        record: dict[str, Any] = {}
        arch = None
        while self.epoch < min(self.config.epochs, until or self.config.epochs):
            start = time.perf_counter()
            warm = self.one_shot or self.epoch < self.config.warmup_epochs
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            with out_of_memory(self.device, self.config.batch_size, self.config.accumulate, self.config.amp):
                arch_pass = None if warm else self._pass("val", 1, self._arch_step)
                weight_pass = self._pass("train", 0, lambda x, y, s: self._weight_step(x, y, s, warm))
                val_score = self.evaluate()
            arch = self.derive()
            metric = METRIC[self.task]
            record = {
                "epoch": self.epoch + 1,
                "phase": "single-path" if self.one_shot else "warmup" if warm else "search",
                "metric": metric,
                "train_loss": round(weight_pass["loss"], 5), f"train_{metric}": round(weight_pass["score"], 4),
                "arch_loss": None if arch_pass is None else round(arch_pass["loss"], 5),
                f"arch_{metric}": None if arch_pass is None else round(arch_pass["score"], 4),
                f"val_{metric}_argmax": round(val_score, 4),
                "expected_ms": round(float(self.space_search.latency_model().detach()), 5),
                "lambda": self.controller.value,
                "derived_ms": round(self.table.predict(arch).best_ms, 5),
                **{k: round(v, 4) for k, v in self.space_search.entropies().items()},
                "derived": arch.to_dict(),
                "weight_images_per_s": round(weight_pass["images_per_s"], 1),
                "threads": torch.get_num_threads(),
                "arch_images_per_s": None if arch_pass is None else round(arch_pass["images_per_s"], 1),
                "data_wait_s": round(weight_pass["data_wait_s"] + (arch_pass or {}).get("data_wait_s", 0.0), 2),
                "gpu_memory_mb": (round(torch.cuda.max_memory_allocated(self.device) / 2**20)
                                  if self.device.type == "cuda" else None),
                "wall_s": round(time.perf_counter() - start, 2),
            }
            self.epoch += 1
            if self.rank == 0:  # the log line first: a resume drops lines past the checkpoint
                self.folder.append(record)
                self.folder.save_checkpoint(self._state())
            self.costs[record["phase"]].append(record["wall_s"])
            self.progress(self._progress_line(record))
        if self.rank == 0 and self.epoch == self.config.epochs and not self.one_shot:
            self.folder.save_arch(arch or self.derive())  # derived already, unless resumed at the end
        return record

    def eta_s(self) -> float:
        """Seconds left: the remaining warm-up epochs at the warm-up epochs' mean time, the
        remaining search epochs (an architecture and a weight pass each, so slower) at theirs;
        a phase not yet seen is estimated from the other (a search epoch as twice a warm-up). A
        one-shot run's epochs are all single-path weight epochs."""
        if self.one_shot:
            done = self.costs["single-path"]
            return (self.config.epochs - self.epoch) * (sum(done) / len(done) if done else 0.0)
        warm_left = max(0, self.config.warmup_epochs - self.epoch)
        search_left = self.config.epochs - self.epoch - warm_left
        mean = {k: sum(v) / len(v) for k, v in self.costs.items() if v}
        warm_s = mean.get("warmup", mean.get("search", 0.0) / 2)
        search_s = mean.get("search", 2 * mean.get("warmup", 0.0))
        return warm_left * warm_s + search_left * search_s

    def _progress_line(self, record: dict[str, Any]) -> str:
        metric = record["metric"]
        label = LABEL[metric]
        speed = f"{record['weight_images_per_s']:.0f} img/s weights"
        if record["arch_images_per_s"] is not None:
            speed += f", {record['arch_images_per_s']:.0f} arch"
        if record["gpu_memory_mb"] is not None:
            speed += f", {record['gpu_memory_mb'] / 1024:.1f} GB"
        scores = f"epoch {record['epoch']}/{self.config.epochs} {record['phase']}: train {label} {record[f'train_{metric}']:.3f}, "
        if self.one_shot:
            scores += f"probe network's val {label} {record[f'val_{metric}_argmax']:.3f} ({record['derived_ms']:.3f} ms)"
        else:
            scores += (f"val {label} {record[f'val_{metric}_argmax']:.3f}, expected {record['expected_ms']:.3f} ms, "
                       f"lambda {record['lambda']:.4g}, derived {record['derived_ms']:.3f} ms")
        return scores + f" ({speed}; epoch {record['wall_s']:.1f} s, ETA {self.eta_s() / 60:.1f} min)"

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        # through JSON: plain Python values only (a numpy float in the config would make the
        # checkpoint unreadable with weights_only=True)
        return {"config": json.loads(json.dumps(self.config.to_dict())), "epoch": self.epoch, "step": self.step,
                "w_step": self.w_step,
                "lambda": self.controller.value, "device": self.device.type, "costs": self.costs,
                "net": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def _resume(self) -> None:
        state = self.folder.load_checkpoint()
        saved = {**SearchConfig(table="").to_dict(), **state["config"]}
        diff = [k for k, v in self.config.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v]
        if diff:
            raise UserError(
                f"--resume: run {self.folder.path} was started with a different configuration: "
                + "; ".join(f"{k}: {saved.get(k)!r} vs {getattr(self.config, k)!r}" for k in diff)
            )
        self.folder.load_net(self.net, state)
        try:
            self.w_opt.load_state_dict(state["w_opt"])
            self.a_opt.load_state_dict(state["a_opt"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"--resume: run {self.folder.path}: checkpoint.pt does not fit this search "
                            f"({type(exc).__name__}); it is corrupt or from another version: search again") from None
        self.epoch, self.step, self.w_step = state["epoch"], state["step"], state["w_step"]
        self.controller.load(state["lambda"])
        self.costs = {**self.costs, **state.get("costs", {})}
        saved_device = state.get("device", "cpu")
        if saved_device != self.device.type:  # the checkpoint is read onto the CPU and moved: say so
            self.progress(f"--resume: run {self.folder.path} was searched on {saved_device}; its checkpoint "
                          f"is mapped to {self.device.type} and the search continues there")
        if self.rank == 0:  # drop log lines past the checkpoint, or torn by a kill
            self.folder.keep_log_until(self.epoch)
