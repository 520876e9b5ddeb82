"""Launch costs: each op's host dispatch and kernel times, recorded by eager CUDA profiles, and the
host-bound warning they give (injected costs here; the GPU tests measure real ones)."""

import json

import pytest
import torch
from conftest import FAST, SMALL, needs_cuda

from nas2deploy.backends import BackendSettings, TorchModule, open_runner
from nas2deploy.backends.timing import LaunchCosts
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.ops import MBConv
from nas2deploy.spaces import make_space

SPEC = MBConv(16, 16, 16, 24, 3, 6, 2)


def test_a_table_keeps_launch_costs_and_validates_them(tmp_path, small_space):
    from nas2deploy.testing import random_table

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
    with open_runner(BackendSettings(backend="torch", device="cuda", options={"cuda_graph": True}), TorchModule(SPEC.build(), (16, 16, 16))) as runner:
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
    graph, _ = profile_space(space, BackendSettings(backend="torch", device="cuda", options={"cuda_graph": True}), tmp_path / "g.json", FAST)
    assert all(e.launch is None for e in graph.entries.values())


def test_a_host_bound_eager_table_is_warned_about_and_shown(small_space):
    from nas2deploy.testing import random_table

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
