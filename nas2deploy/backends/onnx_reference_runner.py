"""The ONNX reference evaluator (``onnx.reference``) as a runner: a third implementation of every
op, written in numpy from the ONNX specification and sharing no kernel with PyTorch or ONNX
Runtime, so agreement with it is independent evidence that the exported graph means what the
network computes. It is slow (pure Python and numpy per node), so export checks run it on a few
inputs only; its timings mean nothing for deployment and ``bench`` does not offer it.
"""

from __future__ import annotations

import numpy as np

from nas2deploy.backends.base import Runner, random_inputs
from nas2deploy.backends.timing import cpu_time_runs
from nas2deploy.errors import UserError


class OnnxReferenceRunner(Runner):
    backend = "onnx-reference"

    def __init__(self, model: bytes, batch: int = 1, source: str = "model"):
        import onnx
        from onnx.reference import ReferenceEvaluator

        try:
            proto = onnx.load_from_string(model)
            self.evaluator = ReferenceEvaluator(proto)
        except Exception as exc:  # onnx raises DecodeError, ValueError, ... for bad models
            raise UserError(f"the ONNX reference evaluator cannot load {source}: {exc}") from None
        self._shapes = {
            i.name: tuple(d.dim_value if d.HasField("dim_value") else batch for d in i.type.tensor_type.shape.dim)
            for i in proto.graph.input
        }
        self._outputs = [o.name for o in proto.graph.output]
        self._feeds = random_inputs(self._shapes)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.evaluator.run(None, feeds)
        return {name: np.asarray(r) for name, r in zip(self._outputs, results)}

    def time_runs(self, n: int) -> list[float]:
        return cpu_time_runs(lambda: self.evaluator.run(None, self._feeds), n)
