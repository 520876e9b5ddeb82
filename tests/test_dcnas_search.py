"""The DCNAS search on the shared loop: segmentation loss and mIoU, resume, budget derivation,
the CLI chain (search, derive, train, export, report)."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import saved_table, search_config, synthetic_table

from nas2deploy.nets import load_arch
from nas2deploy.cli import cli
from nas2deploy.errors import UserError
from nas2deploy.spaces.dcnas.derive import (
    derive_topk,
    derive_under_budget,
    fastest_latency,
)
from nas2deploy.spaces.dcnas.latency_model import DCNASLatencyModel
from nas2deploy.spaces.dcnas.supernet import DCNASSupernet
from nas2deploy.runs import open_run, resolve, start_search
from nas2deploy.search.config import SearchConfig
from nas2deploy.nets.cells import SegArch
from nas2deploy.spaces import make_space

TINY = {"input_size": 64, "layers": 4, "base_width": 8, "num_classes": 6, "head_width": 16}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return saved_table(tmp_path_factory, "dcnas", TINY, seed=2)


def config(table_path, **over):
    fields = dict(table=table_path, space="dcnas", data="seg-synthetic:40", epochs=2, warmup_epochs=1, batch_size=8,
                  max_batches=2, a_lr=0.05, seed=1)
    fields.update(over)
    return search_config(**fields)


def _trained_net(seed=0):
    """A supernet whose alpha and beta are spread out, as after a search."""
    torch.manual_seed(seed)
    net = DCNASSupernet(make_space("dcnas", TINY))
    with torch.no_grad():
        net.alpha.normal_(0, 1.0)
        net.beta.normal_(0, 1.0)
    return net


def test_skipped_cells_are_exactly_those_that_do_not_reach_the_output():
    net = _trained_net()
    paths = net.sample_paths(torch.Generator().manual_seed(0))
    alive = net.alive(paths)
    assert set(net.output_cells) <= alive and len(alive) < len(net.cells)
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    y = net(x, paths)
    y.sum().backward()
    for i, cell in enumerate(net.cells):  # a dead cell's op weights get no gradient, a live one's do
        assert (net.alpha.grad[i].abs().sum() > 0) == (cell in alive)
    # top_paths keeps exactly the connections derivation keeps: same cells alive as the derived net
    arch = derive_topk(net)
    assert net.alive(net.top_paths()) - {(-1, 0)} == {c.node for c in arch.cells}


def test_budget_derivation_fits_fills_and_is_most_probable_when_unconstrained():
    net = _trained_net()
    table = synthetic_table(net.space, seed=2)
    model = DCNASLatencyModel(net, table)
    free = derive_topk(net)
    generous = 10 * table.predict(free).best_ms
    assert derive_under_budget(net, model, generous, fill=0.0).cells == free.cells
    fastest = fastest_latency(net, model)
    for budget in (fastest * 1.05, fastest * 1.3, (fastest + table.predict(free).best_ms) / 2):
        arch = derive_under_budget(net, model, budget, fill=0.9)
        ms = table.predict(arch).best_ms
        assert ms <= budget
        assert ms >= 0.9 * budget or budget < fastest / 0.9  # the window is reachable above the fastest / 0.9
    with pytest.raises(UserError, match=f"fits {fastest * 0.9:g} ms: the fastest is {fastest:.7g} ms"):
        derive_under_budget(net, model, fastest * 0.9)
    viterbi = derive_under_budget(net, model, fastest * 1.3, viterbi=True)
    assert all(len(c.inputs) == 1 for c in viterbi.cells) and table.predict(viterbi).best_ms <= fastest * 1.3


@pytest.mark.slow
def test_search_is_deterministic_resumes_and_logs_miou(tmp_path, table_path):
    full = start_search(config(table_path), tmp_path / "full")
    full.run()
    start_search(config(table_path), tmp_path / "split").run(until=1)
    resumed = start_search(config(table_path), tmp_path / "split", resume=True)
    resumed.run()
    for a, b in zip(full.net.arch_parameters(), resumed.net.arch_parameters()):
        assert torch.equal(a, b)
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == ["warmup", "search"] and log[1]["metric"] == "miou"
    assert 0 <= log[1]["val_miou_argmax"] <= 1 and log[1]["train_miou"] > 0
    assert full.net.beta.abs().max() > 0.01  # the architecture step moved beta
    arch = load_arch(tmp_path / "split" / "arch.json")
    assert isinstance(arch, SegArch) and arch.meta["space"] == "dcnas" and arch.meta["data"] == "seg-synthetic:40"


def test_dcnas_search_refuses_the_wrong_data_and_budget(tmp_path, table_path):
    with pytest.raises(UserError, match=r"data synthetic:200 is classification data \(the built-in shapes\), not segmentation data"):
        start_search(config(table_path, data="synthetic:200"), tmp_path / "a")
    with pytest.raises(UserError, match="below the fastest network of this space"):
        start_search(config(table_path, budget_ms=0.5), tmp_path / "b")
    with pytest.raises(UserError, match="--width-mult does not apply to the dcnas space"):
        start_search(config(table_path, width_mult=0.5), tmp_path / "c")
    assert resolve(SearchConfig(table="t", space="dcnas")).data == "seg-synthetic"


@pytest.mark.slow
def test_cli_search_derive_train_export_report(tmp_path, table_path):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    result = runner.invoke(cli, ["search", "--space", "dcnas", "--lut", table_path, "--data", "seg-synthetic:40", "--epochs", "2",
                                 "--warmup-epochs", "1", "--batch-size", "8", "--max-batches", "1", "--budget-ms", "30",
                                 "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "search: train mIoU" in result.output
    run = open_run(run_dir)
    fastest = fastest_latency(run.space_search.net, run.space_search.latency_model)
    budget = round(1.5 * fastest, 3)
    for extra in ([], ["--viterbi"]):
        out = tmp_path / f"arch{len(extra)}.json"
        result = runner.invoke(cli, ["derive", str(run_dir), "--budget-ms", str(budget), *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        arch = load_arch(out)
        assert run.table.predict(arch).best_ms <= budget and arch.meta["budget_ms"] == budget
    result = runner.invoke(cli, ["derive", str(run_dir), "--budget-ms", str(fastest / 2), "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 1 and f"the fastest is {fastest:.7g} ms" in result.output
    weights = tmp_path / "w.pt"
    result = runner.invoke(cli, ["train", "--arch", str(tmp_path / "arch0.json"), "--data", "seg-synthetic:40", "--epochs", "1",
                                 "--out", str(weights)])
    assert result.exit_code == 0 and "mIoU" in result.output, result.output
    result = runner.invoke(cli, ["export", "--arch", str(tmp_path / "arch0.json"), "--weights", str(weights),
                                 "--out", str(tmp_path / "export"), "--samples", "8"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "export" / "report.json").read_text())
    assert report["passed"] and report["budget_ms"] == budget
    result = runner.invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.md").read_text()
    assert "val mIoU" in text and (run_dir / "alpha.png").exists() and (run_dir / "beta.png").exists()


def test_table_of_another_space_and_resume_errors(tmp_path, table_path):
    densenas = tmp_path / "densenas.json"
    synthetic_table(make_space("densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 10,
                                            "max_stack_layers": 1})).save(densenas)
    with pytest.raises(UserError, match="profiled for space 'densenas', not 'dcnas'"):
        start_search(config(str(densenas)), tmp_path / "a")
    start_search(config(table_path, epochs=1, warmup_epochs=0), tmp_path / "r").run()
    with pytest.raises(UserError, match=r"different configuration: search_options: \{\} vs \{'path_samples': 3\}"):
        start_search(config(table_path, epochs=1, warmup_epochs=0, path_samples=3), tmp_path / "r", resume=True)
    run = open_run(tmp_path / "r")
    with pytest.raises(UserError, match="--viterbi does not apply to the densenas space"):
        open_run_densenas = start_search(config(str(densenas), space="densenas", data="synthetic:200", batch_size=16), tmp_path / "d")
        open_run_densenas.space_search.derive("x", viterbi=True)
    assert isinstance(run.derive("y"), SegArch)


def test_inputs_kept_per_cell_is_a_space_option(tmp_path, table_path):
    with pytest.raises(UserError, match="lacks .*addn_n3"):
        start_search(config(table_path, derive_inputs=3), tmp_path / "a")  # the table priced fusions of 2 at most
    one = start_search(config(table_path, derive_inputs=1), tmp_path / "b")
    assert all(len(c.inputs) == 1 for c in one.derive().cells)
    result = CliRunner().invoke(cli, ["space", "info", "dcnas", "--input-size", "64", "--layers", "4", "--derive-inputs", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["architectures_log10"] > 0
