import numpy as np
import pytest
import torch

from nas2deploy.backends import BackendSettings, OnnxModel, open_runner
from nas2deploy.backends.onnx import export_onnx
from nas2deploy.errors import UserError
from nas2deploy.ops import Classifier, ConvBNAct, MBConv, OpSpec, Skip, candidate_layer


def test_keys_are_canonical_and_readable():
    assert MBConv(24, 56, 56, 32, 3, 6, 2).key == "mbconv_k3_e6_s2_i24x56x56_o32"
    assert ConvBNAct(3, 224, 224, 16, 3, 2).key == "conv_k3_s2_i3x224x224_o16_relu6"
    assert Skip(24, 56, 56).key == "skip_i24x56x56"
    assert Classifier(1984, 7, 7, 1000).key == "classifier_i1984x7x7_o1000"


@pytest.mark.parametrize("spec", [
    MBConv(24, 56, 56, 32, 5, 3, 2), MBConv(16, 14, 14, 16, 3, 1, 1), ConvBNAct(3, 32, 32, 16, 3, 1),
    Skip(8, 4, 4), Classifier(64, 7, 7, 10),
])
def test_json_round_trip_and_shapes(spec):
    again = OpSpec.from_dict(spec.to_dict())
    assert again == spec and again.key == spec.key
    out = spec.build().eval()(torch.randn(2, spec.cin, spec.h, spec.w))
    c, h, w = spec.out_shape()
    assert tuple(out.shape) == ((2, c) if isinstance(spec, Classifier) else (2, c, h, w))


def test_residual_exactly_when_stride_one_and_same_width():
    assert MBConv(16, 8, 8, 16, 3, 6, 1).build().residual
    assert not MBConv(16, 8, 8, 16, 3, 6, 2).build().residual
    assert not MBConv(16, 8, 8, 24, 3, 6, 1).build().residual


def test_expansion_one_has_no_expansion_conv():
    convs = [m for m in MBConv(16, 8, 8, 16, 3, 1, 1).build().modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and convs[0].groups == 16  # depthwise first, then project
    convs = [m for m in MBConv(16, 8, 8, 16, 3, 6, 1).build().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 96, 16] and all(c.bias is None for c in convs)


def test_bad_specs_are_rejected_with_the_field():
    with pytest.raises(UserError, match="field type must be a known op type .*, got 'conv9'"):
        OpSpec.from_dict({"type": "conv9"})
    with pytest.raises(UserError, match="field expansion is missing"):
        OpSpec.from_dict({"type": "mbconv", "cin": 8, "h": 4, "w": 4, "out": 8, "kernel": 3, "stride": 1})
    with pytest.raises(UserError, match=r"field cin must be an integer in \[1, 16384\], got 0"):
        OpSpec.from_dict({"type": "skip", "cin": 0, "h": 4, "w": 4})
    with pytest.raises(UserError, match="field h must be an integer, got '4'"):
        OpSpec.from_dict({"type": "skip", "cin": 8, "h": "4", "w": 4})
    with pytest.raises(UserError, match="field relu6 must be true or false, got 1"):
        OpSpec.from_dict({"type": "conv", "cin": 3, "h": 4, "w": 4, "out": 8, "kernel": 3, "stride": 1, "relu6": 1})
    with pytest.raises(UserError, match="expected 'skip' or 'k<kernel>e<expansion>'"):
        candidate_layer("k3x6", 8, 4, 4, 8, 1)
    with pytest.raises(UserError, match="skip' needs stride 1"):
        candidate_layer("skip", 8, 4, 4, 16, 1)


def test_exported_op_matches_torch_in_onnxruntime():
    spec = MBConv(24, 14, 14, 24, 5, 6, 1)
    module = spec.build().eval()
    for m in module.modules():  # non-trivial BN statistics so folding is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(0).standard_normal((1, 24, 14, 14)).astype(np.float32)
    with open_runner(BackendSettings(), OnnxModel(export_onnx(module, x.shape))) as runner:
        got = runner.infer({"input": x})["output"]
    want = module(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_params_are_counted_without_building_as_built():
    from nas2deploy.ops import AddN, Classifier, ConvBNAct, Resize, SegHead, SepConv, Skip, UpConv

    specs = [ConvBNAct(3, 8, 8, 16, 3, 2), ConvBNAct(16, 8, 8, 32, 1, 1, relu6=False), MBConv(16, 8, 8, 24, 5, 6, 2),
             MBConv(16, 8, 8, 16, 3, 1, 1), Skip(8, 4, 4), Classifier(32, 4, 4, 10), SepConv(16, 8, 8, 16, 7, 2),
             UpConv(32, 4, 4, 16), Resize(16, 4, 4, 4), AddN(8, 4, 4, 3), SegHead(48, 8, 8, 32, 6)]
    for spec in specs:
        assert spec.params() == sum(p.numel() for p in spec.build(affine=True).parameters()), spec.key


def test_an_uncounted_batch_norm_computes_what_batch_norm_computes():
    import copy

    from nas2deploy.ops import UncountedBatchNorm, batch_norm, uncount_batch_norms

    torch.manual_seed(0)
    counted = torch.nn.Sequential(batch_norm(8, False))
    uncounted = copy.deepcopy(counted)
    uncount_batch_norms(uncounted)
    assert isinstance(uncounted[0], UncountedBatchNorm)
    x = torch.randn(4, 8, 5, 5)
    assert torch.equal(counted(x), uncounted(x))
    assert torch.equal(counted[0].running_mean, uncounted[0].running_mean)
    assert torch.equal(counted[0].running_var, uncounted[0].running_var)
    assert int(counted[0].num_batches_tracked) == 1 and int(uncounted[0].num_batches_tracked) == 0
    counted.eval(), uncounted.eval()
    assert torch.equal(counted(x), uncounted(x))
    assert set(counted.state_dict()) == set(uncounted.state_dict())  # checkpoints load either way


@pytest.mark.parametrize("rates,size", [((1, 1), (8, 8)), ((9, 3), (8, 8)), ((3, 21), (8, 16)), ((21, 21), (8, 8)),
                                        ((6, 6), (6, 13)), ((2, 2), (3, 2))])
def test_atrous_depthwise_skips_only_taps_that_read_padding(rates, size):
    """The atrous depthwise convolution that drops the taps outside the input equals the full
    dilated convolution, outputs and gradients (the dropped taps' gradients are zero)."""
    import torch.nn as nn

    from nas2deploy.ops import AtrousDepthwise

    torch.manual_seed(0)
    fast = AtrousDepthwise(4, 4, 3, 1, rates, rates, groups=4, bias=False)
    full = nn.Conv2d(4, 4, 3, 1, rates, rates, groups=4, bias=False)
    full.weight.data.copy_(fast.weight.data)
    x = torch.randn(2, 4, *size)
    a, b = fast(x), full(x)
    assert a.shape == b.shape == x.shape
    torch.testing.assert_close(a, b)
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    torch.testing.assert_close(fast.weight.grad, full.weight.grad)


def test_an_op_kind_registered_outside_the_package_reads_back_and_unread_fields_are_refused():
    from dataclasses import dataclass
    from typing import ClassVar

    from torch import nn

    from nas2deploy.ops import FIELD_RULES, OP_TYPES, register_op

    @dataclass(frozen=True)
    class Shuffle(OpSpec):
        groups: int
        type_name: ClassVar[str] = "test_shuffle"

        @property
        def cout(self) -> int:
            return self.cin

        @property
        def key(self) -> str:
            return f"test_shuffle_g{self.groups}_{self._shape()}"

        def build(self, affine: bool = True) -> nn.Module:
            return nn.ChannelShuffle(self.groups)

        def macs(self) -> int:
            return 0

    with pytest.raises(ValueError, match="no rule reads field"):
        register_op(Shuffle)
    register_op(Shuffle, groups=lambda f: f.int(1, 8))
    try:
        assert OpSpec.from_dict(Shuffle(8, 4, 4, 2).to_dict()) == Shuffle(8, 4, 4, 2)
        with pytest.raises(UserError, match="groups"):
            OpSpec.from_dict({**Shuffle(8, 4, 4, 2).to_dict(), "groups": 9})
        with pytest.raises(ValueError, match="taken"):
            register_op(type("Other", (Shuffle,), {}))
    finally:
        OP_TYPES.pop("test_shuffle"), FIELD_RULES.pop("test_shuffle")
