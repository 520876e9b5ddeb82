"""The latency lookup table: versioned JSON keyed by OpSpec key.

Layout (documented for users in ``latency_tables/README.md``)::

    {"format": "nas2deploy.latency_table", "version": 2,
     "meta": {"measurement": {...backend, device, precision, batch, threads, versions...},
              "timing": {...harness settings...}, "space": {"name", "config"}, "shard", "created",
              "profile": {..., "drift": [[ops done, reference / its first], ...]}},
     "reference": {"key", "spec", "stats", "end_stats"},
     "entries": {KEY: {"spec": {...}, "stats": {median_ms, mean_ms, p90_ms, ..., mad_ms, ci_rel}, "attempts",
                       "launch": {host_ms, kernel_ms} (eager CUDA tables only)}},

Version 2 added the adaptive harness settings (``target_ci``, ``max_runs``, ``max_time_ms``),
each op's ``mad_ms`` and ``ci_rel`` and the profile's drift series; version 1 tables load, read
as measured with the fixed run count and without those figures.
     "calibration": null | {"scale", "offset_ms", "per_op_ms", "samples"},
     "validation": null | {...the last `lut validate` report...}}

Prediction of an architecture is the sum of its deployed ops' median latencies (skip layers are
free), optionally scaled by a drift factor (the reference op re-measured now over its value in
the table) and passed through the fitted calibration.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from nas2deploy.nets import Network
from nas2deploy.backends.settings import identity_fields, measurement_rules
from nas2deploy.backends.timing import LaunchCosts, TimingSettings, TimingStats
from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_json, check_format, read_json
from nas2deploy.ops import OpSpec
from nas2deploy.validate import MAX_OP_MS, Field

TABLE_FORMAT = "nas2deploy.latency_table"
TABLE_VERSION = 2
#: The versions this release reads.
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Entry:
    spec: OpSpec
    stats: TimingStats
    attempts: int = 1
    #: Eager CUDA tables: the op's host dispatch and kernel times (``LaunchCosts``), which say
    #: whether an eager network is bound by the host (``summary.table_warnings``); None elsewhere.
    launch: LaunchCosts | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"spec": self.spec.to_dict(), "stats": self.stats.to_dict(), "attempts": self.attempts}
        return {**d, "launch": self.launch.to_dict()} if self.launch else d

    @staticmethod
    def from_field(f: Field) -> Entry:
        attempts, launch = f.get("attempts"), f.get("launch")
        return Entry(OpSpec.from_field(f["spec"]), TimingStats.from_field(f["stats"]), attempts.int(1, 100) if attempts else 1,
                     LaunchCosts.from_field(launch) if launch else None)


@dataclass(frozen=True)
class Calibration:
    """measured ~= drift * (scale * raw + offset_ms + per_op_ms * n_ops).

    ``scale`` absorbs a global bias of isolated-op timing, ``offset_ms`` the per-network cost
    (input/output handling), ``per_op_ms`` what each op boundary costs or saves when ops run
    together (layout reorders paid once instead of per op, fusion across ops; cf. nn-Meter).
    """

    scale: float
    offset_ms: float
    per_op_ms: float
    samples: int

    def apply(self, raw_ms: float, n_ops: int) -> float:
        return self.scale * raw_ms + self.offset_ms + self.per_op_ms * n_ops

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset_ms": self.offset_ms, "per_op_ms": self.per_op_ms, "samples": self.samples}

    @staticmethod
    def from_field(f: Field) -> Calibration:
        """A stored calibration: finite terms and a positive scale, so that a slower op never
        predicts a faster network (the costs it gives each op are checked against the table in
        ``LatencyTable.load``)."""
        return Calibration(f["scale"].number(0, 100, lo_open=True), f["offset_ms"].number(-MAX_OP_MS, MAX_OP_MS),
                           f["per_op_ms"].number(-MAX_OP_MS, MAX_OP_MS), f["samples"].int(1, 10**6))

    def op_cost(self, latency_ms: float) -> float:
        """What one deployed op adds to a calibrated prediction."""
        return self.scale * latency_ms + self.per_op_ms


@dataclass(frozen=True)
class Prediction:
    raw_ms: float
    calibrated_ms: float | None
    n_ops: int
    drift: float

    @property
    def best_ms(self) -> float:
        return self.calibrated_ms if self.calibrated_ms is not None else self.raw_ms


class LatencyTable:
    def __init__(
        self,
        meta: dict[str, Any],
        entries: dict[str, Entry],
        reference: dict[str, Any] | None = None,
        calibration: Calibration | None = None,
        validation: dict[str, Any] | None = None,
        path: str | os.PathLike[str] | None = None,
    ):
        self.meta = meta
        self.entries = entries
        self.reference = reference
        self.calibration = calibration
        self.validation = validation
        self.path = Path(path) if path else None
        #: What to tell a user whose network needs ops this table lacks (the spaces layer, which
        #: knows the space the table was profiled for, sets it: ``spaces.load_table``).
        self.advice: Callable[[list[str]], str] | None = None

    # -- identity ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.path) if self.path else "<table>"

    @property
    def measurement(self) -> dict[str, Any]:
        return dict(self.meta.get("measurement", {}))

    def differing_fields(self, other: LatencyTable) -> list[str]:
        """The measurement fields (``backends.settings.identity_fields``) on which the two differ."""
        mine, theirs = self.measurement, other.measurement
        return [f for f in identity_fields() if mine.get(f) != theirs.get(f)]

    def describe_fields(self, fields: Iterable[str], other: LatencyTable) -> str:
        mine, theirs = {**self.meta, **self.measurement}, {**other.meta, **other.measurement}
        return "; ".join(f"{f}: {mine.get(f)!r} vs {theirs.get(f)!r}" for f in fields)

    @property
    def reference_ms(self) -> float | None:
        return float(self.reference["stats"]["median_ms"]) if self.reference else None

    # -- lookup and prediction ---------------------------------------------------------------
    def missing(self, specs: Iterable[OpSpec]) -> list[str]:
        return sorted({s.key for s in specs if not s.is_free and s.key not in self.entries})

    def require(self, specs: Iterable[OpSpec], what: str = "the architecture") -> None:
        """Raise one line listing missing keys (first few, count) and what to do about them."""
        missing = self.missing(specs)
        if missing:
            advice = self.advice(missing) if self.advice else "profile a table that covers them (nas2deploy profile)"
            raise UserError(f"latency table {self.name} lacks {listing(missing)} needed by {what}; {advice}")

    def latency(self, spec: OpSpec) -> float:
        if spec.is_free:
            return 0.0
        entry = self.entries.get(spec.key)
        if entry is None:
            self.require([spec], "this lookup")
        assert entry is not None
        return entry.stats.median_ms

    def cost(self, spec: OpSpec) -> float:
        """What ``spec`` adds to this table's best prediction: its latency, passed through the
        calibration's scale and per-op term when the table is calibrated (the calibration is
        affine in the ops, so summing costs plus ``offset_ms`` gives the calibrated prediction).
        Latency models of the search are built from these costs."""
        if spec.is_free:
            return 0.0
        lat = self.latency(spec)
        return self.calibration.op_cost(lat) if self.calibration else lat

    @property
    def offset_ms(self) -> float:
        """The per-network term of the calibration (0 without one)."""
        return self.calibration.offset_ms if self.calibration else 0.0

    def predict(self, arch: Network, drift: float = 1.0) -> Prediction:
        specs = arch.op_specs()
        self.require(specs, f"arch {arch.name or '<unnamed>'}")
        raw = sum(self.latency(s) for s in specs)
        cal = self.calibration.apply(raw, len(specs)) * drift if self.calibration else None
        if cal is not None and not cal > 0:
            raise UserError(
                f"latency table {self.name}: its calibration predicts {cal:.4g} ms for arch {arch.name or '<unnamed>'} "
                f"(offset_ms {self.offset_ms:g} outweighs the ops): an unphysical fit; run `nas2deploy lut validate` again"
            )
        return Prediction(raw * drift, cal, len(specs), drift)

    def drift(self, reference_now_ms: float) -> float:
        """How much slower (>1) this machine runs now than when the table was measured."""
        if not self.reference_ms:
            return 1.0
        return reference_now_ms / self.reference_ms

    # -- io ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "meta": self.meta,
            "reference": self.reference,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "validation": self.validation,
            "entries": {k: self.entries[k].to_dict() for k in sorted(self.entries)},
        }

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        target = Path(path) if path else self.path
        if target is None:
            raise ValueError("no path to save the table to")
        atomic_write_json(target, self.to_dict())
        self.path = target

    @staticmethod
    def load(path: str | os.PathLike[str]) -> LatencyTable:
        """Read and validate a table: every entry, the reference op, the calibration and the
        metadata later steps rely on; one line naming the field on any violation."""
        doc = Field(check_format(read_json(path, "latency table"), path, TABLE_FORMAT, READABLE_VERSIONS, "latency table"),
                    f"latency table {path}", TABLE_FIX)
        meta = read_meta(doc["meta"])
        entries = {}
        for key, raw in doc["entries"].items(max_len=MAX_ENTRIES):
            entry = Entry.from_field(raw)
            if entry.spec.key != key:
                raise raw.error(f"describes op {entry.spec.key!r}, not its key; the file was edited or is corrupt", shown=False)
            entries[key] = entry
        if not entries:
            raise doc["entries"].error("holds no op: a table prices at least the ops of one network", shown=False)
        reference = read_reference(doc["reference"]) if doc.get("reference") else None
        calibration = Calibration.from_field(doc["calibration"]) if doc.get("calibration") else None
        if calibration is not None:
            for key, entry in entries.items():
                if calibration.op_cost(entry.stats.median_ms) <= 0:
                    raise doc["calibration"].error(
                        f"gives op {key} a cost of {calibration.op_cost(entry.stats.median_ms):.4g} ms (scale x median + "
                        "per_op_ms <= 0), an unphysical fit", shown=False, fix="run `nas2deploy lut validate` again")
        validation = read_validation(doc["validation"]) if doc.get("validation") else None
        return LatencyTable(meta, entries, reference, calibration, validation, path)


#: What to do about a table that fails validation.
TABLE_FIX = "profile the table again (nas2deploy profile) or restore the file"
MAX_ENTRIES = 100_000


def read_meta(meta: Field) -> dict[str, Any]:
    """The table's metadata; the fields that later steps read are typed, the rest pass through."""
    out = dict(meta.object())
    measurement = meta["measurement"]
    required = ("backend", "device", "precision", "batch", "threads")  # what the table measured
    for key in required:
        measurement[key]
    rules = measurement_rules()
    out["measurement"] = {k: rules[k](v) if k in rules and (k in required or v.value is not None) else v.value
                          for k, v in measurement.items()}
    timing = meta.get("timing")
    if timing is not None:
        out["timing"] = TimingSettings.from_field(timing).to_dict()
    space = meta.get("space")
    if space is not None:
        config = space.get("config")
        out["space"] = {"name": space["name"].str(), "config": config.object() if config else {}}
    drift = meta["profile"].get("drift") if meta.get("profile") is not None else None
    if drift is not None:  # (ops done, reference median / its first) during the profile
        series = [point.list(min_len=2, max_len=2) for point in drift.list(max_len=10_000)]
        out["profile"] = {**out["profile"], "drift": [[n.int(0, 10**7), ratio.number(0, 1e6, lo_open=True)] for n, ratio in series]}
    return out


def read_reference(f: Field) -> dict[str, Any]:
    """The reference op: its spec and statistics (and those measured at the end of the profile)."""
    spec = OpSpec.from_field(f["spec"])
    if f["key"].str() != spec.key:
        raise f["key"].error(f"must be the key of the reference spec ({spec.key})")
    ref: dict[str, Any] = {"key": spec.key, "spec": spec.to_dict(), "stats": TimingStats.from_field(f["stats"]).to_dict()}
    if f.get("end_stats") is not None:
        ref["end_stats"] = TimingStats.from_field(f["end_stats"]).to_dict()
    return ref


def read_validation(f: Field) -> dict[str, Any]:
    """The last ``lut validate`` report: the figures ``lut show`` prints are typed."""
    report = dict(f.object())
    f["samples"].int(1, 10**6)
    for kind in ("raw", "calibrated"):
        for key in ("mape", "within_10pct", "kendall_tau"):  # what `lut show` prints
            f[kind][key]
        for key, value in f[kind].items():
            value.number(-1e6, 1e6)  # percentages, rank correlations
    for record in (f["records"].list(max_len=100_000) if f.has("records") else []):  # the networks measured whole
        record["raw_ms"].number(0, 1e9, lo_open=True)
        record["measured_ms"].number(0, 1e9, lo_open=True)
        record["n_ops"].int(0, 10**6)
        if record.get("drift") is not None:
            record["drift"].number(0, 1e6, lo_open=True)
    for row in (f["shipped"].list(max_len=1000) if f.has("shipped") else []):  # shipped networks measured whole
        row["name"].str()
        for key, value in row.items():
            if key != "name":
                value.number(-1e6, 1e6)
    return report


def listing(keys: list[str]) -> str:
    """'N op(s) (first, second, third, ...)': the count and the first few keys."""
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{len(keys)} op(s) ({shown})"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def merge_tables(tables: list[LatencyTable]) -> LatencyTable:
    """Union of shard tables measured under the same settings.

    Each input's entries are rescaled by the ratio of the first table's reference-op latency to
    its own, so shards measured at different moments (or on twin machines) share one time base;
    every time of an entry scales alike (its statistics and its launch costs), its attempts stay.
    """
    if not tables:
        raise UserError("lut merge needs at least one input table")
    base = tables[0]
    entries: dict[str, Entry] = {}
    for t in tables:
        diff = base.differing_fields(t) + [k for k in ("space", "timing") if base.meta.get(k) != t.meta.get(k)]
        if diff:
            raise UserError(
                f"cannot merge {t.name} into {base.name}: measured under different settings ({base.describe_fields(diff, t)})"
            )
        factor = (base.reference_ms / t.reference_ms) if base.reference_ms and t.reference_ms else 1.0
        for key, e in t.entries.items():
            entries.setdefault(key, Entry(e.spec, e.stats.scaled(factor), e.attempts,
                                          e.launch.scaled(factor) if e.launch else None))
    meta = dict(base.meta)
    meta.update(shard=None, merged_from=[t.name for t in tables], created=now_iso())
    return LatencyTable(meta, entries, base.reference)
