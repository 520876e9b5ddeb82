"""Random networks of a latency window (``space sample``): the baseline a search must beat."""

import json

import pytest
from click.testing import CliRunner
from conftest import saved_table

from nas2deploy.random_networks import reachable_ms, sample_window
from nas2deploy.cli import cli
from nas2deploy.nets import load_arch
from nas2deploy.spaces.tables import load_table

SHAPES = {"densenas": {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1},
          "dcnas": {"input_size": 64, "layers": 4, "base_width": 8, "num_classes": 6, "head_width": 16}}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def space_table(request, tmp_path_factory):
    return request.param, saved_table(tmp_path_factory, request.param, SHAPES[request.param])


def test_sampled_networks_are_distinct_lie_in_the_window_and_repeat_by_seed(space_table):
    space, table_path = space_table
    table = load_table(table_path)
    fastest, slowest = reachable_ms(table_path)
    budget = fastest + 0.5 * (slowest - fastest)
    sample = sample_window(table_path, budget, 0.8, 6, seed=4)
    assert len(sample.networks) == 6 and sample.tries >= 6
    bodies = {json.dumps({k: v for k, v in a.to_dict().items() if k not in ("name", "meta")}, sort_keys=True)
              for a in sample.networks}
    assert len(bodies) == 6
    for arch in sample.networks:
        assert 0.8 * budget <= table.predict(arch).best_ms <= budget
        assert arch.meta["budget_ms"] == budget and arch.meta["sampler"] == "rejection" and arch.meta["space"] == space
    again = sample_window(table_path, budget, 0.8, 6, seed=4)
    assert [a.to_dict() for a in again.networks] == [a.to_dict() for a in sample.networks]


def test_the_cli_writes_the_folder_and_refuses_what_cannot_be_drawn(tmp_path, space_table):
    space, table_path = space_table
    fastest, slowest = reachable_ms(table_path)
    budget = round(fastest + 0.5 * (slowest - fastest), 4)
    runner = CliRunner()
    out = tmp_path / "random"
    result = runner.invoke(cli, ["space", "sample", space, "--lut", table_path, "--budget-ms", str(budget), "--count", "3",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["random-000.json", "random-001.json", "random-002.json"]
    assert load_arch(out / "random-001.json").meta["fill"] == 0.9
    low = runner.invoke(cli, ["space", "sample", space, "--lut", table_path, "--budget-ms", str(fastest / 2),
                              "--out", str(tmp_path / "none")])
    assert low.exit_code == 1 and "holds no network of this space" in low.output and f"{fastest:.4g}-" in low.output
    few = runner.invoke(cli, ["space", "sample", space, "--lut", table_path, "--budget-ms", str(budget), "--fill", "0.9999",
                              "--count", "50", "--max-tries", "100", "--out", str(tmp_path / "few")])
    assert few.exit_code == 1 and "networks in 100 draws" in few.output
    other = "dcnas" if space == "densenas" else "densenas"
    wrong = runner.invoke(cli, ["space", "sample", other, "--lut", table_path, "--budget-ms", str(budget), "--out", str(tmp_path / "w")])
    assert wrong.exit_code == 1 and f"profiled for space {space!r}" in wrong.output


def test_space_options_narrow_the_sampled_space_as_they_narrow_a_search(tmp_path, tmp_path_factory):
    """The baseline must come from the space the search searched: a table profiled with stacking
    layers, sampled with --max-stack-layers 0, gives networks without any."""
    table_path = saved_table(tmp_path_factory, "densenas", SHAPES["densenas"])
    fastest, slowest = reachable_ms(table_path, {"max_stack_layers": 0})
    assert (fastest, slowest) != reachable_ms(table_path)
    budget = round(fastest + 0.5 * (slowest - fastest), 4)
    out = tmp_path / "narrow"
    result = CliRunner().invoke(cli, ["space", "sample", "densenas", "--lut", table_path, "--budget-ms", str(budget),
                                      "--count", "4", "--max-stack-layers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    archs = [load_arch(p) for p in sorted(out.iterdir())]
    assert len(archs) == 4 and all(b["stack"] == [] for a in archs for b in a.to_dict()["blocks"])
    wide = sample_window(table_path, budget, 0.5, 12, seed=1)
    assert any(b["stack"] for a in wide.networks for b in a.to_dict()["blocks"])  # without the option they occur
