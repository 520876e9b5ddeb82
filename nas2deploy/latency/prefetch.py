"""Overlap the overheads of profiling: the next ops are built and exported in a helper process
while the current one is timed.

On ONNX Runtime a fifth of a profile's wall time went to building each op in torch and
exporting it to ONNX (``Backend.prepare``), with the CPU's other core idle during the timed runs.
The helper process does that work for the next ``depth`` ops at the lowest scheduling priority
(``nice 19``) and one thread, so that it takes the idle core and yields the timed core; the
timing process only creates the session. What the helper costs the timing is measured by
``benchmarks/profile_speed.py`` (the same ops timed with and without it).

The helper is this module run as a program (``python -m nas2deploy.latency.prefetch``) over a
pipe, not a ``multiprocessing`` child: a spawned child re-imports the caller's main script, so a
user's script without an ``if __name__ == "__main__"`` guard would start profiling again inside
it. Requests and answers are pickled between this process and its own child only.

A backend whose ``prepare`` does nothing (PyTorch, AOTInductor) gets no helper, and neither does
a profile of fewer than ``MIN_OPS`` ops: starting the helper (a fresh interpreter importing torch,
about 2 s) costs more than it saves on a shard or a small space. The artifacts are exactly what
``prepare`` returns in this process (the helper runs the same code), and a helper that fails or
dies falls back to preparing here, so overlapping never changes a table.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import IO, Any

from nas2deploy.backends import Artifact, BackendSettings, TorchModule
from nas2deploy.backends.base import Backend
from nas2deploy.ops import OpSpec

#: The fewest ops for which a helper process pays for its start (~20 ms saved per op).
MIN_OPS = 100


def module_of(spec: OpSpec) -> TorchModule:
    """The op as profiling runs it: built alone, at its input shape, named by its key, as it runs
    inside a network."""
    return TorchModule(spec.build_standalone(), (spec.cin, spec.h, spec.w), spec.key, interior=True)


def prepares(settings: BackendSettings) -> bool:
    """Whether the backend has loading work that a helper process can take over."""
    return type(settings.impl).prepare is not Backend.prepare


class Prefetcher:
    """``artifact(spec)`` for the ops of ``order``, in that order, prepared ``depth`` ahead in a
    helper process (``enabled``, and at least ``min_ops`` ops), else here when asked."""

    def __init__(self, settings: BackendSettings, order: list[OpSpec], enabled: bool = True, depth: int = 2,
                 min_ops: int = MIN_OPS):
        self.settings, self.order, self.depth = settings, order, depth
        self.helper: subprocess.Popen[bytes] | None = None
        if enabled and prepares(settings) and len(order) >= min_ops:
            root = str(Path(__file__).resolve().parents[2])  # the helper imports this nas2deploy
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
            self.helper = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           env=env, preexec_fn=lambda: os.nice(19))
        self.pending: deque[str] = deque()
        self.next = 0
        self._top_up()

    def _top_up(self) -> None:
        while self.helper is not None and self.next < len(self.order) and len(self.pending) < self.depth:
            spec = self.order[self.next]
            try:
                _send(self.helper.stdin, (self.settings, spec.to_dict()))
            except (BrokenPipeError, OSError):
                self.close()
                return
            self.pending.append(spec.key)
            self.next += 1

    def artifact(self, spec: OpSpec) -> Artifact:
        if self.helper is not None and self.pending and self.pending[0] == spec.key:
            self.pending.popleft()
            try:
                ok, value = pickle.load(self.helper.stdout)  # type: ignore[arg-type]
            except (EOFError, pickle.UnpicklingError, OSError):  # the helper died
                ok, value = False, None
            if ok:
                self._top_up()
                return value
            self.close()  # a failure: prepare here, where the error (if it is one) is raised as usual
        return module_of(spec)  # the backend's open() prepares it

    def close(self) -> None:
        if self.helper is not None:
            self.helper.kill()
            self.helper.wait()
            self.helper = None
            self.pending.clear()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send(stream: IO[bytes] | None, obj: Any) -> None:
    assert stream is not None
    pickle.dump(obj, stream)
    stream.flush()


def _serve() -> None:
    """The helper's loop: a request (settings, spec) in, ``(True, artifact)`` or ``(False, reason)``
    out, until the pipe closes. Its own stdout is redirected to stderr, so that nothing a library
    prints can corrupt the answers."""
    import torch

    torch.set_num_threads(1)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        try:
            settings, spec = pickle.load(requests)
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, settings.impl.prepare(settings, module_of(OpSpec.from_dict(spec))))
        except Exception as exc:  # reported to the profiler, which prepares the op itself and raises it there
            answer = (False, f"{type(exc).__name__}: {exc}")
        _send(answers, answer)


if __name__ == "__main__":
    _serve()
