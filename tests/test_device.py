"""Searching and training on a device: mixed precision, data workers, the process group's
failures, resuming elsewhere, a GPU's errors. The CPU runs everything a CPU can; the tests marked
``gpu`` need CUDA and run in ``benchmarks/gpu_check.sh``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import CUDA_MARKS, HAS_CUDA, needs_cuda, saved_table, search_config, synthetic_table
from PIL import Image

from nas2deploy.cli import cli
from nas2deploy.data import open_dataset
from nas2deploy.errors import UserError
from nas2deploy.runs import open_run, start_search
from nas2deploy.search.config import SearchConfig
from nas2deploy.spaces import make_space
from nas2deploy.train import out_of_memory

SPACE = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}
SEG_SPACE = {"input_size": 64, "layers": 4, "base_width": 8, "num_classes": 6, "head_width": 16}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return saved_table(tmp_path_factory, "densenas", SPACE, seed=0)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ImageFolder of 10 classes of noisy coloured images (40x30 px): it decodes and augments."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"class{c:02d}").mkdir()
        for i in range(12):
            pixels = np.clip(rng.normal(25 * c, 40, (30, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c:02d}" / f"{i}.png")
    return root


def config(table_path, **over):
    fields = dict(table=table_path, data="synthetic:200", epochs=2, warmup_epochs=1, batch_size=16, max_batches=2,
                  a_lr=0.05, seed=3)
    fields.update(over)
    return search_config(**fields)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_searches_and_logs_its_speed(tmp_path, table_path, amp):
    run = start_search(config(table_path, amp=amp), tmp_path / amp)
    run.run()
    assert all(bool(torch.isfinite(p).all()) for p in run.net.arch_parameters())
    fp32 = start_search(config(table_path), tmp_path / "fp32")
    fp32.run()
    # autocast really ran the forward passes in low precision: the search moved differently
    assert any(not torch.equal(a, b) for a, b in zip(run.net.arch_parameters(), fp32.net.arch_parameters()))
    last = json.loads((tmp_path / amp / "log.jsonl").read_text().splitlines()[-1])
    assert last["weight_images_per_s"] > 0 and last["arch_images_per_s"] > 0 and last["data_wait_s"] >= 0
    assert last["gpu_memory_mb"] is None  # on the CPU


@pytest.mark.slow
def test_data_workers_decode_the_same_augmented_batches(tmp_path, image_folder):
    table = tmp_path / "t.json"
    synthetic_table(make_space("densenas", SPACE)).save(table)
    runs = []
    for workers in (0, 2):
        run = start_search(config(str(table), data=str(image_folder), workers=workers, batch_size=8), tmp_path / f"w{workers}")
        run.run()
        runs.append(run)
    for a, b in zip(runs[0].net.arch_parameters(), runs[1].net.arch_parameters()):
        assert torch.equal(a, b)


def test_imagefolder_transforms_class_subset_and_bad_files(tmp_path, image_folder):
    data = open_dataset(str(image_folder), 32, classes=4)
    assert data.num_classes == 4 and {y for _, y in (data.test[i] for i in range(len(data.test)))} <= set(range(4))
    assert len(data.train) + len(data.test) == 48
    x, _ = data.test[0]  # evaluation: resize 32 / 0.875, centre crop 32, ImageNet normalisation
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    draw = data.train.get(0, 7)[0]
    assert torch.equal(draw, data.train.get(0, 7)[0]) and not torch.equal(draw, data.train.get(0, 8)[0])
    with pytest.raises(UserError, match="--data-classes 11: data .* has only 10 classes"):
        open_dataset(str(image_folder), 32, classes=11)
    with pytest.raises(UserError, match="--data-classes 3: only an ImageFolder"):
        open_dataset("synthetic:20", 32, classes=3)
    with pytest.raises(UserError, match=r"field crop must be HxW"):
        SearchConfig(table="t", crop="512by1024").check()
    with pytest.raises(UserError, match=r"field crop sides must be multiples of 32"):
        SearchConfig(table="t", crop="500x1000").check()


@pytest.mark.slow
def test_a_bad_file_met_by_a_worker_is_one_line(tmp_path, image_folder):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    for c in range(5):
        for f in (data / f"class0{c}").iterdir():
            f.write_bytes(b"not an image")
    table = tmp_path / "t.json"
    synthetic_table(make_space("densenas", SPACE)).save(table)
    result = CliRunner().invoke(cli, ["search", "--lut", str(table), "--data", str(data), "--epochs", "1",
                                      "--warmup-epochs", "0", "--batch-size", "16", "--workers", "2",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    said = [line for line in result.output.strip().splitlines() if not line.startswith("warning: ")]  # the table is synthetic
    assert said[0].startswith("Error: data ") and "/class0" in said[0] and "cannot read the image" in said[0]
    assert len(said) == 1 and "Traceback" not in result.output


@pytest.mark.skipif(HAS_CUDA, reason="checks the message of a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path, table_path):
    for command in (["search", "--lut", table_path, "--out", str(tmp_path / "r")],
                    ["train", "--arch", "densenas-a", "--out", str(tmp_path / "w.pt")]):
        result = CliRunner().invoke(cli, [*command, "--device", "cuda"])
        assert result.exit_code == 1 and result.output.startswith("Error: --device cuda: "), result.output
        assert ("no CUDA support" in result.output or "no usable GPU" in result.output) and len(result.output.splitlines()) == 1


def test_out_of_memory_says_the_batch_and_what_lowers_it():
    with pytest.raises(UserError) as err:
        with out_of_memory(torch.device("cpu"), 64, 2, "off"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message = str(err.value)
    assert "--batch-size 64" in message and "accumulate 2" in message and "--amp bf16" in message and "GB" in message


def test_resume_on_another_device_is_mapped_and_said(tmp_path, table_path):
    start_search(config(table_path), tmp_path / "r").run(until=1)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    state["device"] = "cuda"  # as a GPU run writes it: tensors are saved from the CPU-mapped copy either way
    torch.save(state, tmp_path / "r" / "checkpoint.pt")
    said = []
    resumed = start_search(config(table_path), tmp_path / "r", resume=True, progress=said.append)
    assert resumed.epoch == 1 and any("was searched on cuda" in line and "mapped to cpu" in line for line in said)
    resumed.folder.release()  # a run that is not run holds its folder until released (one writer)
    state["device"] = "tpu"
    torch.save(state, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(UserError, match="field device must be one of"):
        start_search(config(table_path), tmp_path / "r", resume=True)


def test_resume_may_change_the_device_and_workers_but_not_the_precision(tmp_path, table_path):
    start_search(config(table_path), tmp_path / "r").run(until=1)
    assert start_search(config(table_path, workers=1), tmp_path / "r", resume=True).epoch == 1
    with pytest.raises(UserError, match=r"amp: 'off' vs 'bf16'"):
        start_search(config(table_path, amp="bf16"), tmp_path / "r", resume=True)


def test_eta_weighs_warmup_and_search_epochs(tmp_path, table_path):
    run = start_search(config(table_path, epochs=10, warmup_epochs=4), tmp_path / "r")
    run.epoch, run.costs = 2, {"warmup": [10.0, 10.0], "search": []}
    assert run.eta_s() == pytest.approx(2 * 10 + 6 * 20)  # a search epoch estimated as two warm-up epochs
    run.epoch, run.costs = 5, {"warmup": [10.0] * 4, "search": [30.0]}
    assert run.eta_s() == pytest.approx(5 * 30)


@pytest.mark.slow
def test_a_dead_rank_ends_the_others_with_one_line(tmp_path, table_path):
    """Rank 1 joins the group and dies; rank 0 (the CLI) fails its next collective and says so
    in one line, well within the process-group timeout."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000), "WORLD_SIZE": "2"}
    dying = subprocess.Popen([sys.executable, "-c", "import datetime, os, torch.distributed as d; "
                              "d.init_process_group('gloo', timeout=datetime.timedelta(seconds=30)); os._exit(3)"],
                             env={**env, "RANK": "1", "LOCAL_RANK": "1"})
    result = subprocess.run([sys.executable, "-m", "nas2deploy", "search", "--lut", table_path, "--data", "synthetic:200",
                             "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "16", "--max-batches", "2",
                             "--dist-timeout", "30", "--out", str(tmp_path / "run")],
                            env={**env, "RANK": "0", "LOCAL_RANK": "0"}, capture_output=True, text=True, timeout=120)
    dying.wait(timeout=60)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines()  # less a synthetic table's warning and the progress
             if not line.startswith(("warning: ", "computing on "))]
    assert len(lines) == 1 and lines[0].startswith("Error: rank 0 of 2: the process group failed"), result.stderr
    assert "--resume" in lines[0] and ".cc:" not in lines[0]


# -- on a GPU (benchmarks/gpu_check.sh) -------------------------------------------------------------
ON_DEVICES = [("cpu", "off"), pytest.param("cuda", "bf16", marks=CUDA_MARKS)]


@pytest.mark.parametrize("device, amp", ON_DEVICES)
@pytest.mark.parametrize("space", ["densenas", "dcnas"])
def test_a_device_search_resumes_and_its_checkpoint_opens_on_the_cpu(tmp_path, space, device, amp):
    """Also run on the CPU, so that the GPU variant's set-up cannot rot unseen where CI has no GPU."""
    shape = SPACE if space == "densenas" else SEG_SPACE
    table = tmp_path / "t.json"
    synthetic_table(make_space(space, shape)).save(table)  # the table carries the space's shape
    data = "synthetic:200" if space == "densenas" else "seg-synthetic:40"
    fields = dict(table=str(table), space=space, data=data, epochs=2, warmup_epochs=1, batch_size=8, max_batches=2,
                  seed=1, device=device, amp=amp)
    run = start_search(SearchConfig(**fields), tmp_path / "run")
    run.run(until=1)
    assert next(run.net.parameters()).device.type == device
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert (log["gpu_memory_mb"] > 0) if device == "cuda" else "gpu_memory_mb" not in log or not log["gpu_memory_mb"]
    resumed = start_search(SearchConfig(**fields), tmp_path / "run", resume=True)
    resumed.run()
    opened = open_run(tmp_path / "run")  # as derive and report read it, on the CPU
    assert not next(opened.space_search.net.parameters()).is_cuda

    def body(arch):
        return {k: v for k, v in arch.to_dict().items() if k not in ("name", "meta")}

    assert body(opened.derive("again")) == body(resumed.derive())


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("space", ["densenas", "dcnas"])
def test_two_ranks_on_one_gpu_match_one_process_within_tolerance(tmp_path, space):
    """Two ranks (gloo over CUDA tensors, sharing the GPU) against one process running the same
    global batch as two micro-batches: the ranks agree exactly, the single process's weights to
    ``TOLERANCE`` (cuDNN's kernels and reduction orders differ between processes; the
    architecture parameters are not compared: see tests/support/ranks.py)."""
    from support.ranks import TOLERANCE, compare, describe

    d = compare(space, "cuda", tmp_path)
    print(describe(space, "cuda", d))
    assert d["ranks"] == 0, "ranks diverged"
    assert d["vs_single"] < TOLERANCE and d["moved"] > 0.02
