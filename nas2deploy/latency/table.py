"""The latency lookup table: versioned JSON keyed by OpSpec key.

Layout (documented for users in ``latency_tables/README.md``)::

    {"format": "nas2deploy.latency_table", "version": 1,
     "meta": {"measurement": {...backend, device, precision, batch, threads, versions...},
              "timing": {...harness settings...}, "space": {"name", "config"}, "shard", "created"},
     "reference": {"key", "spec", "stats", "end_stats"},
     "entries": {KEY: {"spec": {...}, "stats": {median_ms, mean_ms, p90_ms, ...}, "attempts"}},
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
from typing import Any, Iterable

from nas2deploy.arch import AnyArch
from nas2deploy.backends.timing import TimingStats
from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_json, check_format, read_json
from nas2deploy.ops import OpSpec
from nas2deploy.spaces import OPTION_FIELDS, SearchSpace, make_space

TABLE_FORMAT = "nas2deploy.latency_table"
TABLE_VERSION = 1
#: Measurement fields that must agree before two tables may be merged or compared.
MATCH_FIELDS = (
    "backend", "backend_version", "device", "device_name", "ort_provider", "ort_graph_level",
    "precision", "batch", "threads", "cuda_graph", "onnx_opset",
)


@dataclass(frozen=True)
class Entry:
    spec: OpSpec
    stats: TimingStats
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "stats": self.stats.to_dict(), "attempts": self.attempts}

    @staticmethod
    def from_dict(d: Any, where: str) -> Entry:
        try:
            return Entry(OpSpec.from_dict(d["spec"]), TimingStats.from_dict(d["stats"]), int(d.get("attempts", 1)))
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: malformed entry ({type(exc).__name__}: {exc})") from None


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

    # -- identity ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.path) if self.path else "<table>"

    @property
    def measurement(self) -> dict[str, Any]:
        return dict(self.meta.get("measurement", {}))

    def differing_fields(self, other: LatencyTable) -> list[str]:
        mine, theirs = self.measurement, other.measurement
        return [f for f in MATCH_FIELDS if mine.get(f) != theirs.get(f)]

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
        """Raise one line listing missing keys (first few, count) and the command that fills them."""
        missing = self.missing(specs)
        if not missing:
            return
        problem = f"latency table {self.name} lacks {_listing(missing)} needed by {what}"
        space = self.meta.get("space", {})
        try:
            covered = {s.key for s in self.space().op_specs()}
        except UserError:
            covered = set()
        if set(missing) <= covered:
            raise UserError(f"{problem}; measure them with: {self.profile_command()}")
        raise UserError(
            f"{problem}; they lie outside the table's search space ({space.get('name')} {space.get('config')}), "
            "so use a table profiled for a space that contains them"
        )

    def profile_command(self, space_name: str | None = None, config: dict[str, Any] | None = None,
                        out: str | None = None) -> str:
        """The command that measures a space (the table's own by default) under this table's settings."""
        m, space = self.measurement, self.meta.get("space", {})
        cfg = config if config is not None else space.get("config", {})
        parts = ["nas2deploy profile", f"--space {space_name or space.get('name', 'densenas')}"]
        parts += [f"--backend {m.get('backend', 'onnxruntime')}", f"--precision {m.get('precision', 'fp32')}"]
        parts += [f"--batch {m.get('batch', 1)}"]
        for opt in OPTION_FIELDS:
            if cfg.get(opt) is not None:
                parts.append(f"--{opt.replace('_', '-')} {cfg[opt]}")
        parts.append(f"--out {out or self.name}")
        return " ".join(parts)

    def space(self) -> SearchSpace:
        """The search space this table was profiled for."""
        meta = self.meta.get("space", {})
        return make_space(meta.get("name", ""), meta.get("config"))

    def require_space(self, space: SearchSpace) -> None:
        """Refuse a table that does not cover every op of ``space``, with the command that would."""
        missing = self.missing(space.op_specs())
        if missing:
            raise UserError(
                f"latency table {self.name} does not cover the {space.name} space {space.config_dict()}: it lacks "
                f"{_listing(missing)}; profile that space with: "
                f"{self.profile_command(space.name, space.config_dict(), 'NEW_TABLE.json')}"
            )

    def latency(self, spec: OpSpec) -> float:
        if spec.is_free:
            return 0.0
        entry = self.entries.get(spec.key)
        if entry is None:
            self.require([spec], "this lookup")
        assert entry is not None
        return entry.stats.median_ms

    def predict(self, arch: AnyArch, drift: float = 1.0) -> Prediction:
        specs = arch.op_specs()
        self.require(specs, f"arch {arch.name or '<unnamed>'}")
        raw = sum(self.latency(s) for s in specs)
        cal = self.calibration.apply(raw, len(specs)) * drift if self.calibration else None
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
        doc = check_format(read_json(path, "latency table"), path, TABLE_FORMAT, TABLE_VERSION, "latency table")
        where = f"latency table {path}"
        for field_name, kind in (("meta", dict), ("entries", dict)):
            if not isinstance(doc.get(field_name), kind):
                raise UserError(f"{where}: field {field_name!r} is missing or not an object")
        entries = {}
        for key, raw in doc["entries"].items():
            entry = Entry.from_dict(raw, f"{where}: entry {key!r}")
            if entry.spec.key != key:
                raise UserError(f"{where}: entry {key!r} describes op {entry.spec.key!r}; the file was edited or is corrupt")
            entries[key] = entry
        cal = doc.get("calibration")
        try:
            calibration = Calibration(**cal) if cal else None
        except TypeError as exc:
            raise UserError(f"{where}: malformed calibration ({exc})") from None
        return LatencyTable(doc["meta"], entries, doc.get("reference"), calibration, doc.get("validation"), path)


def _listing(keys: list[str]) -> str:
    """'N op(s) (first, second, third, ...)': the count and the first few keys."""
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{len(keys)} op(s) ({shown})"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def merge_tables(tables: list[LatencyTable]) -> LatencyTable:
    """Union of shard tables measured under the same settings.

    Each input's entries are rescaled by the ratio of the first table's reference-op latency to
    its own, so shards measured at different moments (or on twin machines) share one time base.
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
            s = e.stats
            scaled = TimingStats(
                s.median_ms * factor, s.mean_ms * factor, s.p90_ms * factor, s.p99_ms * factor,
                s.min_ms * factor, s.std_ms * factor, s.cov, s.runs,
            )
            entries.setdefault(key, Entry(e.spec, scaled, e.attempts))
    meta = dict(base.meta)
    meta.update(shard=None, merged_from=[t.name for t in tables], created=now_iso())
    return LatencyTable(meta, entries, base.reference)
