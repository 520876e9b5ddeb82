"""No option is silently ignored: every combination in which an option would have no effect is
refused before any work, with one line naming the option and what to do."""

import pytest
from click.testing import CliRunner
from conftest import saved_table

from nas2deploy.cli import cli

TINY = {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return saved_table(tmp_path_factory, "densenas", TINY)


#: (command line, with {table} and {tmp} filled in; what the refusal must say)
UNUSED = [
    (["export", "--arch", "densenas-a", "--precision", "fp16", "--out", "{tmp}/e"],
     "--precision fp16 shapes only what builds at a precision (--backend tensorrt); --backend onnxruntime runs the fp32 graph"),
    (["export", "--arch", "densenas-a", "--backend", "torch", "--backend", "onnxruntime", "--workspace-mb", "64", "--out", "{tmp}/e"],
     "--workspace-mb applies to --backend tensorrt only; --backend torch --backend onnxruntime would ignore it"),
    (["export", "--arch", "densenas-a", "--data", "synthetic", "--images", "{tmp}", "--out", "{tmp}/e"],
     "--images and --data both name the accuracy check's inputs"),
    (["profile", "--backend", "torch", "--ort-provider", "cpu", "--out", "{tmp}/t.json"],
     "--ort-provider applies to --backend onnxruntime only"),
    (["profile", "--workspace-mb", "64", "--out", "{tmp}/t.json"], "--workspace-mb applies to --backend tensorrt only"),
    (["profile", "--cuda-graph", "--out", "{tmp}/t.json"], "--cuda-graph applies to --backend torch or tensorrt only"),
    (["profile", "--backend", "torch", "--cuda-graph", "--out", "{tmp}/t.json"], "--cuda-graph captures GPU launches: it needs --device cuda"),
    (["search", "--lut", "{table}", "--epochs", "2", "--warmup-epochs", "2", "--out", "{tmp}/s"],
     "every epoch would be weight warm-up and no architecture would be searched"),
    (["derive", "{tmp}/no-run", "--fill", "0.5", "--out", "{tmp}/a.json"],
     "--fill sets how much of --budget-ms the network uses"),
    (["train", "--arch", "densenas-a", "--data-classes", "5", "--out", "{tmp}/w.pt"],
     "--data-classes 5: only an ImageFolder tree has classes to choose"),
    (["train", "--arch", "densenas-a", "--crop", "64x64", "--out", "{tmp}/w.pt"],
     "--crop 64x64: only Cityscapes, VOC and CamVid folders are cropped"),
    (["export", "--arch", "densenas-a", "--backend", "aoti", "--dynamic-batch", "--out", "{tmp}/e"],
     "--backend aoti builds for one batch: leave out --dynamic-batch"),
]


@pytest.mark.parametrize("args, says", UNUSED, ids=[" ".join(a[:1] + [x for x in a if x.startswith("--")][:3]) for a, _ in UNUSED])
def test_an_option_without_effect_is_refused_before_any_work(tmp_path, table_path, args, says):
    argv = [a.format(table=table_path, tmp=tmp_path) for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1 and says in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
