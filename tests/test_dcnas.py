"""The DCNAS space, its ops, the segmentation architecture format, data and metrics."""

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from nas2deploy.cli import cli
from nas2deploy.data import open_dataset
from nas2deploy.objective import IGNORE, confusion, miou, pixel_accuracy
from nas2deploy.backends.onnx import export_onnx
from nas2deploy.errors import UserError
from nas2deploy.ops import AddN, OpSpec, Resize, UpConv
from nas2deploy.nets.cells import SegArch, SegNet
from nas2deploy.spaces import make_space

TINY = {"input_size": 64, "layers": 4, "base_width": 8, "num_classes": 6, "head_width": 16}


def test_grid_follows_the_reachable_scales_and_dense_inputs():
    space = make_space("dcnas")
    assert len(space.cells) == 2 + 3 + 4 * 10  # scale s exists from layer s - 1 on
    assert space.inputs[(0, 0)] == [(-1, 0)] and space.inputs[(0, 1)] == [(-1, 0)]
    ins = space.inputs[(5, 2)]
    assert all(l < 5 and abs(s - 2) <= 1 for l, s in ins) and (4, 3) in ins and (1, 1) in ins
    near = make_space("dcnas", {"max_back": 1})
    assert all(l == 4 for l, _ in near.inputs[(5, 2)])


def test_every_sampled_network_is_priced_by_the_space_ops():
    space = make_space("dcnas", TINY)
    keys = {s.key for s in space.op_specs()}
    rng = random.Random(0)
    for _ in range(30):
        arch = space.sample_arch(rng)
        assert {s.key for s in arch.op_specs()} <= keys
        assert all(len(c.inputs) <= 2 for c in arch.cells)
        assert {c.scale for c in arch.output_cells()} == {0, 1, 2, 3}


@pytest.mark.parametrize("align_corners", [False, True])
def test_segnet_runs_and_onnx_runtime_resizes_as_pytorch_does(align_corners):
    import onnxruntime as ort

    space = make_space("dcnas", {**TINY, "align_corners": align_corners})
    arch = space.sample_arch(random.Random(1))
    torch.manual_seed(0)
    net = SegNet(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 6, 64, 64)
    session = ort.InferenceSession(export_onnx(net, (2, 3, 64, 64)), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(out - y.numpy()).max() < 1e-4 * max(1.0, float(y.abs().max()))
    assert (out.argmax(1) == y.numpy().argmax(1)).mean() == 1.0


def test_resize_keys_carry_mode_and_align_corners():
    assert UpConv(16, 8, 8, 8, 2, "bilinear", True).key == "upconv_x2_bilinear_ac1_i16x8x8_o8"
    assert Resize(16, 8, 8, 4, "nearest").key == "resize_x4_nearest_i16x8x8"
    with pytest.raises(UserError, match="mode must be one of"):
        OpSpec.from_dict({"type": "resize", "cin": 8, "h": 4, "w": 4, "scale": 2, "mode": "cubic", "align_corners": False})


def test_addn_prices_n_inputs_alone_and_sums_them_deployed():
    spec = AddN(4, 3, 3, 3)
    a, b, c = (torch.randn(1, 4, 3, 3) for _ in range(3))
    assert torch.equal(spec.build()(a, b, c), a + b + c)
    alone = spec.build_standalone()  # profiling: one input, two stored tensors of the same shape
    others = list(alone.buffers())
    assert len(others) == 2 and torch.allclose(alone(a), a + others[0] + others[1])
    import onnx

    graph = onnx.load_from_string(export_onnx(alone, (1, 4, 3, 3))).graph
    assert [n.op_type for n in graph.node].count("Add") == 2


def test_seg_arch_json_round_trip_and_errors(tmp_path):
    arch = make_space("dcnas", TINY).sample_arch(random.Random(2))
    doc = arch.to_dict()
    again = SegArch.from_dict(json.loads(json.dumps(doc)))
    assert again == arch and [s.key for s in again.op_specs()] == [s.key for s in arch.op_specs()]
    bad = json.loads(json.dumps(doc))
    bad["cells"][0]["op"] = "sep4x"
    with pytest.raises(UserError, match=r"cells\[0\]: unknown cell op 'sep4x'"):
        SegArch.from_dict(bad)
    bad = json.loads(json.dumps(doc))
    bad["cells"][-1]["inputs"] = [[bad["cells"][-1]["layer"], 0]]
    with pytest.raises(UserError, match="is not an earlier cell"):
        SegArch.from_dict(bad)
    far = {"layer": 9, "scale": 3, "op": "sep3", "inputs": [[-1, 0]]}
    with pytest.raises(UserError, match="neighbouring scale"):
        SegArch.from_dict({**doc, "cells": [*doc["cells"], far]})


def test_space_info_cli():
    runner = CliRunner()
    result = runner.invoke(cli, ["space", "info", "dcnas", "--input-size", "64", "--layers", "4", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["cells"] == 13 and info["mixed_ops"] == 13 and info["config"]["layers"] == 4
    result = runner.invoke(cli, ["space", "info", "densenas", "--layers", "3"])
    assert result.exit_code == 2 and "--layers is an option of the dcnas space, not of densenas's" in result.output


def test_built_in_scenes_are_deterministic_with_ignore_boundaries():
    a, b = open_dataset("seg-synthetic:8", 64), open_dataset("seg-synthetic:8", 64)
    assert a.task == "segmentation" and a.num_classes == 6
    img, mask = a.train[3]
    assert img.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
    assert torch.equal(img, b.train[3][0]) and torch.equal(mask, b.train[3][1])
    values = set(torch.unique(torch.cat([a.train[i][1].flatten() for i in range(8)])).tolist())
    assert IGNORE in values and {0} < values and values <= {*range(6), IGNORE}


def test_metrics_on_a_known_case():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    conf = confusion(pred, target, 3)
    assert int(conf.sum()) == 7  # the ignored pixel does not count
    assert pixel_accuracy(conf) == pytest.approx(5 / 7)
    # IoU: class 0: 1 / 3, class 1: 3 / 4, class 2: 1 / 2
    assert miou(conf) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path)


def test_cityscapes_layout_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(2):
            stem = tmp_path / "leftImg8bit" / split / "aachen" / f"aachen_{i:06d}_000019"
            _png(stem.with_name(stem.name + "_leftImg8bit.png"), rng.integers(0, 255, (40, 80, 3), dtype=np.uint8))
            labels = rng.integers(0, 19, (40, 80)).astype(np.uint8)
            labels[0, :5] = IGNORE
            gt = tmp_path / "gtFine" / split / "aachen" / f"aachen_{i:06d}_000019_gtFine_labelTrainIds.png"
            _png(gt, labels)
    data = open_dataset(str(tmp_path), 64)
    assert data.num_classes == 19 and data.task == "segmentation" and len(data.train) == 2
    assert data.train[0][1].shape == (64, 64) and data.test[0][0].shape == (3, 64, 64)
    cropped = open_dataset(str(tmp_path), 64, crop=(64, 128))  # training crops; the test split stays square
    image, mask = cropped.train.get(0, 5)
    assert image.shape == (3, 64, 128) and mask.shape == (64, 128) and cropped.test[0][1].shape == (64, 64)
    assert torch.equal(cropped.train.get(0, 5)[1], mask)  # a draw is a pure function of (index, draw)
    assert set(torch.unique(mask).tolist()) <= {*range(19), IGNORE}
    gt = tmp_path / "gtFine" / "val" / "aachen" / "aachen_000001_000019_gtFine_labelTrainIds.png"
    _png(gt, np.full((40, 80), 30, dtype=np.uint8))
    with pytest.raises(UserError, match=r"aachen_000001.*labels 30 outside 0..18"):
        open_dataset(str(tmp_path), 64).test[1]  # masks are checked as they are decoded
    _png(gt, np.zeros((20, 80), dtype=np.uint8))
    with pytest.raises(UserError, match="masks must have their image's size"):
        open_dataset(str(tmp_path), 64).test[1]
    with pytest.raises(UserError, match="--crop 64x128: only Cityscapes, VOC and CamVid"):
        open_dataset("seg-synthetic:8", 64, crop=(64, 128))
    gt.unlink()
    with pytest.raises(UserError, match="missing label file"):
        open_dataset(str(tmp_path), 64)
    (tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png").unlink()
    for f in (tmp_path / "gtFine" / "val" / "aachen").iterdir():
        f.unlink()
    (tmp_path / "gtFine" / "val" / "aachen").rmdir()
    (tmp_path / "gtFine" / "val").rmdir()
    with pytest.raises(UserError, match=r"gtFine/val"):
        open_dataset(str(tmp_path), 64)


def test_voc_layout_with_palette_masks_and_its_errors(tmp_path):
    rng = np.random.default_rng(1)
    names = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
    for split, ids in names.items():
        for name in ids:
            _png(tmp_path / "JPEGImages" / f"{name}.png", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
            (tmp_path / "JPEGImages" / f"{name}.png").rename(tmp_path / "JPEGImages" / f"{name}.jpg")
            labels = rng.integers(0, 21, (30, 40)).astype(np.uint8)
            labels[:, 0] = IGNORE
            mask = Image.fromarray(labels, "P")
            mask.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
            (tmp_path / "SegmentationClass").mkdir(exist_ok=True)
            mask.save(tmp_path / "SegmentationClass" / f"{name}.png")
        (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (tmp_path / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    data = open_dataset(str(tmp_path), 64)
    assert data.num_classes == 21 and len(data.train) == 2 and len(data.test) == 1
    assert set(torch.unique(data.train[0][1]).tolist()) <= {*range(21), IGNORE}
    (tmp_path / "SegmentationClass" / "2007_000033.png").unlink()
    with pytest.raises(UserError, match="2007_000033.png: listed in val.txt but missing"):
        open_dataset(str(tmp_path), 64)


# -- supernet, expected latency, derivation -------------------------------------------------------
def _supernet(**over):
    from nas2deploy.spaces.dcnas.supernet import DCNASSupernet

    torch.manual_seed(0)
    return DCNASSupernet(make_space("dcnas", TINY), **over)


def test_supernet_samples_paths_reproducibly_and_trains_alpha_and_beta():
    net = _supernet(path_samples=2, channel_fraction=0.25)
    a = net.sample_paths(torch.Generator().manual_seed(3))
    assert a == net.sample_paths(torch.Generator().manual_seed(3))
    for cell, kept in a.kept.items():
        n = len(net.space.inputs[cell])
        assert len(kept) == min(2, n) and kept == sorted(set(kept))
    assert net.mixtures[-1].part * 4 == net.space.config.scale_widths[net.cells[-1][1]]  # a quarter of the channels
    y = net(torch.randn(2, 3, 64, 64), a)
    assert y.shape == (2, 6, 64, 64)
    y.square().mean().backward()
    assert net.alpha.grad.abs().sum() > 0 and net.beta.grad.abs().sum() > 0
    full = _supernet(path_samples=0, channel_fraction=1.0)
    assert all(len(k) == len(full.space.inputs[c]) for c, k in full.sample_paths().kept.items())


@pytest.mark.parametrize("calibrated", [False, True])
def test_expected_latency_is_exact_for_one_hot_weights_and_derivation_agrees(calibrated):
    from conftest import synthetic_table

    from nas2deploy.latency.table import Calibration
    from nas2deploy.spaces.dcnas.derive import derive_topk
    from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel

    net = _supernet()
    space = net.space
    table = synthetic_table(space, seed=4, calibration=Calibration(1.1, 0.2, 0.01, 10) if calibrated else None)
    model = DCNASLatencyModel(net, table)
    rng = random.Random(5)
    for _ in range(5):
        chosen, ops = {}, {}
        with torch.no_grad():
            for i, cell in enumerate(net.cells):
                ins = space.inputs[cell]
                picked = sorted(rng.sample(range(len(ins)), min(2, len(ins))))
                chosen[cell] = tuple(ins[j] for j in picked)
                net.beta[net.slices[cell]] = torch.tensor([30.0 if j in picked else -30.0 for j in range(len(ins))])
                op = rng.randrange(len(space.config.ops))
                ops[cell] = space.config.ops[op]
                net.alpha[i] = torch.tensor([30.0 if o == op else -30.0 for o in range(len(space.config.ops))])
        arch = space.arch_from(chosen, ops, "one-hot")
        assert derive_topk(net, "one-hot") == arch
        assert float(model()) == pytest.approx(table.predict(arch).best_ms, rel=1e-5)


def test_expected_latency_moves_with_beta():
    from conftest import synthetic_table

    from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel

    net = _supernet()
    model = DCNASLatencyModel(net, synthetic_table(net.space, seed=1))
    model().backward()
    assert net.beta.grad.abs().sum() > 0 and net.alpha.grad.abs().sum() > 0


def test_profile_and_validate_a_dcnas_table_with_onnx_runtime(tmp_path):
    from conftest import FAST

    from nas2deploy.backends import BackendSettings
    from nas2deploy.latency.profile import profile_space
    from nas2deploy.latency.fidelity import validate_table

    space = make_space("dcnas", TINY)
    table, _ = profile_space(space, BackendSettings(), tmp_path / "dcnas.json", FAST)
    assert set(table.entries) == {s.key for s in space.op_specs()}
    assert any(k.startswith("addn_n2_") for k in table.entries) and any("_bilinear_ac0_" in k for k in table.entries)
    report = validate_table(table, space.sample_arch, 6, timing=FAST)
    assert report["samples"] == 6 and report["raw"]["mape"] >= 0
    arch = space.sample_arch(random.Random(9))
    prediction = table.predict(arch)
    # Six timed networks on a shared CI machine may or may not earn a calibration (a fit that errs more
    # than the raw sum out of sample is refused); either way the table must predict something positive
    # and say why when it stored no fit.
    if report["calibration"] is None:
        assert report["calibration_refused"] and prediction.calibrated_ms is None
    else:
        assert prediction.calibrated_ms is not None and prediction.calibrated_ms > 0
    assert prediction.best_ms > 0


def test_segmentation_network_trains_exports_and_is_checked_per_pixel(tmp_path):
    from nas2deploy.nets import load_arch, save_arch
    from nas2deploy.deploy.compare import compare_outputs

    space = make_space("dcnas", {**TINY, "base_width": 16})
    arch = space.sample_arch(random.Random(0))
    save_arch(arch, tmp_path / "seg.json")
    assert load_arch(tmp_path / "seg.json") == arch
    runner = CliRunner()
    result = runner.invoke(cli, ["arch", "info", str(tmp_path / "seg.json")])
    assert result.exit_code == 0 and "cells" in result.output and "cell 0,0" in result.output
    result = runner.invoke(cli, ["train", "--arch", str(tmp_path / "seg.json"), "--data", "seg-synthetic:16", "--epochs", "1",
                                 "--batch-size", "8", "--out", str(tmp_path / "w.pt")])
    assert result.exit_code == 0 and "mIoU" in result.output, result.output
    result = runner.invoke(cli, ["train", "--arch", str(tmp_path / "seg.json"), "--data", "synthetic:20", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "data synthetic:20 is classification data (the built-in shapes), not segmentation" in result.output
    out = tmp_path / "export"
    result = runner.invoke(cli, ["export", "--arch", str(tmp_path / "seg.json"), "--weights", str(tmp_path / "w.pt"),
                                 "--data", "seg-synthetic:16", "--samples", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ort = next(c for c in report["accuracy"]["comparisons"] if c["candidate"] == "onnxruntime")
    assert ort["agreement"] == "pixel" and ort["top1_agreement"] >= 0.999 and ort["miou_difference"] <= 0.1
    # a pixel-level disagreement is caught: flip the class of 1% of the pixels
    ref = np.random.default_rng(0).standard_normal((2, 6, 20, 20)).astype(np.float32)
    masks = ref.argmax(1)
    flipped = ref.copy()
    flipped[0, :, :2, :2] = flipped[0, ::-1, :2, :2]
    c = compare_outputs(ref, flipped, labels=masks)
    assert c.agreement == "pixel" and c.top1_agreement < 0.999 and not c.passed and c.miou_difference > 0


def test_viterbi_decodes_the_strongest_scale_path():
    from conftest import synthetic_table

    from nas2deploy.spaces.dcnas.derive import derive_viterbi

    net = _supernet()
    space = net.space
    target = [(0, 1), (1, 2), (2, 2), (3, 1)]  # stem -> 1/8 -> 1/16 -> 1/16 -> 1/8
    with torch.no_grad():
        net.beta.zero_()
        prev = (-1, 0)
        for cell in target:
            net.beta[net.slices[cell].start + space.inputs[cell].index(prev)] = 5.0
            prev = cell
    arch = derive_viterbi(net, "path")
    assert [c.node for c in arch.cells] == target
    assert [c.inputs for c in arch.cells] == [((-1, 0),), ((0, 1),), ((1, 2),), ((2, 2),)]
    assert [c.scale for c in arch.output_cells()] == [1]
    table = synthetic_table(space, seed=2)
    assert table.predict(arch).raw_ms > 0  # every op of a path network is in the space's table
    assert SegNet(arch)(torch.randn(1, 3, 64, 64)).shape == (1, 6, 64, 64)
