"""``arch info``: parameters, multiply-adds and predicted latency of a network, group by group.

Counting follows the published numbers' conventions: multiply-adds of convolutions and linear
layers only; parameters include BN scale/shift and the classifier bias (so MobileNetV2-1.0 has
3,504,872 parameters and 300.8M multiply-adds).
"""

from __future__ import annotations

from typing import Any

from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network


def arch_summary(arch: Network, table: LatencyTable | None = None) -> dict[str, Any]:
    pred = table.predict(arch) if table is not None else None  # first: names every missing op
    rows = []
    for name, specs in arch.groups():
        row: dict[str, Any] = {
            "name": name,
            "ops": [s.key for s in specs],
            "out": list(specs[-1].out_shape()),
            "params": sum(s.params() for s in specs),
            "macs": sum(s.macs() for s in specs),
        }
        if table is not None:
            row["latency_ms"] = sum(table.latency(s) for s in specs)
        rows.append(row)
    summary: dict[str, Any] = {
        "name": arch.name,
        "input_size": arch.input_size,
        "input_shape": list(arch.input_shape),
        "num_classes": arch.num_classes,
        "task": arch.task,
        "blocks": arch.units(),
        "unit": arch.unit,
        "layers": len(arch.op_specs()),
        "params": sum(r["params"] for r in rows),
        "macs": sum(r["macs"] for r in rows),
        "rows": rows,
    }
    summary.update(arch.figures())
    if table is not None and pred is not None:
        summary["latency"] = {"table": table.name, "raw_ms": pred.raw_ms, "calibrated_ms": pred.calibrated_ms}
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    has_lat = "latency" in summary
    _, height, width = summary["input_shape"]
    lines = [
        f"{summary['name']}: {height}x{width} input, {summary['num_classes']} classes, "
        f"{summary['blocks']} {summary.get('unit', 'blocks')}, {summary['layers']} layers",
        f"  parameters     {summary['params']:,}",
        f"  multiply-adds  {summary['macs'] / 1e6:.1f} M (conv and linear)",
    ]
    if "context_module" in summary:
        context = summary["context_module"]
        lines.append(f"  context module {context['params']:,} parameters, {context['multiply_adds'] / 1e9:.3f} B multiply-adds "
                     f"at {'x'.join(map(str, context['features']))} features ({context['convention']})")
    if has_lat:
        lat = summary["latency"]
        cal = f", calibrated {lat['calibrated_ms']:.3f} ms" if lat["calibrated_ms"] is not None else " (table not calibrated)"
        lines.append(f"  latency        {lat['raw_ms']:.3f} ms summed{cal}  [{lat['table']}]")
    head = f"  {'':<9}{'output':>14}{'params':>11}{'MACs (M)':>10}" + (f"{'ms':>8}" if has_lat else "") + "  ops"
    lines.append(head)
    for r in summary["rows"]:
        out = "x".join(str(v) for v in r["out"])
        ops = ", ".join(k.split("_i")[0] for k in r["ops"])
        lat = f"{r['latency_ms']:>8.3f}" if has_lat else ""
        lines.append(f"  {r['name']:<9}{out:>14}{r['params']:>11,}{r['macs'] / 1e6:>10.2f}{lat}  {ops}")
    return lines
