import time

import pytest

from nas2deploy.backends.timing import TimingSettings, TimingStats, measure


def test_stats_from_known_samples():
    s = TimingStats.from_samples([float(x) for x in range(1, 101)])
    assert s.median_ms == 50.5 and s.mean_ms == 50.5
    assert s.p90_ms == 90 and s.p99_ms == 99 and s.min_ms == 1 and s.runs == 100
    assert s.cov == pytest.approx(s.std_ms / 50.5)
    assert TimingStats.from_dict(s.to_dict()).runs == 100


class SleepTarget:
    """A real timeable whose runs take about 1 ms of wall time."""

    def __init__(self):
        self.calls = 0

    def time_runs(self, n):
        out = []
        for _ in range(n):
            self.calls += 1
            t0 = time.perf_counter()
            time.sleep(0.001)
            out.append((time.perf_counter() - t0) * 1e3)
        return out


def test_warmup_by_count_and_time_then_runs_and_time_floor():
    target = SleepTarget()
    m = measure(target, TimingSettings(warmup_runs=3, warmup_ms=15, min_runs=10, min_time_ms=40))
    assert m.warmup_s >= 0.015
    assert m.stats.runs >= 10 and m.stats.mean_ms * m.stats.runs >= 40
    assert target.calls >= m.stats.runs + 3
    assert m.stats.median_ms >= 1.0


def test_no_warmup_when_asked():
    target = SleepTarget()
    m = measure(target, TimingSettings(min_runs=5, min_time_ms=0), warmup=False)
    assert target.calls == 5 and m.stats.runs == 5


def test_each_device_has_its_harness_and_runs_override_it():
    from nas2deploy.backends.timing import CPU, GPU

    cpu, gpu = TimingSettings.for_device("cpu"), TimingSettings.for_device("cuda")
    assert cpu == CPU and cpu.target_ci > 0 and gpu == GPU and TimingSettings().target_ci == 0  # the fixed harness
    assert TimingSettings.for_device("cpu", 50).min_runs == 50 and TimingSettings.for_device("cpu", 50).target_ci == cpu.target_ci
    assert TimingSettings.for_device("cuda", 200).min_runs == 200
    assert TimingSettings.for_device("cuda", 200).warmup_runs == gpu.warmup_runs


def test_the_median_interval_is_robust_to_outliers_where_the_cov_is_not():
    from nas2deploy.backends.timing import median_ci_rel

    xs = [float(x) for x in range(1, 101)]
    # order statistics 40 and 60 of 100 (n/2 -+ 1.96 sqrt(n)/2), over the median 50.5
    assert median_ci_rel(xs) == pytest.approx((60 - 40) / 2 / 50.5)
    assert median_ci_rel([1.0] * 5) is None
    steady = [1.0] * 97 + [40.0, 60.0, 90.0]  # three interrupts
    s = TimingStats.from_samples(steady)
    assert s.cov > 3 and s.ci_rel == 0 and s.mad_ms == 0 and s.median_ms == 1.0


class Scripted:
    """Injected run times: ``values`` repeated in order (no clock)."""

    def __init__(self, values):
        self.values, self.calls = values, 0

    def time_runs(self, n):
        out = [self.values[(self.calls + i) % len(self.values)] for i in range(n)]
        self.calls += n
        return out


ADAPTIVE = TimingSettings(warmup_runs=0, warmup_ms=0, min_runs=20, min_time_ms=0, retries=1, target_ci=0.01,
                          max_runs=400, max_time_ms=1e6)


def test_adaptive_runs_stop_at_the_target_interval_or_the_cap():
    steady = measure(Scripted([1.0, 1.001, 0.999, 1.002]), ADAPTIVE)
    assert steady.stats.runs == 20 and not ADAPTIVE.unstable(steady.stats)  # the floor already pins it down
    wide = measure(Scripted([1.0, 1.5]), ADAPTIVE)  # two modes: the median never settles
    assert wide.stats.runs == 400 and ADAPTIVE.unstable(wide.stats)
    capped = measure(Scripted([1.0, 1.5]), TimingSettings(**{**ADAPTIVE.to_dict(), "max_time_ms": 100.0}))
    assert 100 <= sum([1.0, 1.5] * (capped.stats.runs // 2)) < 100 + 1.5 * 200  # stops once 100 ms are spent
    fixed = TimingSettings(warmup_runs=0, warmup_ms=0, min_runs=20, min_time_ms=0, max_cov=0.1)
    assert measure(Scripted([1.0, 1.5]), fixed).stats.runs == 20 and fixed.unstable(measure(Scripted([1.0, 1.5]), fixed).stats)


def test_tables_written_before_the_adaptive_harness_still_load():
    from nas2deploy.latency.table import LatencyTable

    old = LatencyTable.load("latency_tables/densenas32_small_c10_ort_cpu_fp32_b1.json")  # version 1
    timing = TimingSettings(**old.meta["timing"])
    assert timing.target_ci == 0 and timing.max_runs == 0
    entry = next(iter(old.entries.values()))
    assert entry.stats.ci_rel is None and entry.stats.mad_ms is None
