"""Measure every op of a search space into a LatencyTable, resumable after a kill.

Each measured op is appended to a journal (``OUT.journal.jsonl``, one fsync'ed JSON line per op)
before the next one starts; the finished table is written atomically and the journal removed.
A restarted profile with the same settings reads the journal and measures only what is missing,
so a ``kill -9`` loses at most the op that was being timed and nothing is measured twice. The
journal's first line records the settings; a resume under different settings is refused.
One process profiles a table at a time: a second one on the same ``out`` is refused at once,
naming the first (``OUT.lock``), so the table on disk is always the one that process reports.

``shard=(i, n)`` measures every n-th op starting at i (ops sorted by key), so n processes or
machines can split a space; ``merge_tables`` joins the shards.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from nas2deploy.backends import Artifact, BackendSettings, open_runner
from nas2deploy.backends.timing import LaunchCosts, Measurement, TimingSettings, measure
from nas2deploy.errors import UserError
from nas2deploy.fileio import MAX_JSON_BYTES, append_line, check_name, claim_file, exclusive, lock_path, read_json_lines
from nas2deploy.latency.prefetch import Prefetcher, module_of
from nas2deploy.latency.table import Entry, LatencyTable, now_iso, read_reference
from nas2deploy.ops import OpSpec
from nas2deploy.validate import Field

Progress = Callable[[int, int, str], None]


class Profilable(Protocol):
    """What profiling needs of a search space (``nas2deploy.spaces.SearchSpace`` is one)."""

    name: ClassVar[str]

    def config_dict(self) -> dict[str, Any]: ...
    def op_specs(self) -> list[OpSpec]: ...
    def reference_op(self) -> OpSpec: ...


@dataclass
class ProfileStats:
    """Where the wall time went: the harness's timed runs versus everything around them."""

    ops: int = 0
    resumed: int = 0
    remeasured: int = 0
    wall_s: float = 0.0
    load_s: float = 0.0  # export + session / engine build
    warmup_s: float = 0.0
    timed_s: float = 0.0

    @property
    def timed_fraction(self) -> float:
        return self.timed_s / self.wall_s if self.wall_s else 0.0


def journal_path(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".journal.jsonl")


def measure_spec(
    spec: OpSpec, settings: BackendSettings, timing: TimingSettings, stats: ProfileStats, artifact: Artifact | None = None,
    launch: bool = False,
) -> tuple[Measurement, int, LaunchCosts | None]:
    """Measure one op; take it again (up to ``timing.retries`` times) while it is unstable
    (``TimingSettings.unstable``: its centre not pinned down, or with the fixed run count its CoV
    too high), keeping the steadiest measurement. ``artifact``: the op already prepared
    (``prefetch.Prefetcher``). ``launch``: also the runner's ``launch_costs`` (eager CUDA)."""
    t0 = time.perf_counter()
    runner = open_runner(settings, artifact or module_of(spec))
    stats.load_s += time.perf_counter() - t0
    with runner:
        best = measure(runner, timing)
        attempts = 1
        stats.warmup_s += best.warmup_s
        stats.timed_s += best.timed_s
        while timing.unstable(best.stats) and attempts <= timing.retries:
            again = measure(runner, timing, warmup=False)  # still warm
            attempts += 1
            stats.remeasured += 1
            stats.warmup_s += again.warmup_s
            stats.timed_s += again.timed_s
            if timing.spread(again.stats) < timing.spread(best.stats):
                best = again
        costs = runner.launch_costs(timing.min_runs) if launch else None
    return best, attempts, costs


#: How many times the reference op is re-timed during a profile (``DriftMonitor``).
DRIFT_CHECKS = 10


class DriftMonitor:
    """The reference op re-timed every ``every`` ops on a runner kept open: ``series`` holds
    (ops done, median / the profile's first reference median). A machine that changes speed
    while it profiles (frequency, heat, another process) shows here; ``table_warnings`` flags a
    table whose reference moved more than ``DRIFT_LIMIT``. The series restarts with a resumed
    profile. Validation and export already correct for drift between profiling and their own
    measurements (``DriftTracker``); drift inside a profile is flagged, not corrected."""

    def __init__(self, settings: BackendSettings, timing: TimingSettings, spec: OpSpec, first_ms: float, every: int):
        self.settings, self.timing, self.spec, self.first_ms, self.every = settings, timing, spec, first_ms, every
        self.series: list[tuple[int, float]] = []
        self.runner: Any = None

    def after_op(self, done: int) -> None:
        if done % self.every:
            return
        if self.runner is None:
            self.runner = open_runner(self.settings, module_of(self.spec))
        self.series.append((done, measure(self.runner, self.timing).stats.median_ms / self.first_ms))

    def __enter__(self) -> DriftMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            self.runner.close()


def _settings_header(space: Profilable, settings: BackendSettings, timing: TimingSettings, shard: tuple[int, int]) -> dict[str, Any]:
    return {
        "measurement": settings.describe(),
        "timing": timing.to_dict(),
        "space": {"name": space.name, "config": space.config_dict()},
        "shard": f"{shard[0]}/{shard[1]}" if shard[1] > 1 else None,
    }


def _read_journal(path: Path, header: dict[str, Any]) -> tuple[dict[str, Entry], dict[str, Any] | None]:
    """Entries and reference already measured; a torn last line (killed mid-write) is cut off."""
    entries: dict[str, Entry] = {}
    reference = None
    records = read_json_lines(path, "profile journal", "delete the journal to start afresh", MAX_JSON_BYTES)
    for n, record in enumerate(records):
        where = Field(record, f"profile journal {path} (line {n + 1})", "delete the journal to start afresh")
        if n == 0:
            old = where["header"].object()
            diff = _differences(old, {k: header.get(k) for k in ("measurement", "timing", "space", "shard")})
            if diff:
                raise UserError(
                    f"profile journal {path} was written under different settings ({'; '.join(diff)}, the journal's "
                    "first); rerun with the original options or delete the journal"
                )
        elif where.has("reference"):
            reference = read_reference(where["reference"])
        else:
            entry = Entry.from_field(where)
            entries[entry.spec.key] = entry
    return entries, reference


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``field: old vs new`` for every field of ``new`` that differs, nested fields by their path."""
    out = []
    for key, value in new.items():
        before = old.get(key)
        if isinstance(before, dict) and isinstance(value, dict):
            out += _differences(before, value, f"{prefix}{key}.")
        elif before != value:
            out.append(f"{prefix}{key}: {before!r} vs {value!r}")
    return out


def profile_space(
    space: Profilable,
    settings: BackendSettings,
    out: str | os.PathLike[str],
    timing: TimingSettings | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: Progress | None = None,
    force: bool = False,
    overlap: bool = True,
) -> tuple[LatencyTable, ProfileStats]:
    """Profile ``space``'s ops (this shard of them) into the table at ``out``: a table there is
    replaced only with ``force``, unless a journal says this profile was interrupted (resume).
    ``overlap``: the next ops are exported in a helper process while one is timed (``prefetch``)."""
    timing = timing or TimingSettings.for_device(settings.device)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise UserError(f"--shard {index}/{count}: expected i/n with 0 <= i < n")
    settings.check_available()
    start = time.perf_counter()
    specs = space.op_specs()[index::count]
    header = _settings_header(space, settings, timing, shard)
    journal = journal_path(check_name(out))  # a name with room for the journal's and the writer's suffixes
    stats = ProfileStats(ops=len(specs))
    with exclusive(lock_path(out), f"latency table {out}"):  # one profiler per table, before anything is checked
        claim_file(out, force or journal.exists())  # before the work, not after it
        entries: dict[str, Entry] = {}
        reference = None
        if journal.exists():
            entries, reference = _read_journal(journal, header)
            stats.resumed = len(entries)
        else:
            append_line(journal, json.dumps({"header": header}))
        ref_spec = space.reference_op()
        if reference is None:
            m, _, _ = measure_spec(ref_spec, settings, timing, stats)
            reference = {"key": ref_spec.key, "spec": ref_spec.to_dict(), "stats": m.stats.to_dict()}
            append_line(journal, json.dumps({"reference": reference}))
        todo = [s for s in specs if s.key not in entries]
        done = len(specs) - len(todo)
        drift = DriftMonitor(settings, timing, ref_spec, reference["stats"]["median_ms"], max(1, len(todo) // DRIFT_CHECKS))
        with drift, Prefetcher(settings, todo, overlap) as prefetch:
            for spec in todo:
                t0 = time.perf_counter()
                artifact = prefetch.artifact(spec)  # waiting for the helper is loading too
                stats.load_s += time.perf_counter() - t0
                m, attempts, launch = measure_spec(spec, settings, timing, stats, artifact, launch=True)
                entry = Entry(spec, m.stats, attempts, launch)
                append_line(journal, json.dumps(entry.to_dict()))
                entries[spec.key] = entry
                done += 1
                drift.after_op(done)
                if progress:
                    progress(done, len(specs), spec.key)
        # The reference op once more at the end: how far the machine drifted during the profile.
        end, _, _ = measure_spec(ref_spec, settings, timing, stats)
        reference = {**reference, "end_stats": end.stats.to_dict()}
        stats.wall_s = time.perf_counter() - start
        meta = {**header, "created": now_iso(), "profile": {
            "ops": stats.ops, "resumed": stats.resumed, "remeasured": stats.remeasured,
            "wall_s": round(stats.wall_s, 2), "timed_fraction": round(stats.timed_fraction, 3),
            "drift": [[n, round(ratio, 4)] for n, ratio in drift.series],
        }}
        table = LatencyTable(meta, {s.key: entries[s.key] for s in specs}, reference)
        table.save(out)
        journal.unlink()
    return table, stats
