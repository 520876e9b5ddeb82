import json
from pathlib import Path

import pytest

from nas2deploy.nets import Arch, load_arch, save_arch
from nas2deploy.errors import UserError


def _doc(**over):
    doc = {
        "format": "nas2deploy.arch", "version": 1, "name": "t", "input_size": 32, "num_classes": 10,
        "stem": {"conv": 16, "out": 16, "stride": 1},
        "blocks": [{"out": 24, "stride": 2, "head": "k3e6", "stack": ["skip", "k5e3"]}],
        "tail": 64,
    }
    doc.update(over)
    return doc


def test_round_trip_and_skip_layers_vanish(tmp_path):
    arch = Arch.from_dict(_doc())
    save_arch(arch, tmp_path / "a.json")
    again = load_arch(tmp_path / "a.json")
    assert again == arch
    keys = [s.key for s in arch.op_specs()]
    assert "skip_i24x16x16" not in keys and len(keys) == 6
    assert len(arch.op_specs(include_free=True)) == 7
    assert len(arch.build()) == 6


@pytest.mark.parametrize("change, message", [
    ({"blocks": [{"out": 24, "stride": 3, "head": "k3e6"}]}, r"field blocks\[0\]\.stride must be one of 1, 2, got 3"),
    ({"blocks": [{"out": 24, "stride": 2, "head": "k4e6x"}]}, r"blocks\[0\]\.head: unknown op 'k4e6x'"),
    ({"blocks": [{"out": 24, "stride": 2, "head": "skip"}]}, r"blocks\[0\]\.head: op 'skip' needs stride 1"),
    ({"tail": -1}, r"field tail must be an integer in \[1, 16384\], got -1"),
    ({"stem": {"conv": 16, "out": 16}}, "field stem.stride is missing"),
])
def test_invalid_archs_name_the_field(change, message):
    with pytest.raises(UserError, match=message):
        Arch.from_dict(_doc(**change))


def test_corrupt_and_wrong_version_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nas2deploy.arch", "vers')
    with pytest.raises(UserError, match="not valid JSON.*corrupt or truncated"):
        load_arch(bad)
    bad.write_text(json.dumps(_doc(version=9)))
    with pytest.raises(UserError, match="format version 9 is not supported"):
        load_arch(bad)


@pytest.mark.parametrize("name, params, macs_m", [
    ("mobilenetv2", 3_504_872, 300.8),  # torchvision's MobileNetV2-1.0, parameter for parameter
    ("densenas-a", None, 251.3),
    ("densenas-b", None, 313.6),
    ("densenas-c", None, 360.8),
])
def test_shipped_architectures_match_published_counts(name, params, macs_m):
    from nas2deploy.latency.network_summary import arch_summary

    summary = arch_summary(load_arch(name))
    assert summary["params"] == sum(p.numel() for p in load_arch(name).build().parameters())
    if params is not None:
        assert summary["params"] == params
    assert summary["macs"] / 1e6 == pytest.approx(macs_m, abs=0.05)


def test_arch_info_cli_predicts_with_a_table():
    from click.testing import CliRunner

    from nas2deploy.cli import cli
    from nas2deploy.latency.table import LatencyTable

    table_path = str(Path(__file__).parents[1] / "latency_tables" / "densenas224_ort_cpu_fp32_b1.json")
    result = CliRunner().invoke(cli, ["arch", "info", "densenas-a", "--lut", table_path, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    expected = LatencyTable.load(table_path).predict(load_arch("densenas-a"))
    assert info["latency"]["raw_ms"] == pytest.approx(expected.raw_ms)
    assert sum(r["latency_ms"] for r in info["rows"]) == pytest.approx(expected.raw_ms)
    result = CliRunner().invoke(cli, ["arch", "info", "mobilenetv2", "--lut", table_path])
    assert result.exit_code == 1 and "outside the table's search space" in result.output
