"""INT8 exports: the fp32 graph quantised to QDQ on real calibration images (ONNX Runtime's own
quantisation tools), run and timed by ONNX Runtime, and judged by the accuracy it loses."""

import collections
import json
import logging

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from nas2deploy.backends.onnx import export_onnx
from nas2deploy.backends.quantize import CALIBRATORS, float_ops, quantize_qdq
from nas2deploy.cli import cli
from nas2deploy.cli.deploy import CALIBRATORS as CLI_CALIBRATORS
from nas2deploy.data import open_dataset
from nas2deploy.deploy import export as export_module
from nas2deploy.deploy.compare import compare_outputs
from nas2deploy.errors import UserError
from nas2deploy.nets import load_arch

ARCH = {"format": "nas2deploy.arch", "version": 1, "input_size": 32, "num_classes": 10,
        "stem": {"conv": 8, "out": 8, "stride": 1},
        "blocks": [{"out": 16, "stride": 2, "head": "k3e3"}, {"out": 24, "stride": 2, "head": "k5e6"}], "tail": 64}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    (tmp / "a.json").write_text(json.dumps(ARCH))
    torch.manual_seed(0)
    model = load_arch(str(tmp / "a.json")).build().eval()
    data = open_dataset("synthetic:300", 32)
    images = np.stack([np.asarray(data.train[i][0], dtype=np.float32) for i in range(64)])
    tests = np.stack([np.asarray(data.test[i][0], dtype=np.float32) for i in range(32)])
    return tmp, model, export_onnx(model, (1, 3, 32, 32)), images, tests


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("calibrator", CALIBRATORS)
def test_a_graph_is_quantised_to_qdq_with_per_channel_weights_and_stays_close(graph, calibrator):
    _, model, fp32, images, tests = graph
    quantized = quantize_qdq(fp32, images, 1, calibrator)
    proto = onnx.load_from_string(quantized.data)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # weights dequantised too
    weights = {i.name: i for i in proto.graph.initializer}
    conv_weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
                    and onnx.numpy_helper.to_array(weights[n.input[0]]).ndim == 4]
    assert conv_weights and all(onnx.numpy_helper.to_array(weights[n.input[0]]).dtype == np.int8 for n in conv_weights)
    assert all(onnx.numpy_helper.to_array(weights[n.input[2]]).any() == 0 for n in conv_weights if len(n.input) > 2)
    assert all(onnx.numpy_helper.to_array(weights[n.input[1]]).size > 1 for n in conv_weights)  # a scale per channel
    reference, out = _run(fp32, tests), _run(quantized.data, tests)
    cosine = np.sum(reference * out, 1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(out, axis=1)
    assert cosine.min() > 0.95, cosine.min()
    assert quantize_qdq(fp32, images, 1, calibrator).data == quantized.data  # the same images, the same model


def test_too_few_calibration_images_are_refused(graph):
    _, _, fp32, images, _ = graph
    with pytest.raises(UserError, match="at least 32"):
        quantize_qdq(fp32, images[:8], 1)


def test_the_command_line_offers_the_calibrators_there_are():
    assert CLI_CALIBRATORS == CALIBRATORS


def test_an_int8_accuracy_check_judges_the_points_lost():
    reference = np.eye(10)[np.arange(100) % 10] * 5.0
    labels = np.arange(100) % 10
    worse = reference.copy()
    worse[:3] = np.roll(worse[:3], 1, axis=1)  # three of 100 now wrong: 3 points lost
    lost = compare_outputs(reference, worse, "int8", labels=labels, max_drop=1.0)
    assert not lost.passed and lost.accuracy_drop == pytest.approx(3.0) and "int8: accuracy drop <= 1 points" in lost.threshold
    assert compare_outputs(reference, worse, "int8", labels=labels, max_drop=5.0).passed
    unlabelled = compare_outputs(reference, worse, "int8", max_drop=1.0)  # then the disagreement is judged
    assert not unlabelled.passed and unlabelled.accuracy_drop is None and "top-1 disagreement" in unlabelled.threshold


def test_an_int8_export_writes_checks_and_times_the_quantised_graph(graph, tmp_path):
    tmp = graph[0]
    out = tmp_path / "e"
    args = ["export", "--arch", str(tmp / "a.json"), "--data", "synthetic:300", "--samples", "40", "--precision", "int8",
            "--calibration-data", "synthetic:300", "--calibration-images", "48", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    q = report["quantization"]
    assert q["calibration_images"] == 48 and q["calibrator"] == "minmax" and q["speedup_over_fp32"] > 0
    checks = {c["candidate"]: c for c in report["accuracy"]["comparisons"]}
    assert checks["onnxruntime"]["threshold"].startswith("int8") and checks["onnxruntime"]["accuracy_drop"] is not None
    assert checks["onnxruntime-fp32"]["threshold"].startswith("fp32") and checks["onnxruntime-fp32"]["passed"]
    assert set(report["latency"]) == {"onnxruntime", "onnxruntime-fp32"}
    assert "model.int8.onnx" in report["files"] and "## INT8" in (out / "report.md").read_text()
    assert CliRunner().invoke(cli, ["report", str(out)]).exit_code == 0
    bench = CliRunner().invoke(cli, ["bench", str(out / "model.int8.onnx"), "--precision", "int8", "--runs", "20"])
    assert bench.exit_code == 0 and "latency: median" in bench.output, bench.output


def test_every_op_of_the_shipped_networks_is_quantised_and_a_float_one_is_named(graph):
    """The networks' pooling exports as GlobalAveragePool, which has an integer kernel; a mean over
    the spatial axes (ReduceMean) has none and is left in float between dequantise and quantise."""
    _, model, fp32, images, _ = graph
    assert float_ops(quantize_qdq(fp32, images, 1).data) == {}

    class MeanPool(torch.nn.Module):
        def forward(self, x):
            return model.classifier.fc(x.mean((2, 3))) if hasattr(model, "classifier") else x.mean((2, 3))

    pooled = export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), MeanPool()).eval(), (1, 3, 32, 32))
    assert float_ops(quantize_qdq(pooled, images, 1).data) == {"ReduceMean": 1}


def test_an_int8_graph_with_float_ops_is_refused_unless_allowed(graph, tmp_path, monkeypatch):
    from nas2deploy.ops import chain

    monkeypatch.setattr(chain.ClassifierModule, "forward", lambda self, x: self.fc(x.mean((2, 3))))  # ReduceMean
    tmp = graph[0]
    args = ["export", "--arch", str(tmp / "a.json"), "--data", "synthetic:300", "--samples", "20", "--precision", "int8",
            "--calibration-data", "synthetic:300", "--calibration-images", "32"]
    refused = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 1 and "leaves operators in float (ReduceMean x1)" in refused.output, refused.output
    assert "--allow-float-ops" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "refused" / "model.int8.onnx").exists()
    allowed = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "allowed"), "--allow-float-ops"])
    assert allowed.exit_code == 0 and "runs ReduceMean x1 in float" in allowed.output, allowed.output
    assert json.loads((tmp_path / "allowed" / "report.json").read_text())["quantization"]["float_ops"] == {"ReduceMean": 1}
    assert "Left in float (`--allow-float-ops`): ReduceMean x1." in (tmp_path / "allowed" / "report.md").read_text()
    fp32 = CliRunner().invoke(cli, [*args[:7], "--allow-float-ops", "--out", str(tmp_path / "fp32")])
    assert fp32.exit_code == 1 and "give --precision int8" in fp32.output


@pytest.mark.parametrize("space", ["dpc", "dcnas"])
def test_a_segmentation_network_exports_int8_judged_by_its_miou(tmp_path, caplog, space):
    """A DPC network (BatchNorm after a pooling branch, Resize, Concat) and a DCNAS network
    (multi-scale fusion: many Resize and Add) of the built-in scenes: every op quantised, the mIoU
    drop on the masks judged, nothing logged by the quantiser."""
    import random

    from nas2deploy.nets import save_arch
    from nas2deploy.spaces import make_space

    config = {"input_size": 128, "num_classes": 6, **({"input_width": 128} if space == "dpc" else {})}
    save_arch(make_space(space, config).sample_arch(random.Random(0)), tmp_path / "a.json")
    out = tmp_path / "e"
    result = CliRunner().invoke(cli, ["export", "--arch", str(tmp_path / "a.json"), "--data", "seg-synthetic:200",
                                      "--samples", "8", "--precision", "int8", "--calibration-data", "seg-synthetic:200",
                                      "--calibration-images", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["quantization"]["float_ops"] == {}
    int8 = next(c for c in report["accuracy"]["comparisons"] if c["candidate"] == "onnxruntime")
    assert int8["agreement"] == "pixel" and int8["accuracy_drop"] is not None and "accuracy drop" in int8["threshold"]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_table_of_the_other_precision_is_refused_naming_both(tmp_path):
    """Quantisation reorders the ops' times, so an int8 table predicts nothing about an fp32
    export, nor the reverse: given with --lut it is refused before any work; recorded in the
    architecture, it is set aside with a note."""
    import random

    from nas2deploy.nets import save_arch
    from nas2deploy.spaces.tables import load_table, table_space

    int8_table, fp32_table = (f"latency_tables/densenas32_small_c10_ort_cpu_{p}_b1.json" for p in ("int8", "fp32"))
    arch = table_space(load_table(int8_table)).sample_arch(random.Random(0))
    save_arch(arch, tmp_path / "a.json")
    args = ["export", "--arch", str(tmp_path / "a.json"), "--data", "synthetic:300", "--samples", "8"]
    int8 = ["--precision", "int8", "--calibration-data", "synthetic:300", "--calibration-images", "32"]
    for extra, message in ((["--lut", int8_table], f"--lut {int8_table} was profiled at int8, this export is fp32"),
                           ([*int8, "--lut", fp32_table], f"--lut {fp32_table} was profiled at fp32, this export is int8")):
        refused = CliRunner().invoke(cli, [*args, *extra, "--out", str(tmp_path / "refused")])
        assert refused.exit_code == 1 and message in refused.output and "Traceback" not in refused.output, refused.output
        assert not (tmp_path / "refused").exists()
    save_arch(arch.with_meta({"lut": fp32_table}), tmp_path / "a.json")  # as a search on the fp32 table records it
    noted = CliRunner().invoke(cli, [*args, *int8, "--out", str(tmp_path / "noted")])
    assert noted.exit_code == 0 and f"table {fp32_table} was profiled at fp32, this export is int8" in noted.output
    assert not any("prediction" in e for e in json.loads((tmp_path / "noted" / "report.json").read_text())["latency"].values())


def test_a_network_that_loses_too_much_is_flagged_and_strict_fails(graph, tmp_path, monkeypatch):
    real = export_module.compare_outputs

    def demanding(*args, **kwargs):  # no network can lose less than -100 points: every int8 check fails
        return real(*args[:6], max_drop=-100.0) if args[2] == "int8" else real(*args, **kwargs)

    monkeypatch.setattr(export_module, "compare_outputs", demanding)
    tmp = graph[0]
    args = ["export", "--arch", str(tmp / "a.json"), "--data", "synthetic:300", "--samples", "20", "--precision", "int8",
            "--calibration-data", "synthetic:300", "--calibration-images", "32"]
    flagged = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "flagged")])
    assert flagged.exit_code == 0 and "(int8) loses" in flagged.output and "more than --max-drop" in flagged.output
    strict = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "strict"), "--strict"])
    assert strict.exit_code == 1 and "--strict: the int8 network loses more than --max-drop" in strict.output
    assert (tmp_path / "strict" / "report.json").exists()


@pytest.mark.parametrize("extra, message", [
    ([], "give --calibration-data"),
    (["--calibration-data", "synthetic:300", "--calibration-images", "8"], "at least 32 images"),
    (["--calibration-data", "synthetic:20", "--calibration-images", "64"], "fewer than --calibration-images 64"),
    (["--calibration-data", "seg-synthetic:40"], "seg-synthetic"),
    (["--calibration-data", "synthetic:300", "--backend", "onnx-reference"], "--precision int8 runs on --backend"),
    (["--calibration-data", "synthetic:300", "--backend", "tensorrt"], "TensorRT"),  # not installed here
    (["--calibration-data", "synthetic:300", "--dynamic-batch"], "leave out --dynamic-batch"),
])
def test_a_bad_int8_request_is_refused_before_any_work(graph, tmp_path, extra, message):
    tmp = graph[0]
    out = tmp_path / "e"
    result = CliRunner().invoke(cli, ["export", "--arch", str(tmp / "a.json"), "--data", "synthetic:300", "--precision",
                                      "int8", *extra, "--out", str(out)])
    assert result.exit_code in (1, 2) and message in result.output and "Traceback" not in result.output, result.output
    assert not out.exists()


def test_calibration_options_without_int8_are_refused(graph, tmp_path):
    result = CliRunner().invoke(cli, ["export", "--arch", str(graph[0] / "a.json"), "--calibration-data", "synthetic:300",
                                      "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and "give --precision int8" in result.output


def test_an_int8_op_is_timed_as_it_runs_inside_a_network_and_a_network_whole(graph):
    """An op quantised for a table takes and returns 8-bit tensors (no quantise of its input, no
    dequantise of its output: inside a network neither happens); a network keeps both ends."""
    import onnxruntime as ort

    from nas2deploy.backends.quantize import for_timing

    _, _, fp32, _, tests = graph
    inside = onnx.load_from_string(for_timing(fp32, (3, 32, 32), 1, inside=True))
    whole = onnx.load_from_string(for_timing(fp32, (3, 32, 32), 1, inside=False))
    eight_bit = (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
    assert inside.graph.input[0].type.tensor_type.elem_type in eight_bit
    assert inside.graph.output[0].type.tensor_type.elem_type in eight_bit
    assert whole.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(inside.graph.node) == len(whole.graph.node) - 2
    session = ort.InferenceSession(inside.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.uint8)})[0]
    assert out.shape == (1, 10) and out.dtype in (np.uint8, np.int8)


def test_an_int8_table_is_profiled_and_records_its_precision(tmp_path):
    from nas2deploy.latency.table import LatencyTable

    out = tmp_path / "t.json"
    result = CliRunner().invoke(cli, ["profile", "--precision", "int8", "--input-size", "32", "--width-mult", "0.25",
                                      "--num-classes", "10", "--max-stack-layers", "1", "--shard", "0/40", "--runs", "20",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(out)
    assert table.meta["measurement"]["precision"] == "int8" and len(table.entries) > 0
    assert all(e.stats.median_ms > 0 for e in table.entries.values())


def test_the_python_api_exports_int8_with_the_backends_defaults(graph, tmp_path):
    """``Exporter`` called without the command line's filled-in backend options."""
    from nas2deploy.deploy.export import Exporter, ExportOptions

    tmp = graph[0]
    options = ExportOptions(data="synthetic:300", samples=20, precision="int8", calibration_data="synthetic:300",
                            calibration_images=32)
    report = Exporter(load_arch(str(tmp / "a.json")), None, tmp_path / "e", options).run()
    assert report["quantization"]["calibration_images"] == 32 and (tmp_path / "e" / "model.int8.onnx").exists()


def test_the_shipped_int8_table_covers_the_small_space_it_is_named_for():
    from pathlib import Path

    from nas2deploy.spaces import make_space
    from nas2deploy.spaces.tables import require_covers
    from nas2deploy.latency.table import LatencyTable

    shipped = Path(__file__).resolve().parents[1] / "latency_tables"
    int8 = LatencyTable.load(shipped / "densenas32_small_c10_ort_cpu_int8_b1.json")
    fp32 = LatencyTable.load(shipped / "densenas32_small_c10_ort_cpu_fp32_b1.json")
    assert int8.meta["measurement"]["precision"] == "int8" and int8.meta["space"] == fp32.meta["space"]
    require_covers(int8, make_space("densenas", int8.meta["space"]["config"]))
    assert int8.calibration is not None and int8.meta["measurement"]["backend"] == "onnxruntime"
