"""Where a search runs: its device, and the process group torchrun describes in the environment.

One process per GPU: under torchrun each rank takes ``cuda:LOCAL_RANK`` and joins a process
group over NCCL (CUDA) or gloo (CPU). ``backend="gloo"`` with CUDA lets several ranks share one
GPU (NCCL refuses two ranks on one device), which is how the N-rank equality is tested on a
machine with one GPU. Every collective is bounded by ``timeout_s``: a rank that dies or a network
that fails ends the others' waits with an error, which ``process_group_errors`` turns into one
line naming the rank; torchrun then stops the remaining workers, and ``--resume`` continues from
the last checkpoint.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from nas2deploy.errors import UserError

DEFAULT_TIMEOUT_S = 300


def _launched_ranks() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"environment WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun") from None


def launched_as_writer() -> bool:
    """Whether this process writes the run (rank 0 of a torchrun launch, or a plain process),
    known from the environment before the process group is joined."""
    return os.environ.get("RANK", "0").strip() in ("0", "")


def require_cuda() -> None:
    """One line naming what is missing when ``--device cuda`` cannot run."""
    if torch.version.cuda is None:
        raise UserError(f"--device cuda: this torch build ({torch.__version__}) has no CUDA support; install a CUDA "
                        "build of torch, or search with --device cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no usable GPU (torch.cuda.is_available() is False: no NVIDIA driver, no "
                        "device, or CUDA_VISIBLE_DEVICES hides them); search with --device cpu")


def compute_device(name: str) -> torch.device:
    """``cpu``, or under torchrun ``cuda:LOCAL_RANK`` (made the current device), else ``cuda:0``."""
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise UserError(f"--device {name}: expected cpu or cuda")
    require_cuda()
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if local >= torch.cuda.device_count():
        raise UserError(f"--device cuda: LOCAL_RANK {local} but this machine shows {torch.cuda.device_count()} "
                        "GPU(s); give torchrun --nproc-per-node at most the number of GPUs")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def join_process_group(device: torch.device, backend: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group torchrun describes, if launched with more than one rank."""
    if _launched_ranks() <= 1 or dist.is_initialized():
        return
    chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if chosen == "nccl" and device.type != "cuda":
        raise UserError("--dist-backend nccl needs --device cuda")
    rank = os.environ.get("RANK", "?")
    try:
        dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_s),
                                device_id=device if chosen == "nccl" else None)
    except (RuntimeError, ValueError, TimeoutError) as exc:
        raise UserError(f"rank {rank}: could not join the {chosen} process group at "
                        f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} "
                        f"({_first_line(exc)}); check torchrun's --rdzv-endpoint and that every node can reach it") from None


def leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group_errors() -> Iterator[None]:
    """A failed collective (a rank died, the network failed, the timeout passed) as one line."""
    try:
        yield
    except (RuntimeError, TimeoutError) as exc:
        if not (dist.is_available() and dist.is_initialized()) or not _collective_failure(exc):
            raise
        raise UserError(f"rank {dist.get_rank()} of {dist.get_world_size()}: the process group failed "
                        f"({_first_line(exc)}): another rank died or the network failed; "
                        "restart with --resume to continue from the last checkpoint") from None


def _collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


def _first_line(exc: BaseException) -> str:
    """The cause without the C++ source location that gloo and NCCL put first."""
    lines = str(exc).strip().splitlines()
    line = re.sub(r"^\[[^\]]*\.(cpp|cc|h):\d+\]\s*", "", lines[0] if lines else type(exc).__name__)
    return line[:200]
