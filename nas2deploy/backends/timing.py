"""One timing harness for every backend, in the manner of trtexec.

Warm-up runs until both a count and a time are reached (caches, allocators, clocks settle).
Timed runs continue until both ``min_runs`` and ``min_time_ms`` are reached, so tiny ops are
timed over enough wall time to average out timer granularity. Every backend reports the same
statistics; CUDA backends time with CUDA events on their stream, CPU backends with
``perf_counter_ns`` around each run.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Protocol

from nas2deploy.validate import MAX_OP_MS, Field


@dataclass(frozen=True)
class TimingSettings:
    warmup_runs: int = 10
    warmup_ms: float = 20.0
    min_runs: int = 100
    min_time_ms: float = 50.0
    #: Measurements whose coefficient of variation exceeds this are taken again (profile), where
    #: no ``target_ci`` judges them by their centre instead.
    max_cov: float = 0.10
    retries: int = 2
    #: Adaptive run count (0: off, the fixed count above): past the floor of ``min_runs`` and
    #: ``min_time_ms``, keep timing until the median's 95% confidence interval is within
    #: ``target_ci`` of it (half-width over median), or ``max_runs`` / ``max_time_ms`` are
    #: spent; a measurement that ends short of the target is unstable and taken again.
    target_ci: float = 0.0
    max_runs: int = 0
    max_time_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def for_device(device: str, min_runs: int | None = None) -> TimingSettings:
        """The harness for a device, ``min_runs`` overriding its run count. A CPU's (``CPU``)
        times until the median's 95% interval is within 0.9% of it: a few interrupted runs make
        the runs' CoV useless there while the median stands still. A GPU's (``GPU``) is light: its
        ops take tens of microseconds, and past 30 runs what is left is the difference between two
        builds of one op, not the run count. ``benchmarks/README.md`` gives the measurements
        behind both (``benchmarks/profile_speed.py``, ``benchmarks/gpu_latency.py``)."""
        base = GPU if device == "cuda" else CPU
        return base if min_runs is None else replace(base, min_runs=min_runs)

    def spread(self, stats: TimingStats) -> float:
        """What a measurement is judged by: its median's interval (adaptive), or the CoV of its
        runs (fixed count)."""
        if self.target_ci > 0:
            return stats.ci_rel if stats.ci_rel is not None else float("inf")
        return stats.cov

    def unstable(self, stats: TimingStats) -> bool:
        """Whether a measurement must be taken again: its centre is not pinned down to
        ``target_ci`` (adaptive), or its runs vary beyond ``max_cov`` (fixed count)."""
        return self.spread(stats) > (self.target_ci if self.target_ci > 0 else self.max_cov)

    @staticmethod
    def from_field(f: Field) -> TimingSettings:
        """The harness settings a table records: every field, typed and bounded. Tables written
        before the adaptive run count lack its fields: they were measured with it off."""
        rules = {"warmup_runs": lambda v: v.int(0, 10**6), "warmup_ms": lambda v: v.number(0, 1e7),
                 "min_runs": lambda v: v.int(1, 10**7), "min_time_ms": lambda v: v.number(0, 1e7),
                 "max_cov": lambda v: v.number(0, 1e3, lo_open=True), "retries": lambda v: v.int(0, 100)}
        optional = {"target_ci": lambda v: v.number(0, 1), "max_runs": lambda v: v.int(0, 10**7),
                    "max_time_ms": lambda v: v.number(0, 1e8)}
        for key, value in f.items():
            if key not in rules and key not in optional:
                raise value.error(f"is not a timing setting ({', '.join([*rules, *optional])})", shown=False)
        values = {key: rule(f[key]) for key, rule in rules.items()}
        values.update({key: rule(f[key]) for key, rule in optional.items() if f.has(key)})
        return TimingSettings(**values)


#: The harness for CUDA devices (``TimingSettings.for_device`` says how it was chosen).
GPU = TimingSettings(warmup_runs=3, warmup_ms=0.0, min_runs=30, min_time_ms=1.0, max_cov=0.10, retries=1)
#: The harness for CPUs (``TimingSettings.for_device`` says how it was chosen).
CPU = TimingSettings(warmup_runs=5, warmup_ms=3.0, min_runs=20, min_time_ms=10.0, max_cov=0.10, retries=1,
                     target_ci=0.009, max_runs=400, max_time_ms=200.0)


@dataclass(frozen=True)
class TimingStats:
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    std_ms: float
    cov: float
    runs: int
    #: The centre's spread, robust to the rare outliers (an interrupt, another process) that
    #: dominate ``std_ms``: the median absolute deviation, and the half-width of the median's
    #: 95% confidence interval over the median (None in tables measured before they were kept).
    mad_ms: float | None = None
    ci_rel: float | None = None

    @staticmethod
    def from_samples(samples_ms: list[float]) -> TimingStats:
        if not samples_ms:
            raise ValueError("no timing samples")
        xs = sorted(samples_ms)
        mean = statistics.fmean(xs)
        std = statistics.pstdev(xs) if len(xs) > 1 else 0.0
        median = statistics.median(xs)
        ci = median_ci_rel(xs)
        # Nanosecond resolution is plenty, and rounding here makes a saved table load back equal.
        return TimingStats(
            median_ms=round(median, 6),
            mean_ms=round(mean, 6),
            p90_ms=round(_percentile(xs, 0.90), 6),
            p99_ms=round(_percentile(xs, 0.99), 6),
            min_ms=round(xs[0], 6),
            std_ms=round(std, 6),
            cov=round(std / mean if mean > 0 else 0.0, 6),
            runs=len(xs),
            mad_ms=round(statistics.median(abs(x - median) for x in xs), 6),
            ci_rel=None if ci is None else round(ci, 6),
        )

    def throughput_per_s(self, batch: int) -> float:
        """Inferences a second, sustained: from the mean time, which counts the slow runs a
        stream of inferences pays (1 / median would leave them out and overstate it)."""
        return batch * 1000 / self.mean_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float) -> TimingStats:
        """The same runs on a time base ``factor`` times as long (shards of one table joined by
        their reference op): every time scales, the relative spreads and the run count do not."""
        times = ("median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms", "std_ms", "mad_ms")
        return replace(self, **{k: getattr(self, k) * factor for k in times if getattr(self, k) is not None})

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TimingStats:
        return TimingStats.from_field(Field(d, "timing statistics", "measure again"))

    @staticmethod
    def from_field(f: Field) -> TimingStats:
        """Statistics read from a file: every time finite and positive (at most ``MAX_OP_MS``),
        ordered min <= median <= p90 <= p99, a spread >= 0, at least one run."""
        times = {k: f[k].number(0, MAX_OP_MS, lo_open=True) for k in ("median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms")}
        stats = TimingStats(**times, std_ms=f["std_ms"].number(0, MAX_OP_MS), cov=f["cov"].number(0, 1e3),
                            runs=f["runs"].int(1, 10**9),
                            mad_ms=f["mad_ms"].number(0, MAX_OP_MS) if f.get("mad_ms") is not None else None,
                            ci_rel=f["ci_rel"].number(0, 1e3) if f.get("ci_rel") is not None else None)
        if not stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms:
            raise f.error("must have min_ms <= median_ms <= p90_ms <= p99_ms", shown=False)
        return stats


def median_ci_rel(sorted_xs: list[float]) -> float | None:
    """Half the width of the distribution-free 95% confidence interval of the median (order
    statistics n/2 -+ 1.96 sqrt(n)/2), over the median; None below 6 samples, where the
    interval is the whole range. It needs no assumption about the shape of the run times, and a
    few slow outliers (the usual noise) widen it only as far as they move the middle runs."""
    n = len(sorted_xs)
    if n < 6:
        return None
    half = 1.96 * math.sqrt(n) / 2
    low, high = max(0, math.floor(n / 2 - half) - 1), min(n - 1, math.ceil(n / 2 + half) - 1)
    median = statistics.median(sorted_xs)
    return (sorted_xs[high] - sorted_xs[low]) / 2 / median if median > 0 else None


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile (trtexec's convention): the smallest sample >= q of the data."""
    rank = max(1, math.ceil(q * len(sorted_xs)))
    return sorted_xs[rank - 1]


class Timeable(Protocol):
    def time_runs(self, n: int) -> list[float]:
        """Run ``n`` times on prepared inputs and return each run's latency in milliseconds."""
        ...


@dataclass
class Measurement:
    stats: TimingStats
    warmup_s: float
    timed_s: float


def measure(target: Timeable, settings: TimingSettings, warmup: bool = True) -> Measurement:
    """Warm up (unless the target just ran), then time until both the run count and the time
    floor are reached."""
    start = time.perf_counter()
    done = 0
    while warmup and (done < settings.warmup_runs or (time.perf_counter() - start) * 1e3 < settings.warmup_ms):
        target.time_runs(1)
        done += 1
    warm_end = time.perf_counter()
    samples: list[float] = []
    while len(samples) < settings.min_runs or sum(samples) < settings.min_time_ms:
        missing = settings.min_runs - len(samples)
        if missing <= 0:  # time floor not reached yet: extend by the runs it still needs
            per_run = max(sum(samples) / len(samples), 1e-3)
            missing = max(1, math.ceil((settings.min_time_ms - sum(samples)) / per_run))
        samples += target.time_runs(missing)
    while settings.target_ci > 0 and len(samples) < settings.max_runs and sum(samples) < settings.max_time_ms:
        ci = median_ci_rel(sorted(samples))
        if ci is not None and ci <= settings.target_ci:
            break
        samples += target.time_runs(min(max(10, len(samples) // 2), settings.max_runs - len(samples)))
    end = time.perf_counter()
    return Measurement(TimingStats.from_samples(samples), warm_end - start, end - warm_end)


def cpu_time_runs(run: Callable[[], object], n: int, between: Callable[[], object] | None = None) -> list[float]:
    """Wall-clock each call; the run must be synchronous (CPU work, or a runtime that blocks),
    or ``between`` (untimed, after each run) must wait for what it queued: a GPU run's host
    dispatch time is timed with the stream drained between runs, so the queue never fills and
    makes the host wait."""
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        run()
        out.append((clock() - t0) / 1e6)
        if between is not None:
            between()
    return out


def cuda_time_runs(run: Callable[[], object], n: int, stream: Any) -> list[float]:
    """Time each launch with a pair of CUDA events on ``stream`` (a torch.cuda.Stream).

    Launches are queued back to back and synchronised once at the end, so the host never
    stalls the GPU between runs (trtexec's default).
    """
    import torch

    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    with torch.cuda.stream(stream):
        for begin, end in events:
            begin.record(stream)
            run()
            end.record(stream)
    stream.synchronize()
    return [begin.elapsed_time(end) for begin, end in events]


@dataclass(frozen=True)
class LaunchCosts:
    """What one eager run of a GPU op costs on each side of the launch queue: ``host_ms``, the
    host's time to dispatch its kernels (Python, the dispatcher, the launches), and
    ``kernel_ms``, the GPU's time to run them (a CUDA-graph replay, so no launch gaps). An
    eager network overlaps the two (the host dispatches the next op while the GPU runs this
    one). Where the host's side is the larger, an eager network runs at the host's speed
    (``latency.summary.table_warnings`` says so)."""

    host_ms: float
    kernel_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def scaled(self, factor: float) -> LaunchCosts:
        return LaunchCosts(self.host_ms * factor, self.kernel_ms * factor)

    @staticmethod
    def from_field(f: Field) -> LaunchCosts:
        return LaunchCosts(f["host_ms"].number(0, MAX_OP_MS, lo_open=True), f["kernel_ms"].number(0, MAX_OP_MS, lo_open=True))


def time_on(run: Callable[[], object], n: int, stream: Any | None) -> list[float]:
    """Each of ``n`` runs' latency: CUDA events on ``stream`` where the runner has one (a GPU),
    else the wall clock around each (synchronous) run."""
    return cuda_time_runs(run, n, stream) if stream is not None else cpu_time_runs(run, n)
