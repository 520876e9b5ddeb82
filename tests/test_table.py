import json
import random
from pathlib import Path

import pytest

from nas2deploy.backends.timing import TimingStats
from nas2deploy.errors import UserError
from nas2deploy.latency.table import Calibration, Entry, LatencyTable, merge_tables


def _stats(ms):
    return TimingStats(ms, ms, ms, ms, ms, 0.0, 0.0, 100)


def _meta(space, **measurement):
    m = {"backend": "onnxruntime", "device": "cpu", "device_name": "cpu X", "precision": "fp32", "batch": 1, "threads": 1}
    m.update(measurement)
    return {"measurement": m, "space": {"name": "densenas", "config": space.config_dict()}}


def _table(space, ms_of=lambda i: round(0.1 + i * 0.01, 4), ref=1.0, **measurement):
    entries = {s.key: Entry(s, _stats(ms_of(i))) for i, s in enumerate(space.op_specs())}
    ref_spec = space.reference_op()
    reference = {"key": ref_spec.key, "spec": ref_spec.to_dict(), "stats": _stats(ref).to_dict()}
    return LatencyTable(_meta(space, **measurement), entries, reference)


def test_predict_sums_the_deployed_ops(small_space):
    table = _table(small_space)
    arch = small_space.sample_arch(random.Random(3))
    expected = sum(table.entries[s.key].stats.median_ms for s in arch.op_specs())
    pred = table.predict(arch)
    assert pred.raw_ms == pytest.approx(expected) and pred.calibrated_ms is None
    assert pred.n_ops == len(arch.op_specs())
    table.calibration = Calibration(scale=0.9, offset_ms=0.5, per_op_ms=-0.01, samples=10)
    pred = table.predict(arch, drift=1.1)
    assert pred.raw_ms == pytest.approx(expected * 1.1)
    assert pred.calibrated_ms == pytest.approx(1.1 * (0.9 * expected + 0.5 - 0.01 * pred.n_ops))


def test_round_trip(tmp_path, small_space):
    table = _table(small_space)
    table.calibration = Calibration(1.0, 0.1, 0.0, 5)
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json")
    assert again.entries == table.entries and again.calibration == table.calibration
    assert again.reference_ms == 1.0 and again.drift(1.2) == pytest.approx(1.2)


def test_missing_entries_name_keys_count_and_the_fix(small_space, tmp_path):
    from nas2deploy.spaces.tables import load_table

    table = _table(small_space)
    arch = small_space.sample_arch(random.Random(0))
    for spec in arch.op_specs()[:4]:
        table.entries.pop(spec.key, None)
    table.save(tmp_path / "t.json")
    with pytest.raises(UserError) as err:  # a table loaded through the spaces layer names the command
        load_table(tmp_path / "t.json").predict(arch)
    msg = str(err.value)
    assert "lacks 4 op(s)" in msg and ", ..." in msg
    assert "nas2deploy profile --space densenas --backend onnxruntime" in msg and "--input-size 32" in msg
    assert "--width-mult 0.5 --num-classes 10 --max-stack-layers 1" in msg


@pytest.mark.parametrize("content, message", [
    ('{"format": "nas2deploy.latency_table", "version": 1, "meta": {}, "entr', "not valid JSON"),
    ('{"format": "nas2deploy.latency_table", "version": 7}', "format version 7 is not supported"),
    ('[1, 2]', "not a nas2deploy.latency_table file"),
    ('{"format": "nas2deploy.latency_table", "version": 1, "meta": {"measurement": {"backend": "onnxruntime", "device": "cpu", '
     '"precision": "fp32", "batch": 1, "threads": 1}}, "entries": {"x": {"spec": {"type": "?"}}}}',
     r"field entries\.x\.spec\.type must be a known op type"),
])
def test_corrupt_tables_are_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        LatencyTable.load(path)
    assert str(path) in str(err.value)


def test_edited_key_is_detected(tmp_path, small_space):
    table = _table(small_space)
    table.save(tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    key = next(iter(doc["entries"]))
    doc["entries"]["mbconv_k3_e6_s1_i8x2x2_o8"] = doc["entries"].pop(key)
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="describes op"):
        LatencyTable.load(tmp_path / "t.json")


def test_merge_rescales_shards_to_one_reference(small_space):
    specs = small_space.op_specs()
    a = _table(small_space, ref=1.0)
    b = _table(small_space, ms_of=lambda i: 2 * (0.1 + i * 0.01), ref=2.0)  # measured while 2x slower
    a.entries = {s.key: a.entries[s.key] for s in specs[0::2]}
    b.entries = {s.key: b.entries[s.key] for s in specs[1::2]}
    merged = merge_tables([a, b])
    assert len(merged.entries) == len(specs)
    assert merged.entries[specs[1].key].stats.median_ms == pytest.approx(0.1 + 0.01)


def test_merge_keeps_each_entrys_launch_costs_and_attempts_on_the_common_time_base(small_space):
    from nas2deploy.backends.timing import LaunchCosts

    specs = small_space.op_specs()
    a = _table(small_space, ref=1.0, backend="torch", device="cuda", cuda_graph=False)
    b = _table(small_space, ref=2.0, backend="torch", device="cuda", cuda_graph=False)
    a.entries = {s.key: Entry(s, a.entries[s.key].stats, 1, LaunchCosts(0.2, 0.05)) for s in specs[0::2]}
    b.entries = {s.key: Entry(s, b.entries[s.key].stats, 3, LaunchCosts(0.4, 0.1)) for s in specs[1::2]}
    merged = merge_tables([a, b])
    assert merged.entries[specs[0].key].launch == LaunchCosts(0.2, 0.05)
    assert merged.entries[specs[1].key].launch == LaunchCosts(0.2, 0.05)  # b ran 2x slower: halved
    assert merged.entries[specs[1].key].attempts == 3


def test_the_suggested_profile_command_makes_a_table_that_matches_field_for_field(small_space):
    """Every recorded option of the table's backend that differs from that backend's default
    reaches the command, so the table it makes merges with the old one."""
    from nas2deploy.backends import BackendSettings
    from nas2deploy.backends.settings import identity_fields
    from nas2deploy.cli import cli
    from nas2deploy.spaces.tables import profile_command

    cases = [dict(backend="onnxruntime", device="cuda", options={"ort_provider": "tensorrt", "ort_graph_level": "basic"}),
             dict(backend="torch", device="cuda", options={"cuda_graph": True}),
             dict(backend="tensorrt", device="cuda", precision="fp16", options={"workspace_mb": 64, "cuda_graph": True}),
             dict(backend="onnxruntime", threads=2, batch=4, options={})]
    for case in cases:
        settings = BackendSettings(**case)  # type: ignore[arg-type]
        recorded = {k: getattr(settings, k) for k in ("backend", "device", "precision", "batch", "threads")}
        table = _table(small_space, **recorded, **settings.impl.recorded(settings))
        command = profile_command(table, small_space, "new.json").split()[2:]
        ctx = cli.get_command(None, "profile").make_context("profile", command)  # type: ignore[union-attr]
        p = ctx.params
        options = {o.name: p[o.name] for o in settings.impl.options if o.command_line}
        again = BackendSettings(p["backend"], p["device"], p["precision"], p["batch"], p["threads"], options)
        made = {**{k: getattr(again, k) for k in recorded}, **again.impl.recorded(again)}
        assert all(made.get(f) == table.measurement.get(f) for f in identity_fields() if f in made), (command, made)
        assert made == {**recorded, **settings.impl.recorded(settings)}


def test_merge_refuses_different_settings_naming_them(small_space):
    a = _table(small_space)
    b = _table(small_space, precision="fp16", batch=8)
    with pytest.raises(UserError, match=r"different settings \(precision: 'fp32' vs 'fp16'; batch: 1 vs 8\)"):
        merge_tables([a, b])


def test_merge_refuses_tables_of_different_spaces(small_space):
    from nas2deploy.spaces import make_space

    a = _table(small_space)
    b = _table(make_space("densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}))
    with pytest.raises(UserError, match="different settings \\(space:"):
        merge_tables([a, b])


def test_table_warnings_name_noise_weak_calibrations_and_extrapolation(small_space):
    import dataclasses

    from nas2deploy.latency.summary import extrapolation_warning, summarize, table_warnings

    table = _table(small_space)
    assert table_warnings(table) == []
    table.entries = {k: dataclasses.replace(e, stats=dataclasses.replace(e.stats, cov=6.68)) for k, e in table.entries.items()}
    table.calibration = Calibration(1.1, 0.0, 0.0, 6)
    fit = {"mape": 30.0, "within_10pct": 20.0, "kendall_tau": 0.2}
    table.validation = {"samples": 6, "raw": fit, "calibrated": fit, "records": [{"raw_ms": 1.0}, {"raw_ms": 3.0}]}
    lines = table_warnings(table)
    assert "median CoV of 668% (above 10%)" in lines[0] and "profile again on a quiet machine" in lines[0]
    assert "calibrated on 6 networks only" in lines[1] and "Kendall tau 0.20 < 0.7" in lines[2]
    assert summarize(table)["warnings"] == lines
    assert extrapolation_warning(table, 2.0) is None and extrapolation_warning(table, 0.6) is None
    assert "lies far outside the 1.000-3.000 ms" in extrapolation_warning(table, 7.0)
    table.calibration = None
    table.validation = {"calibration_refused": "its scale is -1.9"}
    assert any("no calibration stored, the fit was refused: its scale is -1.9" in line for line in table_warnings(table))


def test_hand_edited_validation_records_and_calibration_are_caught(tmp_path):
    """A validation record that is not a number is refused when the table loads (before any
    command writes), and a calibration that contradicts the networks it was fitted on is shown
    with a warning naming the contradiction."""
    import json

    from click.testing import CliRunner

    from nas2deploy.cli import cli

    shipped = json.loads((Path(__file__).parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json").read_text())
    edited = json.loads(json.dumps(shipped))
    edited["validation"]["records"][0]["raw_ms"] = "fast"
    (tmp_path / "fast.json").write_text(json.dumps(edited))
    result = CliRunner().invoke(cli, ["lut", "show", str(tmp_path / "fast.json")])
    assert result.exit_code == 1 and "field validation.records[0].raw_ms must be a number, got 'fast'" in result.output
    edited = json.loads(json.dumps(shipped))
    edited["calibration"]["offset_ms"] = -1000.0
    (tmp_path / "offset.json").write_text(json.dumps(edited))
    result = CliRunner().invoke(cli, ["lut", "show", str(tmp_path / "offset.json")])
    assert result.exit_code == 0 and "the calibration does not describe its own networks" in result.output
    result = CliRunner().invoke(cli, ["lut", "show", str(Path(__file__).parents[1] / "latency_tables" /
                                                       "densenas32_small_c10_ort_cpu_fp32_b1.json")])
    assert result.exit_code == 0 and "does not describe its own networks" not in result.output


def test_lut_show_says_what_its_cov_is_and_how_well_the_medians_are_known():
    from click.testing import CliRunner

    from nas2deploy.cli import cli

    shipped = Path(__file__).parents[1] / "latency_tables" / "densenas32_small_c10_ort_cpu_int8_b1.json"
    result = CliRunner().invoke(cli, ["lut", "show", str(shipped)])
    entries = next(line for line in result.output.splitlines() if line.strip().startswith("entries"))
    assert "the spread of an op's timed runs; its median is known to +-" in entries and "95% interval" in entries
