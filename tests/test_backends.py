import numpy as np
import pytest
import torch
from conftest import FAST, needs_cuda

from nas2deploy.backends import BackendSettings
from nas2deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
from nas2deploy.backends.timing import measure
from nas2deploy.deploy.onnx_export import export_onnx
from nas2deploy.errors import UserError
from nas2deploy.ops import MBConv

SPEC = MBConv(16, 16, 16, 24, 3, 6, 2)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_cpu_runners_agree_with_torch_and_time_themselves(backend):
    settings = BackendSettings(backend=backend, batch=2)
    module = SPEC.build().eval()
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 16)).astype(np.float32)
    with settings.open(module, (16, 16, 16)) as runner:
        assert runner.input_shapes() == {"input": (2, 16, 16, 16)}
        got = runner.infer({"input": x})["output"]
        stats = measure(runner, FAST).stats
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), atol=1e-5, rtol=1e-4)
    assert stats.runs >= 5 and 0 < stats.min_ms <= stats.median_ms <= stats.p99_ms


def test_onnxruntime_refuses_a_silent_cpu_fallback():
    onnx_bytes = export_onnx(SPEC.build(), (1, 16, 16, 16))
    with pytest.raises(UserError, match="CUDAExecutionProvider|cannot load"):
        OnnxRuntimeRunner(onnx_bytes, provider="cuda")


def test_onnxruntime_reports_a_corrupt_model():
    with pytest.raises(UserError, match="ONNX Runtime cannot load broken.onnx"):
        OnnxRuntimeRunner(b"not an onnx file", source="broken.onnx")


def test_metadata_names_the_measurement():
    info = BackendSettings(threads=1).describe()
    for key in ("backend", "backend_version", "device_name", "precision", "batch", "threads", "ort_provider", "onnx_opset"):
        assert key in info
    assert info["threads"] == 1 and "workspace_mb" not in info


def test_bad_settings_are_refused():
    with pytest.raises(UserError, match="fp16 needs a GPU target"):
        BackendSettings(precision="fp16")
    with pytest.raises(UserError, match="valid backends: onnxruntime, torch, tensorrt"):
        BackendSettings(backend="tvm")
    assert BackendSettings(backend="tensorrt").device == "cuda"


@needs_cuda
def test_torch_cuda_runner_times_with_cuda_events():
    settings = BackendSettings(backend="torch", device="cuda", precision="fp16")
    with settings.open(SPEC.build(), (16, 16, 16)) as runner:
        times = runner.time_runs(20)
    assert len(times) == 20 and all(t > 0 for t in times)


@needs_cuda
def test_onnxruntime_cuda_provider_when_installed():
    pytest.importorskip("onnxruntime")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    with BackendSettings(device="cuda").open(SPEC.build(), (16, 16, 16)) as runner:
        assert measure(runner, FAST).stats.runs >= 5
