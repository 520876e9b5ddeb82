"""The ONNX reference evaluator (``onnx.reference``) as a backend: a third implementation of every
op, written in numpy from the ONNX specification and sharing no kernel with PyTorch or ONNX
Runtime, so agreement with it is independent evidence that the exported graph means what the
network computes. It is slow (pure Python and numpy per node), so export checks run it on a few
inputs only. It is a full backend (``bench --backend onnx-reference``, even ``profile``), but its
timings measure numpy's interpretation of the graph, not any deployment.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

from nas2deploy.backends.base import Artifact, Backend, ModelFile, OnnxModel, Runner, TorchModule, random_inputs
from nas2deploy.backends.timing import cpu_time_runs
from nas2deploy.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from nas2deploy.backends.settings import BackendSettings


#: The longest one run may take (s): the evaluator is pure Python, a minute for a large network is
#: plausible, ten is a model that will not end.
RUN_LIMIT_S = 600


def evaluator_from_onnx(model: bytes, source: str = "model") -> tuple[Any, Any]:
    """The loader: the parsed model and a ReferenceEvaluator over it."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    try:
        proto = onnx.load_from_string(model)
        return proto, ReferenceEvaluator(proto)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for bad models
        raise UserError(f"the ONNX reference evaluator cannot load {source}: {exc}") from None


class OnnxReferenceRunner(Runner):

    def __init__(self, proto: Any, evaluator: Any, batch: int = 1, source: str = "model"):
        self.evaluator, self.source = evaluator, source
        self._shapes = {
            i.name: tuple(d.dim_value if d.HasField("dim_value") else batch for d in i.type.tensor_type.shape.dim)
            for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
        }
        self._outputs = [o.name for o in proto.graph.output]
        self._feeds = random_inputs(self._shapes)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        """One run, stopped by an alarm after ``RUN_LIMIT_S`` (in the main thread, where signals
        arrive: the evaluator is Python, and stops between two of its steps)."""
        def expired(signum: int, frame: Any) -> None:
            raise UserError(f"the ONNX reference evaluator stopped {self.source}: one run took longer than {RUN_LIMIT_S} s "
                            "(a loop that does not end, or a model far too large to interpret)")

        alarm = threading.current_thread() is threading.main_thread()
        if alarm:
            previous = signal.signal(signal.SIGALRM, expired)
            signal.setitimer(signal.ITIMER_REAL, RUN_LIMIT_S)
        try:
            return list(self.evaluator.run(None, feeds))
        except UserError:
            raise
        except Exception as exc:  # numpy errors of a graph that does not compute
            raise UserError(f"the ONNX reference evaluator cannot run {self.source}: {exc}") from None
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        return {name: np.asarray(r) for name, r in zip(self._outputs, self._run(feeds))}

    def time_runs(self, n: int) -> list[float]:
        return cpu_time_runs(lambda: self._run(self._feeds), n)


class OnnxReferenceBackend(Backend):
    name = "onnx-reference"
    devices = ("cpu",)
    precisions = ("fp32",)

    def check_available(self, settings: BackendSettings) -> None:
        """Part of the onnx package, a dependency: always there."""

    def version(self) -> str:
        import onnx

        return str(onnx.__version__)

    def open(self, settings: BackendSettings, artifact: Artifact) -> Runner:
        from nas2deploy.backends.onnx import onnx_from_module, read_model

        if isinstance(artifact, TorchModule):
            artifact = onnx_from_module(artifact, settings.batch)
        elif isinstance(artifact, ModelFile) and artifact.path.suffix in self.suffixes:
            artifact = read_model(artifact)
        if not isinstance(artifact, OnnxModel):
            raise UserError(f"{artifact.source}: the ONNX reference evaluator runs ONNX models ({', '.join(self.suffixes)} files)")
        return OnnxReferenceRunner(*evaluator_from_onnx(artifact.data, artifact.source), settings.batch, artifact.source)
