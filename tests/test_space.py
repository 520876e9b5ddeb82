import random

import pytest
import torch


from nas2deploy.errors import UserError
from nas2deploy.spaces import make_space
from nas2deploy.spaces.densenas.space import DenseNASSpace


def test_published_224_space_counts():
    sp = make_space("densenas")
    counts = sp.counts()
    assert counts["nodes"] == 18
    assert counts["edges"] == 54
    assert counts["head_mixed_ops"] == 51  # 3 edges end in the fixed tail
    assert counts["stacking_mixed_ops"] == 13 * 3
    assert counts["block_paths"] == 15456
    assert counts["unique_ops"] == 390
    assert counts["architectures"] > 10**45


def test_connection_rule_as_published():
    sp = DenseNASSpace()
    out = {n: [(e.dst, e.stride) for e in sp.out_edges(n)] for n in range(18)}
    assert out[0] == [(1, 2)]  # node 2 is two groups ahead of node 0
    assert out[1] == [(2, 2), (3, 2), (4, 2)]  # node 5 is two groups ahead
    assert out[4] == [(5, 2), (6, 2), (7, 2)]  # 28 -> 14: stride-2 heads; node 8 is two groups ahead
    assert out[13] == [(14, 1), (15, 1), (16, 1)]  # the tail (group 7) is out of reach
    assert [e.src for e in sp.edges if e.dst == 17] == [14, 15, 16]
    assert sp.sizes == (112, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7, 7, 7, 7, 7, 7)


def test_cifar_variant_keeps_resolution_in_the_stem():
    sp = make_space("densenas", {"input_size": 32})
    assert sp.sizes[:3] == (32, 32, 16)
    assert sp.out_edges(0)[0].stride == 1
    assert sp.stem_specs()[0].key == "conv_k3_s1_i3x32x32_o16_relu6"


def test_every_sampled_arch_uses_only_profiled_ops_and_runs(small_space):
    keys = {s.key for s in small_space.op_specs()}
    rng = random.Random(1)
    for _ in range(20):
        arch = small_space.sample_arch(rng)
        assert {s.key for s in arch.op_specs()} <= keys
    out = arch.build().eval()(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10)


def test_stack_cap_and_width_mult_shrink_the_space(small_space):
    full = make_space("densenas", {"input_size": 32}).counts()
    small = small_space.counts()
    assert small["stacking_mixed_ops"] == 13 and small["unique_ops"] < full["unique_ops"]
    assert all(w % 8 == 0 for w in small_space.widths)


def test_bad_space_options():
    with pytest.raises(UserError, match="unknown search space 'nasnet'; valid spaces: densenas"):
        make_space("nasnet")
    with pytest.raises(UserError, match="--input-size must be a multiple of 32"):
        make_space("densenas", {"input_size": 100})


def test_the_routes_of_a_network_build_it_and_include_the_one_it_was_drawn_from():
    """``routes_of_arch`` inverts ``make_arch``: every route it gives builds the network, the
    route drawn is among them when its skips come last, and several are found where rounded
    widths repeat (16, 24 and 32 twice at width x0.5); another space's network has none."""
    space = make_space("densenas", {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1})
    several = 0
    for seed in range(100):
        route = space.sample_route(random.Random(seed))
        arch = space.route_arch(route, "drawn")
        routes = space.routes_of_arch(arch)
        assert routes and all(space.route_arch(r, "drawn") == arch for r in routes)
        assert route in routes or any("skip" in s[:-1] for s in route.stacks)  # a skip first: the same net, another route
        several += len(routes) > 1
    assert several > 50
    other = make_space("densenas", {"input_size": 32, "width_mult": 1.0, "num_classes": 10, "max_stack_layers": 1})
    assert space.routes_of_arch(other.sample_arch(random.Random(0))) == []


def test_a_dcnas_networks_cells_are_its_one_route():
    space = make_space("dcnas", {"input_size": 64, "layers": 4, "base_width": 16, "num_classes": 6, "head_width": 16})
    for seed in range(20):
        arch = space.sample_arch(random.Random(seed))
        assert space.routes_of_arch(arch) == [arch.cells]
    other = make_space("dcnas", {"input_size": 64, "layers": 4, "base_width": 16, "num_classes": 11, "head_width": 16})
    assert space.routes_of_arch(other.sample_arch(random.Random(0))) == []
    assert space.routes_of_arch(make_space("densenas").sample_arch(random.Random(0))) == []
