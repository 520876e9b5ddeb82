"""Launch costs: each op's host dispatch and kernel times, recorded by eager CUDA profiles, the
host-bound warning they give, and the launch-pipeline model that ``benchmarks/gpu_latency.py``
measures against the op sums (injected costs here; the GPU tests measure real ones)."""

import json

import pytest
import torch
from conftest import FAST, SMALL, needs_cuda
from gpu_latency import pipeline_ms

from nas2deploy.backends import BackendSettings, TorchModule, open_runner
from nas2deploy.backends.timing import LaunchCosts
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.ops import MBConv
from nas2deploy.spaces import make_space

SPEC = MBConv(16, 16, 16, 24, 3, 6, 2)


def test_the_pipeline_is_bound_by_the_slower_side():
    host_bound = [LaunchCosts(0.05, 0.01)] * 10
    assert pipeline_ms(host_bound) == pytest.approx(10 * 0.05 + 0.01)  # the GPU waits for every op
    gpu_bound = [LaunchCosts(0.01, 0.05)] * 10
    assert pipeline_ms(gpu_bound) == pytest.approx(0.01 + 10 * 0.05)  # the host runs ahead
    assert pipeline_ms([LaunchCosts(0.04, 0.03)]) == pytest.approx(0.07)  # one op: nothing overlaps
    assert pipeline_ms([LaunchCosts(0.04, 0.03)], start=0.5) == pytest.approx(0.05)  # the host finishes last
    mixed = [LaunchCosts(0.05, 0.01), LaunchCosts(0.01, 0.2), LaunchCosts(0.05, 0.01)]
    assert pipeline_ms(mixed) == pytest.approx(0.05 + 0.01 + 0.2 + 0.01)  # the third op's dispatch hides under the second


def test_the_pipeline_never_beats_either_side_alone_and_never_exceeds_both():
    import random

    rng = random.Random(0)
    for _ in range(200):
        costs = [LaunchCosts(rng.uniform(1e-3, 0.1), rng.uniform(1e-3, 0.1)) for _ in range(rng.randint(1, 30))]
        got = pipeline_ms(costs)
        host, kernels = sum(c.host_ms for c in costs), sum(c.kernel_ms for c in costs)
        assert max(host, kernels) <= got + 1e-12 <= host + kernels + 2e-12
        slower = [LaunchCosts(c.host_ms * 1.1, c.kernel_ms) for c in costs]
        assert pipeline_ms(slower) >= got  # a slower op never predicts a faster network


def test_a_table_keeps_launch_costs_and_validates_them(tmp_path, small_space):
    from budget_exactness import random_table

    table = random_table(small_space, 0)
    key = next(iter(table.entries))
    table.entries[key] = type(table.entries[key])(table.entries[key].spec, table.entries[key].stats, 1, LaunchCosts(0.02, 0.01))
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").entries[key].launch == LaunchCosts(0.02, 0.01)
    doc = json.loads((tmp_path / "t.json").read_text())
    doc["entries"][key]["launch"]["host_ms"] = -1
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match=rf"entries.{key}.launch.host_ms"):
        LatencyTable.load(tmp_path / "t.json")


def test_runners_without_python_launches_have_no_launch_costs():
    with open_runner(BackendSettings(backend="torch"), TorchModule(SPEC.build(), (16, 16, 16))) as runner:
        assert runner.launch_costs(5) is None  # a CPU run is synchronous: its time is the table's
    with open_runner(BackendSettings(backend="onnxruntime"), TorchModule(SPEC.build(), (16, 16, 16))) as runner:
        assert runner.launch_costs(5) is None


@needs_cuda
def test_an_eager_cuda_runner_measures_both_sides_of_the_launch():
    with open_runner(BackendSettings(backend="torch", device="cuda"), TorchModule(SPEC.build(), (16, 16, 16))) as runner:
        costs = runner.launch_costs(20)
        assert costs is not None and costs.host_ms > 0 and costs.kernel_ms > 0
        assert len(runner.time_runs(3)) == 3  # still eager and usable after the capture
    with open_runner(BackendSettings(backend="torch", device="cuda", cuda_graph=True), TorchModule(SPEC.build(), (16, 16, 16))) as runner:
        assert runner.launch_costs(5) is None  # a graph's time is already its kernels'


class HostSync(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.sum())


@needs_cuda
def test_an_op_that_cannot_be_captured_has_no_launch_costs():
    with open_runner(BackendSettings(backend="torch", device="cuda"), TorchModule(HostSync(), (4, 8, 8))) as runner:
        assert runner.launch_costs(5) is None
        assert len(runner.time_runs(3)) == 3


@needs_cuda
def test_an_eager_cuda_profile_records_launch_costs_and_a_graph_profile_does_not(tmp_path):
    space = make_space("densenas", {**SMALL, "max_stack_layers": 0})
    eager, _ = profile_space(space, BackendSettings(backend="torch", device="cuda"), tmp_path / "e.json", FAST)
    assert all(e.launch is not None and e.launch.host_ms > 0 for e in LatencyTable.load(tmp_path / "e.json").entries.values())
    graph, _ = profile_space(space, BackendSettings(backend="torch", device="cuda", cuda_graph=True), tmp_path / "g.json", FAST)
    assert all(e.launch is None for e in graph.entries.values())


def test_a_host_bound_eager_table_is_warned_about_and_shown(small_space):
    from budget_exactness import random_table

    from nas2deploy.latency.summary import summarize, table_warnings

    table = random_table(small_space, 0)
    assert not any("bound by the host" in w for w in table_warnings(table))  # no launch costs: nothing to say
    keys = list(table.entries)
    for i, key in enumerate(keys):  # two thirds of the ops dispatch slower than their kernels run
        e = table.entries[key]
        costs = LaunchCosts(0.15, 0.03) if i % 3 else LaunchCosts(0.01, 0.05)
        table.entries[key] = type(e)(e.spec, e.stats, e.attempts, costs)
    (warning,) = [w for w in table_warnings(table) if "bound by the host" in w]
    assert f"{len(keys) - len(keys[::3])} of {len(keys)} ops" in warning and "--cuda-graph" in warning
    assert any(line.startswith("  launches   eager: host dispatch 0.1500 ms") for line in summarize(table)["lines"])
    for key in keys:  # kernels outlast dispatch: a GPU-bound eager table is not warned about
        e = table.entries[key]
        table.entries[key] = type(e)(e.spec, e.stats, e.attempts, LaunchCosts(0.01, 0.05))
    assert not any("bound by the host" in w for w in table_warnings(table))
