"""``export``, ``bench`` and ``report``: build and check deployable artifacts, time them, report."""

from __future__ import annotations

from pathlib import Path

import click

from nas2deploy.backends import BACKENDS, DEVICES, ONNX_CHECKER, PRECISIONS, BackendSettings
from nas2deploy.backends.timing import TimingSettings
from nas2deploy.cli.common import POSITIVE, emit, force_option, json_option, log, warn


@click.command()
@click.option("--arch", "arch_ref", required=True, help="Arch JSON file or shipped name.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict from `train`; without it, fresh weights.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Export folder, e.g. export/NAME.")
@click.option("--backend", "backends", type=click.Choice(list(BACKENDS)), multiple=True, default=(ONNX_CHECKER,),
              show_default=True, help="Backends to deploy and measure (repeat the option for several).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Device of ONNX Runtime and PyTorch (TensorRT always uses the GPU).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="TensorRT engine precision (int8 is not supported).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension (engine profile 1..max(B, 32)).")
@click.option("--data", help="Dataset for the accuracy check (default: the one recorded in the arch).")
@click.option("--images", type=click.Path(exists=False), help="Image file or folder for the accuracy check instead.")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True, help="Inputs in the accuracy check.")
@click.option("--lut", type=click.Path(dir_okay=False), help="Latency table to compare with (default: the arch's).")
@click.option("--budget-ms", type=POSITIVE, help="Budget to report against (default: the arch's).")
@click.option("--workspace-mb", type=click.IntRange(min=1), default=1024, show_default=True)
@force_option
@click.option("--strict", is_flag=True, help="Exit 1 (after writing the folder) when a backend measures above the budget.")
@json_option
def export(arch_ref: str, weights: str | None, out: str, backends: tuple[str, ...], device: str, precision: str,
           batch: int, dynamic_batch: bool, data: str | None, images: str | None, samples: int, lut: str | None,
           budget_ms: float | None, workspace_mb: int, force: bool, strict: bool, as_json: bool) -> None:
    """Export ONNX (and a TensorRT engine), check accuracy on real inputs, measure latency, write a report."""
    from nas2deploy.nets import load_arch
    from nas2deploy.deploy.export import Exporter, ExportOptions

    options = ExportOptions(tuple(dict.fromkeys(backends)), device, precision, batch, dynamic_batch, data, images,
                            samples, lut=lut, budget_ms=budget_ms, workspace_mb=workspace_mb, force=force, strict=strict)
    report = Exporter(load_arch(arch_ref), weights, out, options, log, warn).run()
    latency = {b: {"median_ms": e["timing"]["median_ms"], "cov": e["timing"]["cov"],
                   "measured_over_predicted": e.get("prediction", {}).get("measured_over_predicted")}
               for b, e in report["latency"].items()}
    emit({"out": out, "report": str(Path(out) / "report.md"), "passed": report["passed"], "latency": latency,
          "budget_ms": report["budget_ms"], "over_budget": report["over_budget"], "warnings": report["warnings"]},
         f"report: {Path(out) / 'report.md'}", as_json)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=ONNX_CHECKER, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), help="Batch of a dynamic-batch model [default: 1; a static "
              "model runs the batch it was built for].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=TimingSettings().min_runs, show_default=True)
@click.option("--cuda-graph", is_flag=True, help="torch / TensorRT on cuda: replay the launch as a CUDA graph.")
@json_option
def bench(model: str, backend: str, device: str, batch: int | None, threads: int, runs: int, cuda_graph: bool,
          as_json: bool) -> None:
    """trtexec-style latency summary of an ONNX model or a TensorRT engine."""
    from nas2deploy.deploy.bench import bench_model

    result = bench_model(model, BackendSettings(backend=backend, device=device, batch=batch or 1, threads=threads,
                                                cuda_graph=cuda_graph), TimingSettings(min_runs=runs), batch is not None)
    t = result["timing"]
    emit(result, [f"{model} on {result['settings']['backend']} ({result['settings']['device_name']}), batch {result['batch']}",
                  f"  latency: median {t['median_ms']:.4f} ms, mean {t['mean_ms']:.4f} ms, min {t['min_ms']:.4f} ms, "
                  f"p90 {t['p90_ms']:.4f} ms, p99 {t['p99_ms']:.4f} ms, CoV {t['cov']:.1%} over {t['runs']} runs",
                  f"  throughput: {result['throughput_per_s']:.1f} inferences/s"], as_json)


@click.command()
@click.argument("folder", type=click.Path(file_okay=False))
@json_option
def report(folder: str, as_json: bool) -> None:
    """Regenerate report.md and its plots for an export folder or a search run."""
    from nas2deploy.report import regenerate

    path = regenerate(folder)
    emit({"report": str(path)}, f"wrote {path}", as_json)
