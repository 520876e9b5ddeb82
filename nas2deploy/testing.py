"""What tests of nas2deploy, and of the spaces and backends written for it, share: synthetic
latency tables that price every op of a space without a device."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from nas2deploy.backends.timing import TimingStats
from nas2deploy.latency.table import Calibration, Entry, LatencyTable

if TYPE_CHECKING:
    from nas2deploy.spaces.base import SearchSpace


def random_table(space: SearchSpace, seed: int, calibration: Calibration | None = None, levels: int = 0) -> LatencyTable:
    """A table of distinct random latencies (0.05-1 ms, four decimals) for every op of ``space``,
    so that every choice matters to a search or a derivation; with ``levels``, each latency is
    one of that many multiples of 0.1 ms instead (a coarse, rounded table: many networks tie).
    It records no device name: no measurement can be compared with it, so closed-loop and
    prediction checks refuse it."""
    rng = random.Random(seed)
    entries = {}
    for spec in space.op_specs():
        ms = round(rng.randint(1, levels) / 10, 1) if levels else round(rng.uniform(0.05, 1.0), 4)
        entries[spec.key] = Entry(spec, TimingStats(ms, ms, ms, ms, ms, 0.0, 0.0, 100))
    measurement = {"backend": "onnxruntime", "device": "cpu", "precision": "fp32", "batch": 1, "threads": 1}
    meta = {"measurement": measurement, "space": {"name": space.name, "config": space.config_dict()}}
    return LatencyTable(meta, entries, None, calibration)
