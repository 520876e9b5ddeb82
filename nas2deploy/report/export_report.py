"""``report.md`` of an export folder, with its plots: latency (predicted, measured, budget),
latency per block as the table predicts it, and a diagram of the architecture."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nas2deploy.nets import Network
from nas2deploy.fileio import atomic_write_bytes
from nas2deploy import plotting
from nas2deploy.validate import Field


def _latency_plot(out: Path, report: dict[str, Any]) -> str | None:
    labels, values = [], []
    for backend, entry in report.get("latency", {}).items():
        pred = entry.get("prediction")
        if pred:
            labels.append("predicted\nraw")
            values.append(pred["raw_ms"])
            if pred.get("calibrated_ms") is not None:
                labels.append("predicted\ncalibrated")
                values.append(pred["calibrated_ms"])
        labels.append(f"measured\n{backend}")
        values.append(entry["timing"]["median_ms"])
    if not values:
        return None
    budget = report.get("budget_ms")
    return plotting.bars(out / "latency.png", labels, values, "table prediction or backend measurement", "ms",
                         "Latency: prediction, measurement and budget", budget, f"budget {budget} ms" if budget else "")


def _difference(c: dict[str, Any]) -> str:
    """The comparison's score difference on the ground truth: an int8 network's drop, else the
    (segmentation) mIoU difference."""
    if c.get("accuracy_drop") is not None:
        return f"drop {c['accuracy_drop']:.2f} points"
    return "-" if c.get("miou_difference") is None else format(c["miou_difference"], ".3f") + " points"


def _quantization_lines(q: dict[str, Any] | None) -> list[str]:
    if not q:
        return []
    speedup = f", {q['speedup_over_fp32']:.2f}x the speed of the fp32 graph" if q.get("speedup_over_fp32") else ""
    return ["## INT8", "", f"`{q['file']}`: {q['format']}; weights {q['weights']}, activations {q['activations']}, "
            f"{q['calibrator']} calibration on {q['calibration_images']} training images ({q['seconds']:.1f} s){speedup}.",
            *([f"Left in float (`--allow-float-ops`): {', '.join(f'{op} x{n}' for op, n in q['float_ops'].items())}."]
              if q.get("float_ops") else []), ""]


def read_export_report(doc: Field) -> dict[str, Any]:
    """An export folder's report.json, each field ``report`` renders checked by its rule (the
    file is this tool's output, but a hand-edited one must fail in one line, not a traceback)."""
    num = lambda f: f.number(-1e12, 1e12)  # noqa: E731
    if doc["format"].str() != "nas2deploy.export_report":
        raise doc["format"].error("must be nas2deploy.export_report")
    summary = doc["summary"]
    for key in ("params", "macs", "blocks", "layers"):
        summary[key].int(0, 10**13)
    if summary.get("unit") is not None:
        summary["unit"].str(max_len=32)
    if doc.get("passed") is not None:
        doc["passed"].bool()
    for key in ("weights", "prediction_skipped"):
        if doc.get(key) is not None:
            doc[key].str(max_len=10_000)
    for _, entry in (doc["deployed"].items(max_len=100) if doc.get("deployed") else []):
        entry["file"].str(max_len=4096), entry["what"].str(max_len=10_000)
    if doc.get("accuracy") is not None and doc["accuracy"].get("inputs") is not None:
        doc["accuracy"]["inputs"].str(max_len=10_000)
    for row in summary["rows"].list(max_len=10**4):
        row["name"].str()
        [op.str() for op in row["ops"].list(max_len=10**4)]
        [v.int(0, 10**9) for v in row["out"].list(min_len=3, max_len=3)]
        row["params"].int(0, 10**13), row["macs"].int(0, 10**13)
        if row.get("latency_ms") is not None:
            num(row["latency_ms"])
    for _, entry in (doc["latency"].items() if doc.get("latency") else []):
        for key in ("median_ms", "mean_ms", "p90_ms", "p99_ms", "cov"):
            entry["timing"][key].number(0, 1e12)  # times and their spread are never negative
        entry["throughput_per_s"].number(0, 1e12)
        prediction = entry.get("prediction")
        if prediction is not None:
            for key in ("raw_ms", "drift", "measured_over_predicted"):
                num(prediction[key])
            if prediction.get("calibrated_ms") is not None:
                num(prediction["calibrated_ms"])
    if doc.get("budget_ms") is not None:
        doc["budget_ms"].number(0, 1e12, lo_open=True)
    for key in ("warnings", "over_budget"):
        for line in doc[key].list(max_len=1000) if doc.get(key) is not None else []:
            line.str(max_len=10_000)
    accuracy = doc.get("accuracy")
    for c in accuracy["comparisons"].list(max_len=100) if accuracy else []:
        c["candidate"].str(), c["threshold"].str(max_len=1000), c["passed"].bool(), c["samples"].int(0, 10**9)
        for key in ("max_abs", "max_abs_of_scale", "max_rel", "mean_abs", "cosine", "top1_agreement", "min_tolerance"):
            value = c[key].value
            if not (isinstance(value, float) and not math.isfinite(value)):  # inf and NaN are results here
                c[key].number()
        for key in ("miou_difference", "accuracy_drop"):
            if c.get(key) is not None:
                num(c[key])
    quantization = doc.get("quantization")
    if quantization is not None:
        for key in ("file", "calibrator", "activations", "weights", "format"):
            quantization[key].str(max_len=1000)
        quantization["calibration_images"].int(1, 10**9)
        quantization["seconds"].number(0, 1e9)
        for _, count in (quantization["float_ops"].items() if quantization.get("float_ops") else []):
            count.int(1, 10**9)
        if quantization.get("speedup_over_fp32") is not None:
            quantization["speedup_over_fp32"].number(0, 1e6, lo_open=True)
    for _, seconds in (doc["steps_s"].items() if doc.get("steps_s") else []):
        num(seconds)
    return doc.object()


def write_export_report(out: Path, report: dict[str, Any], arch: Network) -> Path:
    summary = report["summary"]
    rows = summary["rows"]
    images = [_latency_plot(out, report)]
    unit = summary.get("unit", "blocks").rstrip("s")
    if all("latency_ms" in r for r in rows):
        images.append(plotting.bars(out / "blocks.png", [r["name"] for r in rows], [r["latency_ms"] for r in rows], unit,
                                 "ms (table)", f"Predicted latency per {unit}"))
    else:
        images.append(plotting.bars(out / "blocks.png", [r["name"] for r in rows], [r["macs"] / 1e6 for r in rows], unit,
                                 "M multiply-adds", f"Multiply-adds per {unit} (no latency table given)"))
    images.append(plotting.arch_diagram(out / "arch.png", rows, f"{arch.name}: {summary['params']:,} parameters, "
                                     f"{summary['macs'] / 1e6:.1f}M multiply-adds", arch.layout()))
    acc = report.get("accuracy", {})
    verdict = "passed" if report.get("passed") else "FAILED"
    lines = [
        f"# Export of `{arch.name}`",
        "",
        f"{arch.input_size}x{arch.input_size} input, {arch.num_classes} classes, {summary['blocks']} {summary.get('unit', 'blocks')}, "
        f"{summary['layers']} layers, {summary['params']:,} parameters, {summary['macs'] / 1e6:.1f}M multiply-adds. "
        f"Weights: {report.get('weights') or 'freshly initialised (none given)'}.",
        "",
        *[f"**Warning:** {line}  " for line in report.get("warnings", [])],
        *([""] if report.get("warnings") else []),
        *_quantization_lines(report.get("quantization")),
        f"## Accuracy: {verdict}",
        "",
        f"Inputs: {acc.get('inputs', '?')}. Reference: PyTorch on the CPU in fp32.",
        "",
        "| runtime | inputs | max abs | of output scale | max rel | mean abs | min cosine | top-1 / pixel agreement | score difference | passes at tol. | threshold | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in acc.get("comparisons", []):
        lines.append(
            f"| {c['candidate']} | {c['samples']} | {c['max_abs']:.2e} | {c['max_abs_of_scale']:.1e} | {c['max_rel']:.2e} | "
            f"{c['mean_abs']:.2e} | {c['cosine']:.7f} | {c['top1_agreement']:.3%} | "
            f"{_difference(c)} | {c['min_tolerance']:.1e} | "
            f"{c['threshold']} | {'pass' if c['passed'] else 'FAIL'} |"
        )
    lines += ["", "## Latency", ""]
    budget = report.get("budget_ms")
    lines.append(f"Budget: {budget} ms." if budget else "No budget (none recorded with the architecture, no --budget-ms).")
    lines += ["", "| backend | median | mean | p90 | p99 | CoV | throughput | predicted (raw / calibrated, x drift) | measured / predicted | x budget |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for backend, e in report.get("latency", {}).items():
        t, p = e["timing"], e.get("prediction")
        pred = "-"
        ratio = "-"
        if p:
            cal = f"{p['calibrated_ms']:.3f}" if p.get("calibrated_ms") is not None else "-"
            pred = f"{p['raw_ms']:.3f} / {cal} ms (drift {p['drift']:.3f})"
            ratio = f"{p['measured_over_predicted']:.3f}"
        share = f"{t['median_ms'] / budget:.2f}" if budget else "-"
        lines.append(f"| {backend} | {t['median_ms']:.3f} ms | {t['mean_ms']:.3f} ms | {t['p90_ms']:.3f} ms | {t['p99_ms']:.3f} ms | "
                     f"{t['cov']:.1%} | {e['throughput_per_s']:.0f}/s | {pred} | {ratio} | {share} |")
    if report.get("prediction_skipped"):
        lines += ["", f"No prediction compared: {report['prediction_skipped']}"]
    lines += ["", "## Files", "", "| file | what |", "|---|---|",
              "| model.onnx | fp32 ONNX graph (opset and check in report.json) |"]
    for entry in report.get("deployed", {}).values():
        lines.append(f"| {entry['file']} | {entry['what']} |")
    lines += ["| arch.json | the architecture |", "| weights.pt | its weights (state dict) |",
              "| report.json | everything on this page, as data |"]
    lines += [f"| {name} | the plot below |" for name in images if name]
    lines += ["",
              "Step times (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.get("steps_s", {}).items()), ""]
    lines += [f"![{name}]({name})" for name in images if name]
    path = out / "report.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
