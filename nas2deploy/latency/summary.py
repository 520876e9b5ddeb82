"""``lut show``: what a table measured, where, how steadily, and how well it predicts, and the
warnings every command that uses a table repeats (``table_warnings``)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from nas2deploy.latency.measure import timing_from_table
from nas2deploy.latency.table import LatencyTable

#: Below this many validated networks a calibration is warned about as resting on few samples.
FEW_NETWORKS = 10
#: Below this Kendall tau (out of sample) a calibrated table is warned about as ranking weakly.
WEAK_TAU = 0.7
#: A profile whose reference op moved by more than this share while it ran is warned about.
DRIFT_LIMIT = 0.10


def host_bound(table: LatencyTable) -> dict[str, Any] | None:
    """For an eager CUDA table: how many ops the host's dispatch outlasts their kernels, and the
    two medians; None for tables without launch costs."""
    costs = [e.launch for e in table.entries.values() if e.launch is not None]
    if not costs:
        return None
    return {"ops": len(costs), "host_bound": sum(c.host_ms > c.kernel_ms for c in costs),
            "host_ms": statistics.median(c.host_ms for c in costs), "kernel_ms": statistics.median(c.kernel_ms for c in costs)}


def summarize(table: LatencyTable) -> dict[str, Any]:
    m = table.measurement
    by_type: dict[str, list[float]] = defaultdict(list)
    for e in table.entries.values():
        by_type[e.spec.type_name].append(e.stats.median_ms)
    entries = sorted(table.entries.values(), key=lambda e: e.stats.median_ms, reverse=True)
    covs = [e.stats.cov for e in entries]
    summary: dict[str, Any] = {
        "path": table.name,
        "measurement": m,
        "space": table.meta.get("space"),
        "shard": table.meta.get("shard"),
        "created": table.meta.get("created"),
        "entries": len(entries),
        "by_type": {t: {"count": len(v), "median_ms": statistics.median(v), "total_ms": sum(v)} for t, v in sorted(by_type.items())},
        "median_cov": statistics.median(covs) if covs else None,
        "median_ci": statistics.median(cis) if (cis := [e.stats.ci_rel for e in entries if e.stats.ci_rel is not None])
        else None,
        "reference_ms": table.reference_ms,
        "calibration": table.calibration.to_dict() if table.calibration else None,
        "validation": {k: v for k, v in (table.validation or {}).items() if k != "records"} or None,
        "slowest": [(e.spec.key, e.stats.median_ms) for e in entries[:5]],
        "launches": host_bound(table),
    }
    lines = [
        f"{table.name}",
        f"  measured   {m.get('backend')} {m.get('backend_version')} ({m.get('ort_provider', m.get('device'))}) on "
        f"{m.get('device_name')}, {m.get('precision')}, batch {m.get('batch')}, {m.get('threads')} thread(s), {summary['created']}",
        f"  space      {(summary['space'] or {}).get('name')} {(summary['space'] or {}).get('config')}"
        + (f", shard {summary['shard']}" if summary["shard"] else ""),
        f"  entries    {len(entries)}, median CoV {summary['median_cov']:.1%} (the spread of an op's timed runs; "
        + (f"its median is known to +-{summary['median_ci']:.2%}, 95% interval)" if summary["median_ci"] is not None
           else "the median of many runs is steadier)") if covs else "  entries    0",
    ]
    for t, s in summary["by_type"].items():
        lines.append(f"    {t:<11}{s['count']:>5} ops, median {s['median_ms']:.4f} ms, sum {s['total_ms']:.2f} ms")
    if table.reference:
        lines.append(f"  reference  {table.reference['key']}: {table.reference_ms:.4f} ms")
    lines.append("  slowest    " + ", ".join(f"{k} {v:.3f} ms" for k, v in summary["slowest"][:3]))
    if summary["launches"]:
        h = summary["launches"]
        lines.append(f"  launches   eager: host dispatch {h['host_ms']:.4f} ms, kernels {h['kernel_ms']:.4f} ms (medians); "
                     f"{h['host_bound']} of {h['ops']} ops bound by the host")
    if table.calibration:
        c = table.calibration
        lines.append(f"  calibrated measured = {c.scale:.4f} x sum {c.offset_ms:+.4f} ms {c.per_op_ms:+.4f} ms/op ({c.samples} networks)")
    else:
        lines.append("  calibrated no: run `nas2deploy lut validate` to fit one")
    if table.validation:
        v = table.validation
        for kind in ("raw", "calibrated"):
            f = v[kind]
            lines.append(f"  {kind:<11}MAPE {f['mape']:.2f}%, {f['within_10pct']:.0f}% within 10%, Kendall tau {f['kendall_tau']:.3f} ({v['samples']} networks)")
    summary["warnings"] = table_warnings(table)
    lines += [f"  warning    {line}" for line in summary["warnings"]]
    summary["lines"] = lines
    return summary


def table_warnings(table: LatencyTable) -> list[str]:
    """What a user of ``table`` should know before trusting it: noisy measurements (median CoV
    above the harness's own limit), a reference op that drifted while it was profiled, an eager
    GPU table whose ops are mostly bound by the host (the network's latency is then the host's,
    and varies with it: measured on an H200, see ``benchmarks/gpu_latency.py``), a calibration
    resting on few networks or ranking them weakly, a fit that was refused."""
    out = []
    timing = timing_from_table(table)
    cis = [e.stats.ci_rel for e in table.entries.values() if e.stats.ci_rel is not None]
    covs = [e.stats.cov for e in table.entries.values()]
    if timing.target_ci > 0 and cis and statistics.median(cis) > timing.target_ci:
        out.append(f"table {table.name}: most ops' medians stayed uncertain (95% interval +-{statistics.median(cis):.1%}, "
                   f"target {timing.target_ci:.1%}): the machine was busy while profiling; profile again on a quiet machine")
    elif timing.target_ci == 0 and covs and statistics.median(covs) > timing.max_cov:
        out.append(f"table {table.name}: its ops' runs varied by a median CoV of {statistics.median(covs):.0%} (above "
                   f"{timing.max_cov:.0%}): the machine was busy while profiling; profile again on a quiet machine")
    drift = [ratio for _, ratio in table.meta.get("profile", {}).get("drift", [])]
    worst = max(drift, key=lambda r: abs(r - 1), default=1.0)
    if abs(worst - 1) > DRIFT_LIMIT:
        out.append(f"table {table.name}: the reference op drifted by {worst - 1:+.0%} while the table was profiled (the "
                   "machine changed speed: load, heat or frequency), so its ops are not measured alike; profile again "
                   "on a quiet machine")
    launches = host_bound(table)
    if launches and launches["host_bound"] > launches["ops"] / 2:
        out.append(f"table {table.name}: {launches['host_bound']} of {launches['ops']} ops are bound by the host when "
                   f"launched eagerly (dispatch {launches['host_ms']:.3f} ms against {launches['kernel_ms']:.3f} ms of kernels, "
                   "medians), so an eager network runs at the speed of the host's Python and moves with its load (on an "
                   "H200's host, one network measured up to 30% apart minutes later); for a steady latency, deploy "
                   "graph-launched (CUDA graphs, torch.compile(mode='reduce-overhead'), TensorRT) and profile with --cuda-graph")
    validation = table.validation or {}
    if validation.get("calibration_refused"):
        out.append(f"table {table.name}: no calibration stored, the fit was refused: {validation['calibration_refused']}")
    records = [r for r in validation.get("records") or [] if {"raw_ms", "n_ops", "measured_ms"} <= set(r)]
    if table.calibration is not None and records:
        c, smallest = table.calibration, min(records, key=lambda r: r["raw_ms"])
        lowest = c.apply(smallest["raw_ms"], smallest["n_ops"])
        if lowest <= 0.5 * smallest["measured_ms"] or lowest >= 2 * smallest["measured_ms"]:
            out.append(f"table {table.name}: its calibration (x {c.scale:.4g}, {c.offset_ms:+.4g} ms, {c.per_op_ms:+.4g} "
                       f"ms/op) predicts {lowest:.4g} ms for the smallest network it was fitted on, measured at "
                       f"{smallest['measured_ms']:.4g} ms: the calibration does not describe its own networks (edited "
                       "or damaged); run nas2deploy lut validate again")
    if table.calibration is not None and table.calibration.samples < FEW_NETWORKS:
        out.append(f"table {table.name}: calibrated on {table.calibration.samples} networks only: "
                   f"run nas2deploy lut validate with --samples {max(30, FEW_NETWORKS)} or more")
    tau = validation.get("calibrated", {}).get("kendall_tau") if table.calibration is not None else None
    if tau is not None and tau < WEAK_TAU:
        out.append(f"table {table.name}: calibrated predictions rank networks weakly (Kendall tau {tau:.2f} < {WEAK_TAU}): "
                   "a faster prediction may not be a faster network")
    return out


def extrapolation_warning(table: LatencyTable, raw_ms: float) -> str | None:
    """A warning when ``raw_ms`` lies far outside the op sums the calibration was fitted on
    (below half the smallest or above twice the largest validated network)."""
    records = (table.validation or {}).get("records") or []
    if table.calibration is None or not records:
        return None
    low, high = min(r["raw_ms"] for r in records), max(r["raw_ms"] for r in records)
    if low / 2 <= raw_ms <= 2 * high:
        return None
    return (f"table {table.name}: this network's op sum {raw_ms:.3f} ms lies far outside the {low:.3f}-{high:.3f} ms "
            "its calibration was fitted on: the calibrated prediction extrapolates")
