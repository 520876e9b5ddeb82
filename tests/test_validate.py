import random

import pytest
from conftest import FAST

from nas2deploy.backends import BackendSettings
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.calibration import Sample, cross_validated, fit_calibration
from nas2deploy.latency.validate import kendall_tau, validate_table


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)


def test_calibration_recovers_a_known_relation():
    rng = random.Random(0)
    samples = []
    for _ in range(30):
        raw, n = rng.uniform(2, 20), rng.randint(10, 40)
        samples.append(Sample(raw, n, drift=1.0, measured_ms=0.9 * raw + 0.3 - 0.02 * n))
    cal = fit_calibration(samples)
    assert (cal.scale, cal.offset_ms, cal.per_op_ms) == pytest.approx((0.9, 0.3, -0.02), abs=1e-6)
    assert cross_validated(samples) == pytest.approx([s.measured_ms for s in samples], rel=1e-6)


def test_validate_measures_networks_and_stores_the_calibration(tmp_path, small_space):
    out = tmp_path / "t.json"
    table, _ = profile_space(small_space, BackendSettings(), out, FAST)
    report = validate_table(table, small_space.sample_arch, samples=6, timing=FAST)
    for kind in ("raw", "calibrated"):
        assert set(report[kind]) >= {"mape", "within_5pct", "within_10pct", "kendall_tau", "pearson_r"}
        assert 0 <= report[kind]["within_10pct"] <= 100
    assert len(report["records"]) == 6 and all(r["measured_ms"] > 0 for r in report["records"])
    stored = LatencyTable.load(out)
    assert stored.calibration is not None and stored.calibration.samples == 6
    assert stored.validation["samples"] == 6


def test_validate_refuses_a_table_from_another_device(tmp_path, small_space):
    table, _ = profile_space(small_space, BackendSettings(), tmp_path / "t.json", FAST, shard=(0, 50))
    table.meta["measurement"]["device_name"] = "Jetson Orin"
    with pytest.raises(UserError, match="was measured on 'Jetson Orin'"):
        validate_table(table, small_space.sample_arch, samples=3, timing=FAST)


def test_validate_names_missing_ops(tmp_path, small_space):
    table, _ = profile_space(small_space, BackendSettings(), tmp_path / "t.json", FAST, shard=(0, 50))
    with pytest.raises(UserError, match="lacks .* op\\(s\\) .* needed by the sampled architectures"):
        validate_table(table, small_space.sample_arch, samples=3, timing=FAST)
