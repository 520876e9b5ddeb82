"""The folder of one search run: its configuration, log, checkpoint and derived architecture.

``config.json`` (the configuration the run started with), ``log.jsonl`` (one record per epoch,
appended), ``checkpoint.pt`` (written atomically after every epoch, loaded with
``weights_only=True`` and validated field by field), ``arch.json`` (at the end) and ``.lock``
while a process writes the folder. No file is written through a symbolic link; a link planted
in the folder is refused before any work.

The lock comes first: a process takes ``.lock`` (``hold``) before it checks, replaces or starts
anything in the folder, and keeps it until the search and what follows it (the derived
network, the evolution study) are written, so a second process is refused having changed
nothing, whatever step the first has reached.
"""

from __future__ import annotations

import contextlib
import io
import math
import json
from pathlib import Path
from typing import Any

import torch

from nas2deploy.errors import UserError
from nas2deploy.fileio import (append_line, atomic_write_bytes, atomic_write_json, claim_folder, folder_lock, refuse_link,
                               require_writable)
from nas2deploy.nets import Network, save_arch
from nas2deploy.search.config import SearchConfig
from nas2deploy.validate import Field

#: What a run folder holds (``.lock`` while a process writes it).
RUN_FILES = ("config.json", "log.jsonl", "checkpoint.pt", "arch.json", ".lock")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._held: contextlib.ExitStack | None = None
        for name in RUN_FILES:  # before any work: a link planted in the run folder is refused
            refuse_link(self.path / name)

    def hold(self) -> None:
        """Take the folder's lock (one writer at a time: a second process is refused, naming the
        first) unless this object holds it already; kept until ``release``."""
        if self._held is None:
            stack = contextlib.ExitStack()
            stack.enter_context(folder_lock(self.path, f"search run {self.path}"))
            self._held = stack

    def release(self) -> None:
        """Give the lock up (and remove the folder this object created, if it stayed empty)."""
        if self._held is not None:
            held, self._held = self._held, None
            held.close()

    def claim(self, resume: bool, force: bool) -> None:
        """Before any work: a resumed run needs its checkpoint; a new one needs a writable folder
        that is empty, or holds only a run's files, and no search unless ``force`` (start over)."""
        if resume:
            if not (self.path / "checkpoint.pt").exists():
                raise UserError(f"--resume: run {self.path} holds no checkpoint.pt: start the search without --resume")
            require_writable(self.path)
            return
        if (self.path / "checkpoint.pt").exists() and not force:
            raise UserError(f"run {self.path} already holds a search: pass --resume to continue it, --force to start "
                            "over, or another --out")
        claim_folder(self.path, force, own=RUN_FILES)

    def start(self, config: SearchConfig) -> None:
        """A new run (``claim`` checked the folder): the configuration and an empty log."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoint.pt").unlink(missing_ok=True)  # --force: the old run's, never resumed by accident
        atomic_write_json(self.path / "config.json", config.to_dict())
        atomic_write_bytes(self.path / "log.jsonl", b"")

    def append(self, record: dict[str, Any]) -> None:
        append_line(self.path / "log.jsonl", json.dumps(record))

    def keep_log_until(self, epoch: int) -> None:
        """Drop log lines past ``epoch`` (written after the last checkpoint) or torn by a kill."""
        log = self.path / "log.jsonl"
        kept = []
        for line in log.read_text().splitlines() if log.exists() else []:
            try:
                if json.loads(line)["epoch"] <= epoch:
                    kept.append(line)
            except (json.JSONDecodeError, RecursionError, KeyError, TypeError):
                continue
        atomic_write_bytes(log, "".join(ln + "\n" for ln in kept).encode())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path / "checkpoint.pt", buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any]:
        """The checkpoint, every field checked; its configuration as ``SearchConfig`` fields."""
        path = self.path / "checkpoint.pt"
        if not path.exists():
            raise UserError(f"run {self.path}: no checkpoint.pt; it holds no search (start one with nas2deploy search)")
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # torch raises several types for corrupt or unsafe files
            raise UserError(f"run {self.path}: checkpoint.pt cannot be read ({type(exc).__name__}); it is corrupt") from None
        if not isinstance(state, dict) or "config" not in state or "net" not in state:
            raise UserError(f"run {self.path}: checkpoint.pt is not a nas2deploy search checkpoint")
        doc = Field(state, f"run {self.path}: checkpoint.pt", "search again or restore the checkpoint")
        doc["config"]["table"].str(max_len=4096)
        state["config"] = SearchConfig.read(doc["config"])
        for key in ("epoch", "step", "w_step"):
            doc[key].int(0, 2**62)
        doc["lambda"].number(0, 1e3)
        if doc.has("device"):  # runs written before --device searched on the CPU
            doc["device"].str(("cpu", "cuda"))
        if doc.has("costs"):
            for phase, costs in doc["costs"].items(max_len=8):
                if phase not in ("warmup", "search", "single-path"):
                    raise costs.error("is not a phase of a search (warmup, search, single-path)", shown=False)
                for cost in costs.list(max_len=100_000):
                    cost.number(0, 1e9)
        if not isinstance(state["net"], dict) or not all(isinstance(v, torch.Tensor) for v in state["net"].values()):
            raise doc["net"].error("must map names to tensors", shown=False)
        for key in ("w_opt", "a_opt"):  # a checkpoint without its optimisers' state is not one this tool wrote
            doc[key].object()
        for key in ("net", "w_opt", "a_opt"):
            bad = _first_non_finite(state.get(key), key)
            if bad:
                raise UserError(f"run {self.path}: checkpoint.pt field {bad} holds a value that is not finite; the "
                                "checkpoint is corrupt: search again or restore it")
        return state

    def load_net(self, net: torch.nn.Module, state: dict[str, Any]) -> None:
        """Load a checkpoint's supernet tensors into ``net``: each of the dtype the supernet keeps
        (``load_state_dict`` would cast an int64 tensor silently) and all of them its own."""
        own = net.state_dict()
        wrong = [k for k, v in own.items() if k in state["net"] and state["net"][k].dtype != v.dtype]
        if wrong:
            raise UserError(f"run {self.path}: checkpoint.pt holds {wrong[0]} as {state['net'][wrong[0]].dtype}, the "
                            f"supernet keeps it as {own[wrong[0]].dtype}; the checkpoint is corrupt: search again")
        try:
            net.load_state_dict(state["net"])
        except RuntimeError:
            raise UserError(f"run {self.path}: checkpoint.pt does not fit the space of table {state['config'].get('table')}; "
                            "was the table replaced, or the checkpoint edited?") from None

    def save_arch(self, arch: Network) -> None:
        save_arch(arch, self.path / "arch.json")


def _first_non_finite(value: Any, where: str, depth: int = 0) -> str | None:
    """The first field below ``value`` (tensors, numbers, nested dicts and lists: a state dict or
    an optimiser's state and hyper-parameters) holding a NaN or an infinity, or None."""
    if depth > 8:
        return where
    if isinstance(value, torch.Tensor):
        return where if value.is_floating_point() and not bool(torch.isfinite(value).all()) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        bad = _first_non_finite(item, f"{where}.{key}", depth + 1)
        if bad:
            return bad
    return None
