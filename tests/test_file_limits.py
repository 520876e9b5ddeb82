"""The machine's limits on what is read and written: devices, FIFOs and oversized files refused
before they are read, hard-linked journals refused, names too long for an atomic write refused
before anything is written, and outputs created with the user's umask."""

import os
import stat

import pytest
from click.testing import CliRunner

from nas2deploy.cli import cli
from nas2deploy.errors import UserError
from nas2deploy.fileio import append_line, atomic_write_json, read_capped, read_json
from nas2deploy.spaces import make_space
from nas2deploy.testing import random_table


@pytest.mark.parametrize("kind", ["device", "fifo", "link to a device"])
def test_a_file_that_is_not_a_regular_file_is_refused_before_it_is_read(tmp_path, kind):
    path = {"device": "/dev/zero", "fifo": str(tmp_path / "t.json"), "link to a device": str(tmp_path / "l.json")}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # reading would wait for a writer forever
    if kind == "link to a device":
        os.symlink("/dev/zero", path)  # st_size 0, endless content
    result = CliRunner().invoke(cli, ["lut", "show", path])
    assert result.exit_code == 1 and "is not a regular file (a device, FIFO or socket)" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_file_over_the_cap_is_refused_whatever_its_size_says(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 1001)
    assert read_capped(path, "table", 1001) == b" " * 1001
    with pytest.raises(UserError, match="more than 1000 bytes"):
        read_capped(path, "table", 1000)
    with pytest.raises(UserError, match="is a folder"):
        read_json(tmp_path, "table")


def test_an_onnx_model_that_is_a_fifo_is_refused_by_bench(tmp_path):
    os.mkfifo(tmp_path / "model.onnx")
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "model.onnx")])
    assert result.exit_code == 1 and "is not a regular file" in result.output, result.output


def test_a_journal_with_another_name_elsewhere_is_never_appended_to(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("unchanged\n")
    os.link(victim, tmp_path / "log.jsonl")
    with pytest.raises(UserError, match="has 2 names"):
        append_line(tmp_path / "log.jsonl", "{}")
    assert victim.read_text() == "unchanged\n"


def test_a_name_too_long_for_the_temporary_suffix_is_refused_before_writing(tmp_path):
    name = "a" * 245 + ".json"  # legal, but not with ".", "." + 8 characters + ".tmp" around it
    with pytest.raises(UserError, match="choose a shorter name"):
        atomic_write_json(tmp_path / name, {})
    assert list(tmp_path.iterdir()) == []
    table = tmp_path.parent / f"{tmp_path.name}-table.json"
    random_table(make_space("densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 5}), 0).save(table)
    result = CliRunner().invoke(cli, ["lut", "merge", str(tmp_path / name), str(table), str(table)])
    assert result.exit_code == 1 and "choose a shorter name" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_take_the_users_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == mode


@pytest.mark.parametrize("path, value, field", [
    (("summary", "unit"), 12, "summary.unit"),
    (("passed",), "yes", "passed"),
    (("weights",), -3, "weights"),
    (("budget_ms",), -1.0, "budget_ms"),
])
def test_report_refuses_a_hand_edited_export_report_before_writing(tmp_path, path, value, field):
    """``report`` renders report.md from report.json: a field of the wrong kind fails in one line
    naming it, and report.md is left as it was."""
    import json
    import shutil
    from pathlib import Path

    folder = tmp_path / "export"
    shutil.copytree(Path(__file__).parent / "fixtures" / "release-0.1.0" / "export-densenas", folder)
    doc = json.loads((folder / "report.json").read_text())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (folder / "report.json").write_text(json.dumps(doc))
    before = (folder / "report.md").read_bytes() if (folder / "report.md").exists() else None
    result = CliRunner().invoke(cli, ["report", str(folder)])
    assert result.exit_code == 1 and field in result.output and "Traceback" not in result.output, result.output
    assert ((folder / "report.md").read_bytes() if (folder / "report.md").exists() else None) == before


def runaway_model(path):
    """An ONNX model whose one run would never end: a Loop of 10^12 iterations around an Add."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)], "runaway",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("M", TensorProto.INT64, [], [10**12]), helper.make_tensor("cond", TensorProto.BOOL, [], [True])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_model_whose_run_never_ends_is_stopped_at_the_limit(tmp_path):
    model = runaway_model(tmp_path / "loop.onnx")
    result = CliRunner().invoke(cli, ["bench", str(model), "--ort-run-limit-s", "1"])
    assert result.exit_code == 1, result.output
    assert "one run took longer than 1 s" in result.output and "--ort-run-limit-s" in result.output
    assert "Traceback" not in result.output


def test_the_reference_evaluator_is_stopped_at_its_limit(tmp_path, monkeypatch):
    from nas2deploy.backends import onnx_reference

    monkeypatch.setattr(onnx_reference, "RUN_LIMIT_S", 1)
    model = runaway_model(tmp_path / "loop.onnx")
    result = CliRunner().invoke(cli, ["bench", str(model), "--backend", "onnx-reference"])
    assert result.exit_code == 1 and "one run took longer than 1 s" in result.output, result.output


@pytest.mark.parametrize("command", ["derive", "train", "profile"])
def test_an_output_name_too_long_for_its_suffixes_is_refused_by_its_length_before_any_work(tmp_path, command):
    out = tmp_path / ("n" * 246 + ".json")
    args = {"derive": ["derive", str(tmp_path / "no-run"), "--out", str(out)],
            "train": ["train", "--arch", "densenas-a", "--out", str(out)],
            "profile": ["profile", "--input-size", "32", "--out", str(out)]}[command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "a name of 251 bytes" in result.output and "choose a shorter name" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_table_without_ops_is_refused(tmp_path):
    import json

    table = tmp_path / "t.json"
    random_table(make_space("densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 5}), 0).save(table)
    doc = json.loads(table.read_text())
    doc["entries"] = {}
    table.write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["lut", "show", str(table)])
    assert result.exit_code == 1 and "field entries holds no op" in result.output, result.output
