"""``export``, ``bench`` and ``report``: build and check deployable artifacts, time them, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nas2deploy.cli.common import (POSITIVE, Finite, backend_params, declared_command, emit, force_option, json_option, log,
                                   on_interrupt, pop_backend_options, warn)


#: ``backends.quantize.CALIBRATORS``, written here so that the command's help imports no runtime
#: (a test holds the two equal).
CALIBRATORS = ("minmax", "percentile", "entropy")


@declared_command(lambda ctx, args: backend_params(several=True))
@click.option("--arch", "arch_ref", required=True, help="Arch JSON file or shipped name.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict from `train`; without it, fresh weights.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Export folder, e.g. export/NAME.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension (engine profile 1..max(B, 32)).")
@click.option("--data", help="Dataset for the accuracy check (default: the one recorded in the arch).")
@click.option("--images", type=click.Path(exists=False), help="Image file or folder for the accuracy check instead.")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True, help="Inputs in the accuracy check.")
@click.option("--lut", type=click.Path(dir_okay=False), help="Latency table to compare with (default: the arch's).")
@click.option("--budget-ms", type=POSITIVE, help="Budget to report against (default: the arch's).")
@click.option("--calibration-data", help="--precision int8: the data whose training images calibrate the "
              "quantisation (as --data takes it).")
@click.option("--calibration-images", type=click.IntRange(min=1), default=512, show_default=True,
              help="--precision int8: how many calibration images.")
@click.option("--calibrator", type=click.Choice(CALIBRATORS), default="minmax", show_default=True,
              help="--precision int8: how activation ranges are set.")
@click.option("--max-drop", type=Finite(min=0, max=100), default=1.0, show_default=True,
              help="--precision int8: points of top-1 (mIoU) the int8 network may lose before it is flagged.")
@click.option("--allow-float-ops", is_flag=True, help="--precision int8: write the graph even where the quantiser "
              "leaves operators in float (they run in fp32; they are named either way).")
@force_option
@click.option("--strict", is_flag=True, help="Exit 1 (after writing the folder) when a backend measures above the "
              "budget, or an int8 network loses more than --max-drop.")
@json_option
def export(arch_ref: str, weights: str | None, out: str, backends: tuple[str, ...], device: str, precision: str,
           batch: int, threads: int, dynamic_batch: bool, data: str | None, images: str | None, samples: int,
           lut: str | None, budget_ms: float | None, calibration_data: str | None, calibration_images: int,
           calibrator: str, max_drop: float, allow_float_ops: bool, force: bool, strict: bool, as_json: bool,
           **rest: Any) -> None:
    """Export ONNX (and a TensorRT engine), check accuracy on real inputs, measure latency, write a report."""
    from nas2deploy.deploy.export import Exporter, ExportOptions
    from nas2deploy.nets import load_arch

    options = ExportOptions(tuple(dict.fromkeys(backends)), device, precision, batch, dynamic_batch, data, images,
                            samples, lut=lut, budget_ms=budget_ms, threads=threads,
                            backend_options=pop_backend_options(rest), force=force, strict=strict,
                            calibration_data=calibration_data, calibration_images=calibration_images,
                            calibrator=calibrator, max_drop=max_drop, allow_float_ops=allow_float_ops)
    on_interrupt(f"export folder {out} may be incomplete", "--force")
    report = Exporter(load_arch(arch_ref), weights, out, options, log, warn).run()
    latency = {b: {"median_ms": e["timing"]["median_ms"], "cov": e["timing"]["cov"],
                   "measured_over_predicted": e.get("prediction", {}).get("measured_over_predicted")}
               for b, e in report["latency"].items()}
    emit({"out": out, "report": str(Path(out) / "report.md"), "passed": report["passed"], "latency": latency,
          "budget_ms": report["budget_ms"], "over_budget": report["over_budget"], "warnings": report["warnings"]},
         f"report: {Path(out) / 'report.md'}", as_json)


@declared_command(lambda ctx, args: backend_params(batch=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--batch", type=click.IntRange(min=1), help="Batch of a dynamic-batch model [default: 1; a static "
              "model runs the batch it was built for].")
@click.option("--runs", type=click.IntRange(min=1), default=None, help="Timed runs at least [default: the harness's].")
@json_option
def bench(model: str, backend: str, device: str, precision: str, batch: int | None, threads: int, runs: int | None,
          as_json: bool, **rest: Any) -> None:
    """trtexec-style latency summary of an ONNX model or a TensorRT engine."""
    from nas2deploy.backends import BackendSettings
    from nas2deploy.backends.timing import TimingSettings
    from nas2deploy.deploy.bench import bench_model

    settings = BackendSettings(backend, device, precision, batch or 1, threads, pop_backend_options(rest))
    timing = TimingSettings(min_runs=runs) if runs else TimingSettings()
    result = bench_model(model, settings, timing, batch is not None)
    t = result["timing"]
    emit(result, [f"{model} on {result['settings']['backend']} ({result['settings']['device_name']}), batch {result['batch']}",
                  f"  latency: median {t['median_ms']:.4f} ms, mean {t['mean_ms']:.4f} ms, min {t['min_ms']:.4f} ms, "
                  f"p90 {t['p90_ms']:.4f} ms, p99 {t['p99_ms']:.4f} ms, CoV {t['cov']:.1%} over {t['runs']} runs",
                  f"  throughput: {result['throughput_per_s']:.1f} inferences/s (sustained: 1 / mean)"], as_json)


@click.command()
@click.argument("folder", type=click.Path(file_okay=False))
@json_option
def report(folder: str, as_json: bool) -> None:
    """Regenerate report.md and its plots for an export folder or a search run."""
    from nas2deploy.report import regenerate

    path = regenerate(folder)
    emit({"report": str(path)}, f"wrote {path}", as_json)
