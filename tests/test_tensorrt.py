"""TensorRT runtime tests: they run only where TensorRT and an NVIDIA GPU exist.

On the CPU machines this project is developed and tested on, these skip; the backend's use of
the TensorRT API is type-checked by mypy against tensorrt-stubs instead (``make typecheck``).
"""

import numpy as np
import pytest
import torch
from conftest import HAS_TENSORRT, needs_tensorrt

from nas2deploy.backends import BackendSettings, TorchModule
from nas2deploy.errors import UserError
from nas2deploy.ops import MBConv

SPEC = MBConv(16, 16, 16, 24, 3, 6, 2)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_one_clear_line():
    with pytest.raises(UserError, match=r"TensorRT is not installed: .*pip install 'nas2deploy\[tensorrt\]'"):
        BackendSettings(backend="tensorrt").check_available()


@needs_tensorrt
@pytest.mark.parametrize("precision, cuda_graph, tol", [("fp32", False, 1e-3), ("fp16", True, 5e-2)])
def test_engine_matches_torch_and_times_with_events(tmp_path, precision, cuda_graph, tol):
    settings = BackendSettings(backend="tensorrt", precision=precision,
                               options={"cuda_graph": cuda_graph, "timing_cache": str(tmp_path / "cache.bin")})
    module = SPEC.build().eval()
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 16)).astype(np.float32)
    with settings.open(TorchModule(module, (16, 16, 16))) as runner:
        got = runner.infer({"input": x})["output"]
        times = runner.time_runs(50)
    want = module(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max())
    assert len(times) == 50 and min(times) > 0
    assert (tmp_path / "cache.bin").stat().st_size > 0


@needs_tensorrt
def test_parser_errors_name_the_node():
    from nas2deploy.backends.tensorrt import build_engine

    with pytest.raises(UserError, match="TensorRT's ONNX parser rejected"):
        build_engine(b"\x08\x07garbage", source="garbage.onnx")
