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
    cpu, gpu = TimingSettings.for_device("cpu"), TimingSettings.for_device("cuda")
    assert cpu == TimingSettings()
    assert gpu.min_runs < cpu.min_runs and gpu.retries < cpu.retries and gpu.min_time_ms < cpu.min_time_ms
    assert TimingSettings.for_device("cuda", 200).min_runs == 200
    assert TimingSettings.for_device("cuda", 200).warmup_runs == gpu.warmup_runs
