"""Export: ONNX checks, accuracy comparison on real inputs, latency, the folder and its report,
`bench` and `report`; ONNX Runtime, PyTorch and the ONNX reference evaluator are real here."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import needs_cuda, needs_tensorrt
from PIL import Image

from nas2deploy.nets import save_arch
from nas2deploy.nets.chain import Arch, Block
from nas2deploy.cli import cli
from nas2deploy.deploy import compare as compare_module
from nas2deploy.deploy.compare import compare_outputs
from nas2deploy.errors import UserError
from nas2deploy.train import save_weights

TINY = Arch(32, 10, 8, 8, 1, (Block(16, 2, "k3e3", ("k5e3",)), Block(24, 2, "k5e6", ())), 64, "tiny",
            {"data": "synthetic:80", "budget_ms": 5.0})


@pytest.fixture()
def arch_file(tmp_path):
    path = tmp_path / "tiny.json"
    save_arch(TINY, path)
    return path


def export(tmp_path, arch_file, *extra):
    return CliRunner().invoke(cli, ["export", "--arch", str(arch_file), "--out", str(tmp_path / "out"), "--samples", "12", *extra])


def test_compare_passes_identical_outputs_and_reports_the_room_left():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((20, 10)).astype(np.float32)
    same = compare_outputs(ref, ref.copy())
    assert same.passed and same.max_abs == 0 and same.top1_agreement == 1.0 and same.min_tolerance == 0
    near = compare_outputs(ref, ref + 5e-5)
    scales = np.abs(ref).max(axis=1)
    assert near.passed and 5e-5 / (2 * scales.max()) <= near.min_tolerance <= 5e-5 / scales.min() + 1e-9


def test_the_fp32_tolerance_follows_each_samples_output_scale():
    """Float32 rounding grows with the logits: 1.4e-4 off logits of 5 passes (a trained network's
    export), the same error off logits of 0.5 fails, and a large sample never loosens a small one."""
    rng = np.random.default_rng(1)
    ref = rng.uniform(-5, 5, (8, 10))
    ref[:, 0] = 5.0
    assert compare_outputs(ref, ref + 1.4e-4).passed
    assert not compare_outputs(ref / 10, ref / 10 + 1.4e-4).passed
    mixed = np.concatenate([ref[:4], ref[4:] / 10])
    off = mixed.copy()
    off[5] += 1.4e-4  # a small-logit sample beside large ones
    assert not compare_outputs(mixed, off).passed


def test_compare_fails_on_element_error_top1_flip_and_nan():
    ref = np.eye(10, dtype=np.float32)[:8] * 3
    assert not compare_outputs(ref, ref + 1e-3).passed  # element-wise above atol + rtol * |ref|
    flipped = ref.copy()
    flipped[0, 1] = 3.00001  # a near-tie that flips one top-1 class: small error, still a failure
    flipped[0, 0] = 2.99999
    c = compare_outputs(ref, flipped)
    assert c.top1_agreement == 7 / 8 and not c.passed
    broken = ref.copy()
    broken[2, 2] = np.nan
    assert not compare_outputs(ref, broken).passed
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(ref, ref[:4])


def test_compare_fp16_thresholds():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((200, 10)) * 4
    assert compare_outputs(ref, ref + rng.normal(0, 3e-3, ref.shape), "fp16").passed
    assert not compare_outputs(ref, ref + 0.05, "fp16").passed  # mean error above 1e-2


def test_export_writes_a_checked_measured_folder(tmp_path, arch_file):
    weights = tmp_path / "w.pt"
    save_weights(TINY.build(), weights)
    result = export(tmp_path, arch_file, "--weights", str(weights))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for name in ("model.onnx", "arch.json", "weights.pt", "report.json", "report.md", "latency.png", "blocks.png", "arch.png"):
        assert (out / name).stat().st_size > 0, name
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]
    assert len(model.graph.value_info) > 0  # shapes inferred and kept
    # BN folded into the convs; what else a simplifier could remove is Identity / Constant
    assert {n.op_type for n in model.graph.node} <= {"Conv", "Clip", "Add", "GlobalAveragePool", "Flatten", "Gemm", "Identity", "Constant"}
    report = json.loads((out / "report.json").read_text())
    by = {c["candidate"]: c for c in report["accuracy"]["comparisons"]}
    assert by["onnxruntime"]["samples"] == 12 and by["onnx-reference"]["samples"] == 4
    assert all(c["passed"] and c["max_abs_of_scale"] < 1e-4 for c in by.values())
    assert report["latency"]["onnxruntime"]["timing"]["median_ms"] > 0
    assert report["budget_ms"] == 5.0
    text = (out / "report.md").read_text()
    assert "## Accuracy: passed" in text and "![latency.png](latency.png)" in text
    (out / "report.md").unlink()
    (out / "arch.png").unlink()
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_text() == text and (out / "arch.png").exists()


def test_over_budget_and_noisy_measurements_are_warned_and_strict_fails(tmp_path, arch_file, monkeypatch):
    """The latency is injected (2 ms, CoV 150%): above a 1 ms budget, and noisy."""
    import dataclasses

    import nas2deploy.deploy.export as export_module
    from nas2deploy.backends.timing import TimingStats

    real = export_module.measure

    def injected(runner, timing, *args):
        measured = real(runner, timing, *args)
        stats = TimingStats.from_samples([2.0] * 9 + [10.0])
        return dataclasses.replace(measured, stats=dataclasses.replace(stats, median_ms=2.0, cov=1.5))

    monkeypatch.setattr(export_module, "measure", injected)
    result = export(tmp_path, arch_file, "--budget-ms", "1")
    assert result.exit_code == 0, result.output
    assert "warning: onnxruntime measured 2.000 ms, 2.00x the 1 ms budget" in result.stderr
    assert "warning: onnxruntime: the runs varied by CoV 150%" in result.stderr
    assert "warning" not in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["over_budget"] == ["onnxruntime measured 2.000 ms, 2.00x the 1 ms budget"] and len(report["warnings"]) == 2
    text = (tmp_path / "out" / "report.md").read_text()
    assert "**Warning:** onnxruntime measured 2.000 ms" in text and "| latency.png | the plot below |" in text
    result = export(tmp_path, arch_file, "--budget-ms", "1", "--strict", "--force")
    assert result.exit_code == 1 and "--strict: onnxruntime measured 2.000 ms, 2.00x the 1 ms budget" in result.stderr
    assert (tmp_path / "out" / "report.md").exists()
    assert export(tmp_path, arch_file, "--budget-ms", "3", "--strict", "--force").exit_code == 0


def test_a_failing_check_writes_the_report_and_exits_non_zero(tmp_path, arch_file, monkeypatch):
    monkeypatch.setattr(compare_module, "FP32_TOLERANCE", 0.0)  # no two runtimes agree to the last bit
    result = export(tmp_path, arch_file)
    assert result.exit_code == 1 and "accuracy check failed" in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] is False
    assert "## Accuracy: FAILED" in (tmp_path / "out" / "report.md").read_text()


def test_dynamic_batch_and_image_files(tmp_path, arch_file):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    result = export(tmp_path, arch_file, "--dynamic-batch", "--batch", "3", "--images", str(images))
    assert result.exit_code == 0, result.output
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["accuracy"]["samples"] == 7  # 7 inputs through a batch of 3: the last chunk padded
    assert report["latency"]["onnxruntime"]["settings"]["batch"] == 3


def test_export_refuses_bad_input_without_writing(tmp_path, arch_file):
    result = export(tmp_path, arch_file, "--images", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "--images" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    other = Arch(32, 10, 8, 8, 1, (Block(16, 2, "k3e3", ()),), 64, "other")
    save_weights(other.build(), tmp_path / "other.pt")
    result = export(tmp_path, arch_file, "--weights", str(tmp_path / "other.pt"))
    assert result.exit_code == 1 and "do not match arch" in result.output and "missing" in result.output
    assert not (tmp_path / "out").exists()
    (tmp_path / "corrupt.pt").write_bytes(b"not a zip")
    result = export(tmp_path, arch_file, "--weights", str(tmp_path / "corrupt.pt"), "--force")
    assert result.exit_code == 1 and "corrupt.pt" in result.output
    result = export(tmp_path, arch_file, "--data", "synthetic:80")
    assert result.exit_code == 0, result.output
    result = export(tmp_path, arch_file)
    assert result.exit_code == 1 and "not empty" in result.output and "--force" in result.output
    assert export(tmp_path, arch_file, "--force").exit_code == 0
    result = export(tmp_path, arch_file, "--force", "--data", "synthetic:80", "--lut", str(tmp_path / "none.json"))
    assert result.exit_code == 1 and "none.json" in result.output


def test_bench_summarises_an_onnx_model_and_refuses_corrupt_files(tmp_path, arch_file):
    assert export(tmp_path, arch_file).exit_code == 0
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "out" / "model.onnx"), "--runs", "20", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    t = summary["timing"]
    assert t["runs"] >= 20 and t["min_ms"] <= t["median_ms"] <= t["p90_ms"] <= t["p99_ms"]
    assert summary["throughput_per_s"] == pytest.approx(1000 / t["mean_ms"])  # sustained: the slow runs count
    text = CliRunner().invoke(cli, ["bench", str(tmp_path / "out" / "model.onnx"), "--runs", "20"]).output
    assert "median" in text and "throughput" in text
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 1 and "bad.onnx" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "out" / "weights.pt")])
    assert result.exit_code == 1 and "expected a model file (.engine, .onnx, .pt2)" in result.output
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "out" / "model.onnx"), "--batch", "4"])
    assert result.exit_code == 1 and "was built for batch 1: --batch 4 needs a model exported with --dynamic-batch" in result.output


def test_the_onnx_reference_evaluator_is_a_full_backend(tmp_path, arch_file):
    assert export(tmp_path, arch_file).exit_code == 0
    model = str(tmp_path / "out" / "model.onnx")
    result = CliRunner().invoke(cli, ["bench", model, "--backend", "onnx-reference", "--runs", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["settings"]["backend"] == "onnx-reference" and summary["timing"]["runs"] >= 3
    result = CliRunner().invoke(cli, ["bench", model, "--backend", "torch"])
    assert result.exit_code == 1 and ".onnx files run with --backend" in result.output


def test_report_refuses_other_folders(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "neither an export folder" in result.output


def test_engine_platform_mismatch_names_both():
    from nas2deploy.backends.tensorrt import check_engine_platform

    built = {"tensorrt": "10.13.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    check_engine_platform(built, dict(built), "model.engine")
    with pytest.raises(UserError, match=r"built for tensorrt 10\.13\.0; this machine has tensorrt 11\.0\.0"):
        check_engine_platform(built, {**built, "tensorrt": "11.0.0"}, "model.engine")
    with pytest.raises(UserError, match="gpu NVIDIA H100 80GB HBM3, compute_capability 9.0; this machine has gpu NVIDIA L4"):
        check_engine_platform(built, {**built, "gpu": "NVIDIA L4", "compute_capability": "8.9"}, "model.engine")


@needs_cuda
def test_export_measures_torch_on_cuda(tmp_path, arch_file):
    result = export(tmp_path, arch_file, "--backend", "torch", "--device", "cuda")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["latency"]["torch"]["settings"]["device"] == "cuda"


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_export_builds_and_checks_a_tensorrt_engine(tmp_path, arch_file, precision):
    result = export(tmp_path, arch_file, "--backend", "tensorrt", "--precision", precision)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert (out / "model.engine").stat().st_size > 0 and json.loads((out / "model.engine.json").read_text())["gpu"]
    by = {c["candidate"]: c for c in json.loads((out / "report.json").read_text())["accuracy"]["comparisons"]}
    assert by["tensorrt"]["passed"]
    result = CliRunner().invoke(cli, ["bench", str(out / "model.engine"), "--backend", "tensorrt", "--json"])
    assert result.exit_code == 0, result.output


# -- AOTInductor: one package compiled (C++ on this CPU, ~20-40 s) for every check below ----------
@pytest.fixture(scope="module")
def aoti_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aoti")
    arch = tmp / "tiny.json"
    save_arch(TINY, arch)
    result = export(tmp, arch, "--backend", "aoti", "--backend", "onnxruntime")
    return tmp / "out", result


def test_export_compiles_checks_and_measures_an_aoti_package(aoti_export):
    out, result = aoti_export
    assert result.exit_code == 0, result.output
    assert "PASS aoti vs torch on 12 inputs" in result.output
    report = json.loads((out / "report.json").read_text())
    deployed = report["deployed"]["aoti"]
    assert deployed["file"] == "model.pt2" and deployed["compile_s"] > 0 and deployed["batch"] == 1
    assert {"model.pt2", "model.onnx", "weights.pt"} <= set(report["files"])  # SHA-256 recorded: bench verifies
    assert report["latency"]["aoti"]["timing"]["median_ms"] > 0 and report["latency"]["onnxruntime"]["timing"]["median_ms"] > 0
    assert "| model.pt2 | AOTInductor package (cpu, batch 1" in (out / "report.md").read_text()
    info = json.loads((out / "model.pt2.json").read_text())
    assert info["input_shape"] == [1, 3, 32, 32] and info["device"] == "cpu"


def test_bench_runs_a_package_and_refuses_one_built_elsewhere(aoti_export, tmp_path):
    out, _ = aoti_export
    result = CliRunner().invoke(cli, ["bench", str(out / "model.pt2"), "--backend", "aoti", "--runs", "10", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["batch"] == 1
    result = CliRunner().invoke(cli, ["bench", str(out / "model.pt2")])
    assert result.exit_code == 1 and ".pt2 files run with --backend aoti" in result.output
    moved = tmp_path / "model.pt2"  # a copy whose record says it was built with another torch elsewhere
    moved.write_bytes((out / "model.pt2").read_bytes())
    info = json.loads((out / "model.pt2.json").read_text())
    (tmp_path / "model.pt2.json").write_text(json.dumps({**info, "torch": "2.0.0", "processor": "Apple M4 (10 cores)"}))
    result = CliRunner().invoke(cli, ["bench", str(moved), "--backend", "aoti"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "was built for torch 2.0.0, processor Apple M4 (10 cores); this machine has torch" in result.output
    (tmp_path / "model.pt2.json").unlink()
    result = CliRunner().invoke(cli, ["bench", str(moved), "--backend", "aoti"])
    assert result.exit_code == 1 and "model.pt2.json is missing" in result.output


def test_aoti_refuses_what_it_cannot_build(tmp_path, arch_file):
    result = export(tmp_path, arch_file, "--backend", "aoti", "--dynamic-batch")
    assert result.exit_code == 1 and "--backend aoti builds for one batch" in result.output
    assert not (tmp_path / "out").exists()  # refused before any file was written


def test_a_package_loader_that_crashes_is_one_line(aoti_export, tmp_path, monkeypatch):
    """The loader crash seen with torch 2.11.0+cu130 on the GPU image, injected: the probe child
    kills itself with SIGSEGV, and bench says so in one line instead of dying with it."""
    from nas2deploy.backends import aoti

    out, _ = aoti_export
    monkeypatch.setattr(aoti, "LOAD_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(aoti, "_LOADER_WORKS", set())
    result = CliRunner().invoke(cli, ["bench", str(out / "model.pt2"), "--backend", "aoti", "--runs", "5"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "crashed (SIGSEGV) loading AOTInductor package" in result.output and "another --backend" in result.output


def test_an_export_says_what_is_wrong_with_its_table(tmp_path):
    """A table that drifted while it was profiled is warned about where its prediction is used:
    in the export's output and its report."""
    import random
    from pathlib import Path

    from nas2deploy.nets import save_arch
    from nas2deploy.spaces import make_space

    shipped = Path(__file__).resolve().parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"
    doc = json.loads(shipped.read_text())
    doc["meta"]["profile"]["drift"] = [[10, 1.0], [200, 1.28]]
    table = tmp_path / "t.json"
    table.write_text(json.dumps(doc))
    arch = tmp_path / "a.json"
    save_arch(make_space("densenas", doc["meta"]["space"]["config"]).sample_arch(random.Random(0)), arch)
    result = CliRunner().invoke(cli, ["export", "--arch", str(arch), "--lut", str(table), "--data", "synthetic:40",
                                      "--samples", "4", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "drifted by +28%" in result.output
    assert any("drifted by +28%" in line for line in json.loads((tmp_path / "e" / "report.json").read_text())["warnings"])
