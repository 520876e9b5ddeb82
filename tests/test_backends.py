import numpy as np
import pytest
import torch
from conftest import FAST, needs_cuda

from nas2deploy.backends import BackendSettings, ModelFile, OnnxModel, TorchModule, open_runner
from nas2deploy.backends.onnx import export_onnx
from nas2deploy.backends.onnxruntime import session_from_onnx
from nas2deploy.backends.timing import measure
from nas2deploy.errors import UserError
from nas2deploy.ops import MBConv

SPEC = MBConv(16, 16, 16, 24, 3, 6, 2)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "onnx-reference"])
def test_cpu_runners_agree_with_torch_and_time_themselves(backend):
    settings = BackendSettings(backend=backend, batch=2)
    module = SPEC.build().eval()
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 16)).astype(np.float32)
    with open_runner(settings, TorchModule(module, (16, 16, 16))) as runner:
        assert runner.input_shapes() == {"input": (2, 16, 16, 16)}
        got = runner.infer({"input": x})["output"]
        stats = measure(runner, FAST).stats
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), atol=1e-5, rtol=1e-4)
    assert stats.runs >= 5 and 0 < stats.min_ms <= stats.median_ms <= stats.p99_ms


def test_onnxruntime_refuses_a_silent_cpu_fallback():
    onnx_bytes = export_onnx(SPEC.build(), (1, 16, 16, 16))
    with pytest.raises(UserError, match="CUDAExecutionProvider|cannot load"):
        session_from_onnx(onnx_bytes, provider="cuda")


def test_onnxruntime_reports_a_corrupt_model():
    with pytest.raises(UserError, match="ONNX Runtime cannot load broken.onnx"):
        open_runner(BackendSettings(), OnnxModel(b"not an onnx file", "broken.onnx"))


def test_metadata_names_the_measurement():
    info = BackendSettings(threads=1).describe()
    for key in ("backend", "backend_version", "device_name", "precision", "batch", "threads", "ort_provider", "onnx_opset"):
        assert key in info
    assert info["threads"] == 1 and "workspace_mb" not in info


def test_bad_settings_are_refused():
    with pytest.raises(UserError, match="fp16 needs a GPU target"):
        BackendSettings(precision="fp16")
    with pytest.raises(UserError, match="valid backends: onnxruntime, torch, tensorrt, onnx-reference"):
        BackendSettings(backend="tvm")
    assert BackendSettings(backend="tensorrt").device == "cuda"
    with pytest.raises(UserError, match="--cuda-graph captures GPU launches: it needs --device cuda .*--backend torch --device cpu"):
        BackendSettings(backend="torch", options={"cuda_graph": True})
    with pytest.raises(UserError, match="--cuda-graph applies to --backend torch or tensorrt only; --backend onnxruntime"):
        BackendSettings(device="cuda", options={"cuda_graph": True})
    with pytest.raises(UserError, match=r"--workspace-mb 0 for --backend tensorrt: expected a whole number in \[1, 1048576\]"):
        BackendSettings(backend="tensorrt", options={"workspace_mb": 0})
    with pytest.raises(UserError, match="no backend has an option 'fast'"):
        BackendSettings(options={"fast": True})
    with pytest.raises(UserError, match="--backend aoti runs fp32, not --precision fp16"):
        BackendSettings(backend="aoti", device="cuda", precision="fp16")


@needs_cuda
def test_torch_cuda_runner_times_with_cuda_events():
    settings = BackendSettings(backend="torch", device="cuda", precision="fp16")
    with open_runner(settings, TorchModule(SPEC.build(), (16, 16, 16))) as runner:
        times = runner.time_runs(20)
    assert len(times) == 20 and all(t > 0 for t in times)


@needs_cuda
def test_torch_cuda_graph_replays_the_module_and_records_it():
    settings = BackendSettings(backend="torch", device="cuda", options={"cuda_graph": True})
    assert settings.describe()["cuda_graph"] is True
    module = SPEC.build().eval()
    with open_runner(settings, TorchModule(module, (16, 16, 16))) as runner:
        times = runner.time_runs(50)
        replayed = runner._graph is not None
    assert replayed and len(times) == 50 and all(t > 0 for t in times)


class HostSync(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.sum())  # reads the GPU's result on the host: not capturable


@needs_cuda
def test_an_op_that_cannot_be_captured_is_named_and_eager_offered():
    settings = BackendSettings(backend="torch", device="cuda", options={"cuda_graph": True})
    with pytest.raises(UserError, match=r"the-op: its forward pass waits for the GPU on the host .*\(leave out --cuda-graph\)"):
        open_runner(settings, TorchModule(HostSync(), (4, 8, 8), "the-op"))
    with open_runner(BackendSettings(backend="torch", device="cuda"), TorchModule(HostSync(), (4, 8, 8))) as runner:
        assert len(runner.time_runs(3)) == 3  # the same op times eagerly, and the GPU is still usable


@needs_cuda
def test_onnxruntime_cuda_provider_when_installed():
    pytest.importorskip("onnxruntime")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    with open_runner(BackendSettings(device="cuda"), TorchModule(SPEC.build(), (16, 16, 16))) as runner:
        assert measure(runner, FAST).stats.runs >= 5


def test_each_backend_names_the_artifacts_it_runs(tmp_path):
    with pytest.raises(UserError, match="--backend torch runs PyTorch modules, not model files"):
        open_runner(BackendSettings(backend="torch"), ModelFile(tmp_path / "m.onnx"))
    with pytest.raises(UserError, match="ONNX Runtime runs ONNX models"):
        open_runner(BackendSettings(), ModelFile(tmp_path / "m.engine"))
    assert BackendSettings(backend="onnx-reference", device="cuda").device == "cpu"  # numpy runs on the CPU
