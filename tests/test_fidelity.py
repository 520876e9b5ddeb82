import random

import pytest
from conftest import FAST

from nas2deploy.backends import BackendSettings
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import ProfileStats, measure_spec, profile_space
from nas2deploy.latency.table import LatencyTable
from nas2deploy.latency.calibration import Sample, cross_validated, fit_calibration
from nas2deploy.latency.fidelity import kendall_tau, validate_table


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(4 / 5)  # tau-b: ties in both
    assert kendall_tau([2.0, 2.0, 2.0], [1, 2, 3]) == 0.0  # a constant side ranks nothing


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
    assert stored.validation["samples"] == 6
    # whether six real timings earn a fit depends on this machine's noise; what is stored must match
    if report["calibration"] is None:
        assert stored.calibration is None and report["calibration_refused"]
    else:
        assert stored.calibration is not None and stored.calibration.samples == 6


class _NoDrift:
    """Stands in for the reference-op tracker so that the injected measurements alone decide."""

    def __init__(self, *args):
        pass

    def update(self):
        return 1.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.mark.parametrize("outlier", [1.0, 3.0])
def test_validate_stores_a_calibration_only_where_it_beats_the_raw_sum(tmp_path, monkeypatch, small_space, outlier):
    """Measurements equal to the op sum except one network at ``outlier`` x: with none, the fit
    (scale 1) is exact and stored; with one, every fold that trains on it mispredicts the exact
    networks, so out of sample the fit errs more than the raw sum and is refused."""
    import nas2deploy.latency.fidelity as validate
    from conftest import synthetic_table

    table = synthetic_table(small_space)
    table.meta["measurement"] = BackendSettings().describe()
    table.save(tmp_path / "t.json")
    calls = []

    def measured(settings, arch, timing, source=""):
        calls.append(arch)
        return table.predict(arch).raw_ms * (outlier if len(calls) == 1 else 1.0)

    monkeypatch.setattr(validate, "DriftTracker", _NoDrift)
    monkeypatch.setattr(validate, "measure_network", measured)
    report = validate_table(LatencyTable.load(tmp_path / "t.json"), small_space.sample_arch, samples=12, timing=FAST)
    again = LatencyTable.load(tmp_path / "t.json")
    if outlier == 1.0:
        assert report["calibration"]["scale"] == pytest.approx(1.0) and again.calibration is not None
        assert report["calibrated"]["mape"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert report["calibration"] is None and again.calibration is None
        assert "errs more than the raw op sum" in report["calibration_refused"]
        assert again.predict(small_space.sample_arch(random.Random(0))).calibrated_ms is None


def test_validate_refuses_a_table_from_another_device(tmp_path, small_space):
    table, _ = profile_space(small_space, BackendSettings(), tmp_path / "t.json", FAST, shard=(0, 50))
    table.meta["measurement"]["device_name"] = "Jetson Orin"
    with pytest.raises(UserError, match="was measured on 'Jetson Orin'"):
        validate_table(table, small_space.sample_arch, samples=3, timing=FAST)


def test_validate_names_missing_ops(tmp_path, small_space):
    table, _ = profile_space(small_space, BackendSettings(), tmp_path / "t.json", FAST, shard=(0, 50))
    with pytest.raises(UserError, match="lacks .* op\\(s\\) .* needed by the sampled architectures"):
        validate_table(table, small_space.sample_arch, samples=3, timing=FAST)


def test_validate_measures_the_shipped_networks_the_table_covers(tmp_path):
    """DenseNAS-A/B/C are in the 224 space (MobileNetV2 is not: its stem and head differ); they are
    measured whole and reported apart, with the same drift and calibration as the sample."""
    from conftest import synthetic_table

    from nas2deploy.latency.fidelity import shipped_networks
    from nas2deploy.spaces import make_space

    space = make_space("densenas", {})
    table = synthetic_table(space)
    assert [a.name for a in shipped_networks(table)] == ["densenas-a", "densenas-b", "densenas-c"]
    settings = BackendSettings()
    table.meta["measurement"] = settings.describe()  # this machine's: validate measures here
    ref = space.reference_op()
    measured, _, _ = measure_spec(ref, settings, FAST, ProfileStats())
    table.reference = {"key": ref.key, "spec": ref.to_dict(), "stats": measured.stats.to_dict()}
    table.save(tmp_path / "t.json")
    report = validate_table(LatencyTable.load(tmp_path / "t.json"), space.sample_arch, samples=4, timing=FAST)
    rows = {row["name"]: row for row in report["shipped"]}
    assert set(rows) == {"densenas-a", "densenas-b", "densenas-c"}
    for row in rows.values():
        assert row["measured_ms"] > 0
        assert row["raw_error_pct"] == pytest.approx(100 * (row["raw_ms"] / row["measured_ms"] - 1), abs=0.01)
        assert ("calibrated_ms" in row) == (report["calibration"] is not None)
    assert LatencyTable.load(tmp_path / "t.json").validation["shipped"] == report["shipped"]


def test_a_richer_calibration_is_kept_only_where_it_predicts_held_out_networks_better():
    rng = random.Random(1)
    proportional = [Sample(raw, rng.randint(10, 40), 1.0, 1.2 * raw * rng.uniform(0.97, 1.03))
                    for raw in (rng.uniform(2, 20) for _ in range(30))]
    cal = fit_calibration(proportional)
    assert cal.offset_ms == 0 and cal.per_op_ms == 0 and cal.scale == pytest.approx(1.2, rel=0.02)


def test_across_range_spreads_the_networks_over_the_latency_range():
    from conftest import synthetic_table

    from nas2deploy.latency.fidelity import across_range
    from nas2deploy.spaces import make_space

    space = make_space("densenas", {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1})
    table = synthetic_table(space)
    rng = random.Random(3)
    uniform = [table.predict(space.sample_arch(rng)).raw_ms for _ in range(20)]
    spread_archs = across_range(space.sample_arch, table, 20, random.Random(3))
    spread = sorted(table.predict(a).raw_ms for a in spread_archs)
    assert len(set(spread_archs)) == 20
    assert spread[0] <= min(uniform) and spread[-1] >= max(uniform)  # the pool starts with the same 20 draws
    gaps = [b - a for a, b in zip(spread, spread[1:])]
    assert max(gaps) < (spread[-1] - spread[0]) / 5  # no stretch of the range left empty
