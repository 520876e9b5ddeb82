"""The search loop end to end on the built-in data: determinism, resume, derivation, training."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import saved_table, search_config, synthetic_table

from nas2deploy.nets import load_arch
from nas2deploy.cli import cli
from nas2deploy.errors import UserError
from nas2deploy.runs import open_run, search_after_warmup, start_search
from nas2deploy.search.config import SearchConfig
from nas2deploy.search.run_folder import RunFolder
from nas2deploy.search.sampling import rebalance_
from nas2deploy.spaces import make_space

SPACE = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return saved_table(tmp_path_factory, "densenas", SPACE, seed=0)


def config(table_path, **over):
    fields = dict(table=table_path, data="synthetic:200", epochs=2, warmup_epochs=1, batch_size=16, max_batches=2, a_lr=0.05, seed=3)
    fields.update(over)
    return search_config(**fields)


def test_rebalance_keeps_the_mass_of_unsampled_ops():
    alpha = torch.tensor([[0.1, 0.5, -0.3, 0.2]])
    before = torch.softmax(alpha, -1)
    idx = torch.tensor([[1, 3]])
    old = alpha.gather(1, idx).clone()
    alpha[0, 1] += 0.7  # an update of the sampled ops
    alpha[0, 3] -= 0.2
    rebalance_(alpha, idx, old)
    after = torch.softmax(alpha, -1)
    assert after[0, [0, 2]].tolist() == pytest.approx(before[0, [0, 2]].tolist())
    assert after[0, 1] > before[0, 1] and after[0, 3] < before[0, 3]


@pytest.mark.slow
def test_search_is_deterministic_and_resumes_exactly(tmp_path, table_path):
    full = start_search(config(table_path), tmp_path / "full")
    full.run()
    start_search(config(table_path), tmp_path / "split").run(until=1)  # as if killed after epoch 1
    resumed = start_search(config(table_path), tmp_path / "split", resume=True)
    assert resumed.epoch == 1
    resumed.run()
    for a, b in zip(full.net.arch_parameters(), resumed.net.arch_parameters()):
        assert torch.equal(a, b)
    assert torch.equal(full.net.stem[0][0].weight, resumed.net.stem[0][0].weight)
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[1]["phase"] == "search"
    for key in ("train_loss", "train_top1", "expected_ms", "lambda", "derived", "derived_ms", "alpha_entropy", "beta_entropy"):
        assert key in log[1]
    assert load_arch(tmp_path / "split" / "arch.json").num_classes == 10
    # the architecture step moved alpha and beta away from their 1e-3 initialisation
    assert full.net.beta.abs().max() > 0.01


def test_resume_with_another_configuration_is_refused(tmp_path, table_path):
    start_search(config(table_path, epochs=1, warmup_epochs=0), tmp_path / "r").run()
    with pytest.raises(UserError, match=r"different configuration: seed: 3 vs 4"):
        start_search(config(table_path, epochs=1, warmup_epochs=0, seed=4), tmp_path / "r", resume=True)
    with pytest.raises(UserError, match="already holds a search: pass --resume"):
        start_search(config(table_path), tmp_path / "r")
    # the segmentation demo pointed at a folder holding this (DenseNAS) search says so, naming no --resume
    from nas2deploy.demo import run_demo

    (tmp_path / "r" / "search").mkdir()
    (tmp_path / "r" / "checkpoint.pt").replace(tmp_path / "r" / "search" / "checkpoint.pt")
    with pytest.raises(UserError, match=r"holds the demo of the densenas space .* give the segmentation demo another --out"):
        run_demo(tmp_path / "r", tmp_path / "export", print, task="segmentation")
    assert not (tmp_path / "export").exists()
    (tmp_path / "r" / "search" / "checkpoint.pt").replace(tmp_path / "r" / "checkpoint.pt")
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="checkpoint.pt cannot be read"):
        RunFolder(tmp_path / "r").load_checkpoint()


def test_budget_mode_raises_lambda_when_over_budget(tmp_path, table_path):
    import numpy as np

    # a numpy budget (as computed from a table) must still give a weights_only-readable checkpoint
    run = start_search(config(table_path, epochs=2, warmup_epochs=1, budget_ms=np.float64(3.0), lam=0.1), tmp_path / "b")
    run.run()
    assert open_run(tmp_path / "b").config.budget_ms == 3.0
    assert run.controller.lam > 0.1  # the expected latency (~10 ms) is far above 3 ms (fastest: 2.94)


def test_table_and_data_must_match(tmp_path):
    other = tmp_path / "classes.json"
    synthetic_table(make_space("densenas", {**SPACE, "num_classes": 7})).save(other)
    with pytest.raises(UserError, match="covers 7 classes but data synthetic:200 has 10: profile a table with --num-classes 10"):
        start_search(config(str(other)), tmp_path / "x")
    larger = tmp_path / "size.json"
    synthetic_table(make_space("densenas", {**SPACE, "input_size": 64})).save(larger)
    run = start_search(config(str(larger)), tmp_path / "y")  # built-in data is generated at the table's size
    assert run.loaders["train"].dataset[(0, None)][0].shape == (3, 64, 64)


@pytest.mark.slow
def test_cli_search_derive_train(tmp_path, table_path):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    result = runner.invoke(cli, ["search", "--lut", table_path, "--data", "synthetic:200", "--epochs", "1", "--warmup-epochs", "0",
                                 "--batch-size", "16", "--max-batches", "1", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1 search" in result.output
    result = runner.invoke(cli, ["derive", str(run_dir), "--budget-ms", "100", "--out", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["derive", str(run_dir), "--budget-ms", "0.01", "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 1 and "fastest achievable is" in result.output
    result = runner.invoke(cli, ["train", "--arch", str(tmp_path / "a.json"), "--data", "synthetic:200", "--epochs", "1", "--out", str(tmp_path / "w.pt")])
    assert result.exit_code == 0, result.output and "top-1" in result.output
    from nas2deploy.train import load_weights

    model = load_weights(load_arch(tmp_path / "a.json"), tmp_path / "w.pt")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(UserError, match="do not match arch"):
        load_weights(load_arch("densenas-a"), tmp_path / "w.pt")
    arch = load_arch(tmp_path / "a.json")
    assert arch.meta == {"lut": table_path, "data": "synthetic:200", "space": "densenas", "budget_ms": 100.0}
    # the chain goes on: export reads the data and the table from the arch's meta
    out = tmp_path / "export"
    result = runner.invoke(cli, ["export", "--arch", str(tmp_path / "a.json"), "--weights", str(tmp_path / "w.pt"),
                                 "--out", str(out), "--samples", "20"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["budget_ms"] == 100.0 and report["accuracy"]["samples"] == 20
    assert "records no device" in report["prediction_skipped"]  # a synthetic table is no device's
    result = runner.invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    for name in ("report.md", "curves.png", "alpha_head.png", "beta.png", "lut_head.png"):
        assert (run_dir / name).read_bytes()[:4] in (b"\x89PNG", b"# Se"), name


def test_a_table_that_does_not_cover_the_requested_space_is_refused(tmp_path, table_path):
    with pytest.raises(UserError) as err:
        start_search(config(table_path, width_mult=0.5), tmp_path / "w")
    msg = str(err.value)
    assert "does not cover the densenas space" in msg and "lacks" in msg
    assert "nas2deploy profile --space densenas" in msg and "--width-mult 0.5" in msg


def test_a_budget_below_the_fastest_network_is_refused(tmp_path, table_path):
    with pytest.raises(UserError, match=r"--budget-ms 0.01 is below the fastest network of this space: \d+\.\d{3} ms"):
        start_search(config(table_path, budget_ms=0.01), tmp_path / "f")


def test_search_config_files_are_checked(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"epochs": 3, "learning_rate": 1}')
    with pytest.raises(UserError, match="unknown field\\(s\\) learning_rate"):
        SearchConfig.from_file(bad)
    bad.write_text('{"table": "x.json"}')
    with pytest.raises(UserError, match="unknown field\\(s\\) table"):
        SearchConfig.from_file(bad)
    bad.write_text("[1]")
    with pytest.raises(UserError, match="must be a JSON object"):
        SearchConfig.from_file(bad)


def test_resuming_a_finished_search_reports_its_network(tmp_path, table_path):
    runner = CliRunner()
    args = ["search", "--lut", table_path, "--data", "synthetic:200", "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "16", "--max-batches", "1", "--out", str(tmp_path / "r")]
    assert runner.invoke(cli, args).exit_code == 0
    again = runner.invoke(cli, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "derived architecture:" in again.output and "nan" not in again.output.lower()


def test_resume_takes_the_runs_own_options_and_refuses_a_different_one(tmp_path, table_path):
    runner = CliRunner()
    out = str(tmp_path / "r")
    first = ["search", "--lut", table_path, "--data", "synthetic:200", "--epochs", "2", "--warmup-epochs", "1",
             "--batch-size", "16", "--max-batches", "1", "--no-channels-last", "--seed", "3", "--out", out]
    assert runner.invoke(cli, first).exit_code == 0
    again = runner.invoke(cli, ["search", "--lut", table_path, "--resume", "--out", out])  # nothing else repeated
    assert again.exit_code == 0 and "derived architecture:" in again.output, again.output
    other = runner.invoke(cli, ["search", "--lut", table_path, "--resume", "--w-lr", "0.1", "--out", out])
    assert other.exit_code == 1 and "different configuration" in other.output and "w_lr" in other.output


def test_a_run_written_before_space_options_were_nested_still_opens(tmp_path, table_path):
    """Earlier releases stored the space's options at the top level of the config (every search
    option at its default, for every space); such a run re-opens, derives and resumes."""
    import torch

    run_dir = tmp_path / "old"
    start_search(config(table_path, epochs=1, warmup_epochs=0, width_mult=0.25), run_dir).run()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    flat = {k: v for k, v in state["config"].items() if k not in ("space_config", "search_options")}
    flat.update(state["config"]["space_config"], input_size=None, num_classes=None, max_stack_layers=None, layers=None,
                base_width=None, max_back=None, derive_inputs=None, path_samples=2, channel_fraction=0.25, viterbi=False)
    state["config"] = flat
    torch.save(state, run_dir / "checkpoint.pt")
    opened = open_run(run_dir)
    assert opened.config.space_config == {"width_mult": 0.25} and opened.config.search_options == {}
    assert opened.derive("again").to_dict()["blocks"] == load_arch(run_dir / "arch.json").to_dict()["blocks"]
    resumed = start_search(config(table_path, epochs=2, warmup_epochs=0, width_mult=0.25), run_dir, resume=True)
    assert resumed.epoch == 1


def test_each_step_computes_gradients_only_for_what_it_updates(tmp_path, table_path):
    """A weight step leaves alpha and beta without gradients, an architecture step the weights
    (no weight-gradient convolutions); every parameter is trainable again after either."""
    run = start_search(config(table_path), tmp_path / "run", progress=None)
    search = run.space_search
    data = run.loaders["train"].dataset
    x = torch.stack([data[(i, None)][0] for i in range(8)])
    y = torch.tensor([int(data[(i, None)][1]) for i in range(8)])
    from nas2deploy.objective import Score

    for arch in (False, True):
        score = Score(run.task, run.classes, run.device)
        (run._arch_step if arch else lambda *a: run._weight_step(*a, False))(x, y, score)
        updated, other = (search.arch_parameters(), search.weight_parameters()) if arch else \
            (search.weight_parameters(), search.arch_parameters())
        assert all(p.grad is None for p in other)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in updated)
        assert all(p.requires_grad for p in search.arch_parameters() + search.weight_parameters())


def test_a_checkpoint_with_a_poisoned_optimiser_or_retyped_weights_is_refused(tmp_path, table_path):
    """Every tensor of a checkpoint is checked, the optimisers' state and hyper-parameters too: a
    NaN momentum would otherwise train the search into NaN and derive from it with exit 0."""
    run_dir = tmp_path / "run"
    start_search(config(table_path, epochs=1, warmup_epochs=0, width_mult=0.25), run_dir).run()
    good = (run_dir / "checkpoint.pt").read_bytes()

    def nan_momentum(state):
        next(iter(state["w_opt"]["state"].values()))["momentum_buffer"].fill_(float("nan"))

    def infinite_lr(state):
        state["a_opt"]["param_groups"][0]["lr"] = float("inf")

    def retyped(state):
        name = next(k for k, v in state["net"].items() if v.is_floating_point())
        state["net"][name] = state["net"][name].long()

    def no_optimiser(state):
        del state["a_opt"]

    for edit, message in [(nan_momentum, r"field w_opt\.state\.\d+\.momentum_buffer holds a value that is not finite"),
                          (infinite_lr, r"field a_opt\.param_groups\.0\.lr holds"),
                          (retyped, "as torch.int64, the supernet keeps it as torch.float32"),
                          (no_optimiser, "field a_opt")]:
        state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        edit(state)
        torch.save(state, run_dir / "checkpoint.pt")
        with pytest.raises(UserError, match=message):
            start_search(config(table_path, epochs=2, warmup_epochs=0, width_mult=0.25), run_dir, resume=True)
        with pytest.raises(UserError, match=message):  # nor derived from (load_state_dict would cast int64 silently)
            open_run(run_dir)
        (run_dir / "checkpoint.pt").write_bytes(good)


def test_a_learning_rate_floor_above_the_learning_rate_is_refused(tmp_path, table_path):
    with pytest.raises(UserError, match="w_lr_min 0.5 is above w_lr"):
        start_search(config(table_path, w_lr=0.05, w_lr_min=0.5), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_searches_share_one_weight_warmup_and_resume_their_own(tmp_path, table_path):
    warm = search_after_warmup(config(table_path), tmp_path / "warm", None)
    assert warm.epoch == 1  # the warm-up alone
    for a_lr in (0.05, 0.1):
        folder = tmp_path / f"search-{a_lr}"
        run = search_after_warmup(config(table_path, a_lr=a_lr), folder, warm)
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log] == [2] and log[0]["phase"] == "search"  # the warm-up is not repeated
        assert run.w_step > warm.w_step
        # a killed benchmark calling again gets the search from its own checkpoint, not a new one from the warm-up
        again = search_after_warmup(config(table_path, a_lr=a_lr), folder, warm)
        for x, y in zip(run.net.arch_parameters(), again.net.arch_parameters()):
            assert torch.equal(x, y)
