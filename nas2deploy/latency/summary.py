"""``lut show``: what a table measured, where, how steadily, and how well it predicts."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from nas2deploy.latency.table import LatencyTable


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
        "reference_ms": table.reference_ms,
        "calibration": table.calibration.to_dict() if table.calibration else None,
        "validation": {k: v for k, v in (table.validation or {}).items() if k != "records"} or None,
        "slowest": [(e.spec.key, e.stats.median_ms) for e in entries[:5]],
    }
    lines = [
        f"{table.name}",
        f"  measured   {m.get('backend')} {m.get('backend_version')} ({m.get('ort_provider', m.get('device'))}) on "
        f"{m.get('device_name')}, {m.get('precision')}, batch {m.get('batch')}, {m.get('threads')} thread(s), {summary['created']}",
        f"  space      {(summary['space'] or {}).get('name')} {(summary['space'] or {}).get('config')}"
        + (f", shard {summary['shard']}" if summary["shard"] else ""),
        f"  entries    {len(entries)}, median CoV {summary['median_cov']:.1%}" if covs else "  entries    0",
    ]
    for t, s in summary["by_type"].items():
        lines.append(f"    {t:<11}{s['count']:>5} ops, median {s['median_ms']:.4f} ms, sum {s['total_ms']:.2f} ms")
    if table.reference:
        lines.append(f"  reference  {table.reference['key']}: {table.reference_ms:.4f} ms")
    lines.append("  slowest    " + ", ".join(f"{k} {v:.3f} ms" for k, v in summary["slowest"][:3]))
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
    summary["lines"] = lines
    return summary
