"""DPC networks (kind ``dpc``): a chain backbone at output stride 16, a dense prediction cell and
its head; the shipped dpc-mnv2 and aspp-mnv2 against the paper's Table 1; their ops."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nas2deploy.backends import BackendSettings, OnnxModel, open_runner
from nas2deploy.backends.onnx import export_onnx
from nas2deploy.cli import cli
from nas2deploy.errors import UserError
from nas2deploy.nets import DPCNet, load_arch
from nas2deploy.ops import AtrousSep, Concat, Logits, OpSpec, PointConv, PyramidPool


def relative(got: float, want: float) -> float:
    return abs(got / want - 1)


def test_the_shipped_cells_have_the_size_of_the_papers_table_1():
    """Table 1 (MobileNet-v2, output stride 16, Cityscapes 1025 x 2049): DPC 0.36 M / 3.00 B,
    ASPP 2.82 B multiply-adds; ASPP's 0.25 M is one separable branch short (nets/dpc.py)."""
    dpc = load_arch("dpc-mnv2").at_input(1025, 2049).figures()["context_module"]
    assert dpc["features"] == [320, 65, 129]
    assert relative(dpc["params"], 0.36e6) <= 0.02 and relative(dpc["multiply_adds"], 3.00e9) <= 0.02
    aspp = load_arch("aspp-mnv2").at_input(1025, 2049).figures()["context_module"]
    assert relative(aspp["multiply_adds"], 2.82e9) <= 0.02
    separable = 320 * 9 + 320 * 256
    assert aspp["params"] == 2 * 320 * 256 + 3 * separable  # pooling and 1x1 convolutions, three separable branches
    assert relative(2 * 320 * 256 + separable, 0.25e6) <= 0.02  # what the table's 0.25 M counts


def test_the_backbone_stops_downsampling_at_16_and_turns_atrous():
    net = load_arch("dpc-mnv2")
    assert net.features() == (320, 33, 65)  # 513 x 1025 at output stride 16
    keys = [s.key for s in net.backbone_specs()]
    stopped = keys.index("mbconv_k3_e6_s1_i96x33x65_o160")  # MobileNetV2's stride-2 layer to 160, now stride 1
    assert all("_d" not in k for k in keys[:stopped + 1]) and all("_d2_" in k for k in keys[stopped + 1:])
    assert [s.key for s in net.head_specs()] == ["concat_n5_i256x33x65", "pointconv_i1280x33x65_o256",
                                                 "logits_i256x33x65_o19_to513x1025"]


@pytest.mark.parametrize("name", ["dpc-mnv2", "aspp-mnv2"])
def test_a_dpc_network_runs_round_trips_and_exports(name):
    net = load_arch(name).at_input(96, 160)
    assert DPCNet.from_dict(json.loads(json.dumps(net.to_dict()))) == net
    module = net.build().eval()
    x = np.random.default_rng(0).standard_normal((1, *net.input_shape)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    assert want.shape == (1, 19, 96, 160)
    with open_runner(BackendSettings(), OnnxModel(export_onnx(module, x.shape))) as runner:
        got = runner.infer({"input": x})["output"]
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())  # pooling, atrous rates, resizes agree


def test_dpc_ops_count_their_parameters_and_bn_as_built():
    specs = [PointConv(32, 9, 17, 16), AtrousSep(32, 9, 17, 16, 6, 21), PyramidPool(32, 9, 17, 16, 4, 8),
             Concat(16, 9, 17, 5), Logits(16, 9, 17, 7, 144, 272)]
    for spec in specs:
        module = spec.build(affine=True)
        assert spec.params() == sum(p.numel() for p in module.parameters()), spec.key
        bn = sum(p.numel() for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
        assert spec.norm_params() == bn, spec.key
        assert OpSpec.from_dict(spec.to_dict()) == spec
        out = spec.build_standalone().eval()(torch.randn(2, spec.cin, spec.h, spec.w))
        assert tuple(out.shape[1:]) == spec.out_shape(), spec.key


def cell_doc(**change):
    doc = load_arch("dpc-mnv2").to_dict()
    doc["backbone"] = "mobilenetv2"
    return {**doc, **change}


@pytest.mark.parametrize("change, message", [
    ({"cell": [{"op": "sep5x5", "input": -1}]}, r"field cell\[0\].op must be one of conv1x1, sep3x3, pool"),
    ({"cell": [{"op": "sep3x3", "rate": [1, 2], "input": -1}]}, r"field cell\[0\].rate\[1\] must be one of 1, 3, 6"),
    ({"cell": [{"op": "conv1x1", "input": 1}]}, r"field cell\[0\].input must be an integer in \[-1, -1\]"),
    ({"cell": [{"op": "pool", "grid": [8, 8], "input": -1}], "input_size": 64}, r"field cell\[0\] .*8x8 grid"),
    ({"cell": []}, "field cell must hold at least one branch"),
    ({"backbone": "dpc-mnv2"}, "field backbone must be a classification chain"),
    ({"backbone": "resnet50"}, "field backbone must be one of"),
])
def test_bad_cells_are_named(change, message):
    with pytest.raises(UserError, match=message):
        DPCNet.from_dict(cell_doc(**change), "t.json")


def test_a_backbone_that_cannot_reach_stride_16_is_named():
    backbone = load_arch("mobilenetv2").to_dict()
    backbone["blocks"] = backbone["blocks"][:2]  # stride 8 at most
    with pytest.raises(UserError, match="downsamples by 8 only: it cannot run at output stride 16"):
        DPCNet.from_dict(cell_doc(backbone=backbone), "t.json")


def test_arch_info_counts_the_context_module_at_any_input_size():
    result = CliRunner().invoke(cli, ["arch", "info", "dpc-mnv2", "--input-size", "1025x2049", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["input_shape"] == [3, 1025, 2049] and doc["context_module"]["params"] == 356160
    result = CliRunner().invoke(cli, ["arch", "info", "dpc-mnv2", "--input-size", "1025x2049"])
    assert "context module 356,160 parameters, 2.986 B multiply-adds at 320x65x129 features" in result.stdout
    result = CliRunner().invoke(cli, ["arch", "info", "mobilenetv2", "--input-size", "1025x2049"])
    assert result.exit_code == 1 and "a chain network takes square inputs, not 1025x2049" in result.output
    result = CliRunner().invoke(cli, ["arch", "info", "mobilenetv2", "--input-size", "160", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["input_shape"] == [3, 160, 160]
    result = CliRunner().invoke(cli, ["arch", "info", "dpc-mnv2", "--input-size", "big"])
    assert result.exit_code == 2 and "expected a size such as 224 or 1025x2049" in result.output


# -- the DPC space ------------------------------------------------------------------------------
def tiny_dpc():
    from nas2deploy.spaces import make_space

    return make_space("dpc", {"input_size": 128, "input_width": 160, "branches": 3, "filters": 16, "num_classes": 5})


def test_the_space_counts_the_papers_cells():
    from nas2deploy.spaces import make_space

    counts = make_space("dpc").counts()
    assert counts["ops_per_branch"] == 81 and counts["branches"] == 5
    assert counts["cells"] == 120 * 81**5  # B! x 81^B: branch i chooses among i inputs and 81 ops
    assert counts["features"] == [320, 33, 65]


def test_sampled_cells_are_valid_networks_the_space_prices():
    import random

    space = tiny_dpc()
    keys = {s.key for s in space.op_specs()}
    rng = random.Random(0)
    seen_ops, seen_inputs = set(), set()
    for _ in range(60):
        net = space.sample_arch(rng)
        assert all(-1 <= b.input < i for i, b in enumerate(net.cell))
        assert {s.key for s in net.op_specs()} <= keys  # the table of the space covers every network it samples
        assert DPCNet.from_dict(net.to_dict()) == net
        seen_ops |= {b.op for b in net.cell}
        seen_inputs |= {b.input for b in net.cell}
    assert seen_ops == {"conv1x1", "sep3x3", "pool"} or seen_ops == {"sep3x3", "pool"}  # 1x1 is 1 of 81
    assert seen_inputs == {-1, 0, 1}
    out = space.sample_arch(rng).build().eval()(torch.randn(1, 3, 128, 160))
    assert out.shape == (1, 5, 128, 160)


def test_a_dpc_table_is_profiled_validated_and_sampled(tmp_path):
    """The space through the same commands as the others, on ONNX Runtime: profile, validate
    (random cells measured whole), and random networks of a latency window."""
    from nas2deploy.backends import BackendSettings
    from nas2deploy.latency.profile import profile_space
    from nas2deploy.latency.fidelity import validate_table
    from conftest import FAST

    space = tiny_dpc()
    table, stats = profile_space(space, BackendSettings(), tmp_path / "dpc.json", FAST)
    assert stats.ops == len(space.op_specs()) and not table.missing(space.op_specs())
    report = validate_table(table, space.sample_arch, 6, timing=FAST)
    assert report["samples"] == 6 and all(r["measured_ms"] > 0 for r in report["records"])
    budget = sorted(table.predict(space.sample_arch(__import__("random").Random(i))).best_ms for i in range(20))[10]
    result = CliRunner().invoke(cli, ["space", "sample", "dpc", "--lut", str(tmp_path / "dpc.json"), "--budget-ms", str(budget),
                                      "--fill", "0.5", "--count", "2", "--out", str(tmp_path / "sample"), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["networks"]) == 2


def test_dpc_is_searched_black_box_and_says_what_it_needs(tmp_path):
    from nas2deploy.testing import random_table

    from nas2deploy.spaces import get_space

    table = random_table(tiny_dpc(), 0)
    table.save(tmp_path / "t.json")
    result = CliRunner().invoke(cli, ["search", "--space", "dpc", "--lut", str(tmp_path / "t.json"), "--budget-ms", "5",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "the dpc search needs --weights: weights of the backbone" in result.output
    with pytest.raises(UserError, match="the dpc space has no supernet search: it is searched trial by trial"):
        get_space("dpc").make_search(tiny_dpc(), table, {})


def test_the_reachable_range_is_exact():
    """Against enumeration: every cell of a 2-branch space (81 x 2 x 81 networks) under a table
    with distinct random latencies."""
    import itertools

    from nas2deploy.testing import random_table

    from nas2deploy.nets.dpc import Branch
    from nas2deploy.spaces import make_space
    from nas2deploy.spaces.dpc.space import BRANCH_CHOICES

    space = make_space("dpc", {"input_size": 128, "input_width": 128, "branches": 2, "filters": 16, "num_classes": 5})
    table = random_table(space, 3)
    predictions = [table.predict(space.network((Branch(a.op, -1, a.rate, a.grid), Branch(b.op, src, b.rate, b.grid)), "e")).best_ms
                   for a, b, src in itertools.product(BRANCH_CHOICES, BRANCH_CHOICES, (-1, 0))]
    assert space.latency_range(table) == pytest.approx((min(predictions), max(predictions)))


def test_a_dpc_network_trains_and_exports_like_any_network(tmp_path):
    import dataclasses

    from nas2deploy.nets import save_arch

    small = dataclasses.replace(load_arch("dpc-mnv2").at_input(128, 128), num_classes=6, name="dpc-small")
    save_arch(small, tmp_path / "dpc.json")
    result = CliRunner().invoke(cli, ["train", "--arch", str(tmp_path / "dpc.json"), "--data", "seg-synthetic:32",
                                      "--epochs", "1", "--out", str(tmp_path / "w.pt")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["export", "--arch", str(tmp_path / "dpc.json"), "--weights", str(tmp_path / "w.pt"),
                                      "--data", "seg-synthetic", "--samples", "4", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "PASS onnxruntime vs torch on 4 inputs" in result.output and "pixel agreement 100.000%" in result.output
    assert (tmp_path / "out" / "arch.png").exists() and (tmp_path / "out" / "model.onnx").exists()


def test_data_of_another_shape_is_refused_before_training(tmp_path):
    import dataclasses

    from nas2deploy.nets import save_arch

    wide = dataclasses.replace(load_arch("dpc-mnv2").at_input(128, 256), num_classes=6, name="wide")
    save_arch(wide, tmp_path / "wide.json")
    result = CliRunner().invoke(cli, ["train", "--arch", str(tmp_path / "wide.json"), "--data", "seg-synthetic:8",
                                      "--epochs", "1", "--out", str(tmp_path / "w.pt")])
    assert result.exit_code == 1 and "arch wide expects 128x256 inputs and 6 classes" in result.output


def test_a_shipped_chain_trains_on_other_data_as_the_backbone_a_dpc_network_starts_from(tmp_path):
    import dataclasses

    import torch

    from nas2deploy.cli.search import start_from
    from nas2deploy.nets import save_arch

    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--arch", "mobilenetv2", "--data", "synthetic:16", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "arch mobilenetv2 expects 224px inputs and 1000 classes, data synthetic:16 has 224px " \
        "images and 10 classes; give other data, or train its layers for this data: --input-size 224 --num-classes 10" \
        in result.output, result.output
    result = runner.invoke(cli, ["train", "--arch", "mobilenetv2", "--input-size", "32", "--num-classes", "10", "--data",
                                 "synthetic:16", "--epochs", "1", "--out", str(tmp_path / "mnv2.pt")])
    assert result.exit_code == 0, result.output
    dpc = dataclasses.replace(load_arch("dpc-mnv2").at_input(128, 128), num_classes=6, name="dpc-small")
    save_arch(dpc, tmp_path / "dpc.json")
    chain = torch.load(tmp_path / "mnv2.pt", weights_only=True)
    backbone = start_from(dpc, str(tmp_path / "mnv2.pt")).backbone.state_dict()
    shared = [k for k in backbone if k in chain]
    assert len(shared) > 100 and all(torch.equal(backbone[k], chain[k]) for k in shared)  # every backbone layer, loaded
    result = runner.invoke(cli, ["train", "--arch", str(tmp_path / "dpc.json"), "--backbone-weights", str(tmp_path / "mnv2.pt"),
                                 "--data", "seg-synthetic:8", "--epochs", "1", "--out", str(tmp_path / "dpc.pt")])
    assert result.exit_code == 0 and "mIoU" in result.output, result.output
    result = runner.invoke(cli, ["train", "--arch", "densenas-a", "--backbone-weights", str(tmp_path / "mnv2.pt"),
                                 "--out", str(tmp_path / "y.pt")])
    assert result.exit_code == 1 and "only a DPC network has a backbone to start from" in result.output, result.output
    result = runner.invoke(cli, ["train", "--arch", "mobilenetv2", "--input-size", "32x", "--out", str(tmp_path / "y.pt")])
    assert result.exit_code == 2 and "expected a size such as 224 or 1025x2049, got '32x'" in result.output, result.output
