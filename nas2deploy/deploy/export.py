"""``nas2deploy export``: an architecture and its weights become a checked, measured export folder.

The steps are separate pieces, in Polygraphy's manner: *load* (build the network, export and
check the ONNX graph, build the TensorRT engine), *run* (every runner infers the same real
inputs), *compare* (``deploy.compare``) and *measure* (the shared timing harness). The folder:

    model.onnx      fp32 graph, opset 17, checked (onnx.checker full check) with inferred shapes
    model.int8.onnx with --precision int8: the graph quantised (QDQ), calibrated on training images
    model.engine    TensorRT engine (with --backend tensorrt), model.engine.json its platform
    model.pt2       AOTInductor package (with --backend aoti), model.pt2.json its platform
    arch.json       the architecture, weights.pt its weights (a state dict)
    report.json     accuracy comparisons, latency, prediction, budget, timings of each step
    report.md       the same for people, with PNG plots (see ``nas2deploy.report``)

The accuracy reference is PyTorch on the CPU in fp32. ONNX Runtime and TensorRT are compared
with it on all inputs; the ONNX reference evaluator on the first few (it is slow) as an
implementation that shares no kernel with either. A failed check writes the report and then
raises ``CheckFailed``, so the command exits non-zero with the report on disk.

INT8 (``--precision int8``, ONNX Runtime): the fp32 graph is quantised (``backends.quantize``)
on ``calibration_images`` of the calibration data's training split, never the test images the
check scores; ONNX Runtime runs and is timed on the quantised graph, the fp32 graph is still
checked on ONNX Runtime (as ``onnxruntime-fp32``) and timed beside it for the speed-up, and the
quantised network's accuracy drop against the fp32 reference is judged by ``max_drop``: over
it, the export is flagged with a warning (and fails with ``strict``), since a quantised network
losing accuracy is a result to weigh, not a broken export.

Latency: each requested backend is measured with the harness the latency table used. When the
table was measured on this machine with this backend, the run also re-measures the table's
reference op, so the prediction is corrected for drift since profiling (as ``lut validate``
does) and the report sets measured against calibrated x drift.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from nas2deploy.backends import (
    BACKENDS,
    INDEPENDENT_CHECKER,
    ONNX_CHECKER,
    REFERENCE,
    Artifact,
    BackendSettings,
    OnnxModel,
    TorchModule,
    open_runner,
)
from nas2deploy.backends.onnx import OPSET, check_onnx, export_onnx
from nas2deploy.backends.timing import TimingSettings, measure
from nas2deploy.deploy.compare import Comparison, compare_outputs, run_all
from nas2deploy.deploy.inputs import accuracy_inputs, calibration_images
from nas2deploy.errors import UserError
from nas2deploy.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    claim_folder,
    folder_lock,
    read_json,
    sha256_file,
)
from nas2deploy.latency.measure import DriftTracker, settings_from_table, timing_from_table
from nas2deploy.latency.network_summary import arch_summary
from nas2deploy.latency.summary import table_warnings
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network, save_arch
from nas2deploy.train import load_weights, save_weights
from nas2deploy.validate import Field

REPORT_FORMAT = "nas2deploy.export_report"
#: The files whose SHA-256 the report records (``bench`` and ``export --weights`` verify them).
ARTIFACTS = ("weights.pt", "model.onnx", "model.int8.onnx", "model.engine", "model.pt2")
#: The fp32 graph on ONNX Runtime, checked and timed beside an int8 export.
FP32_GRAPH = "onnxruntime-fp32"


class CheckFailed(UserError):
    """An accuracy check failed; the export folder and its report are written."""


class OverBudget(UserError):
    """With ``strict``: a backend measured above the budget; the export folder and its report are written."""


@dataclass(frozen=True)
class ExportOptions:
    backends: tuple[str, ...] = (ONNX_CHECKER,)
    device: str = "cpu"  # where the backends run (TensorRT always on the GPU)
    precision: str = "fp32"  # of backends that build at a precision (TensorRT engines); the others run fp32
    batch: int = 1
    dynamic_batch: bool = False
    data: str | None = None
    images: str | None = None
    samples: int = 100
    reference_samples: int = 4
    lut: str | None = None
    budget_ms: float | None = None
    threads: int = 1
    #: Options of the backends by name (``Backend.options``): each backend takes those it declares.
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    force: bool = False
    #: Fail (after writing the folder) when a backend measures above the budget, or an int8
    #: network loses more than ``max_drop``.
    strict: bool = False
    #: int8: the data whose training images calibrate the quantisation, how many, and how.
    calibration_data: str | None = None
    calibration_images: int = 512
    calibrator: str = "minmax"
    #: int8: the points of top-1 (mIoU) the quantised network may lose before it is flagged.
    max_drop: float = 1.0
    #: int8: write the graph even where the quantiser leaves operators in float (they run in fp32).
    allow_float_ops: bool = False


def recorded_sha256(path: Path) -> tuple[str, Path] | None:
    """The SHA-256 that the export report beside ``path`` records for it, and that report."""
    report = path.parent / "report.json"
    if not report.is_file():
        return None
    doc = Field(read_json(report, "export report"), f"export report {report}", "export again")
    files = doc.get("files")
    entry = files.get(path.name) if files is not None else None
    if entry is None:
        return None
    digest = entry.hexdigest(64, "SHA-256 digest")
    return digest, report


def verify_artifact(path: Path) -> None:
    """Refuse an exported file (weights, ONNX model, engine) that differs from what ``export``
    wrote, when the report beside it records its SHA-256: a flipped byte in a weights or ONNX
    file can still load and run, and both runtimes would then agree on the corrupted values."""
    recorded = recorded_sha256(path)
    if recorded is not None and sha256_file(path) != recorded[0]:
        raise UserError(f"{path}: its SHA-256 differs from the one {recorded[1]} recorded at export; the file was "
                        "modified or corrupted: export it again")


def refuse_unused_options(o: ExportOptions) -> None:
    """An option that none of the chosen backends reads is refused, not ignored (an fp16 request
    checked against fp32 thresholds would look like a passing fp16 export)."""
    impls = [BACKENDS[b] for b in o.backends]
    chosen = " ".join(f"--backend {b}" for b in o.backends)
    if o.precision not in (ExportOptions.precision, "int8") and not any(b.uses_precision for b in impls):
        building = [name for name, b in BACKENDS.items() if b.uses_precision]
        raise UserError(f"--precision {o.precision} shapes only what builds at a precision (--backend {' or '.join(building)}); "
                        f"{chosen} runs the fp32 graph: leave --precision out")
    for name, value in o.backend_options.items():
        readers = [b for b in BACKENDS.values() if any(opt.name == name and value != opt.default for opt in b.options)]
        if readers and not any(b in impls for b in readers):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} applies to --backend {' or '.join(b.name for b in readers)} only; {chosen} would "
                            f"ignore it: leave {flag} out")
    if o.data and o.images:
        raise UserError("--images and --data both name the accuracy check's inputs: give one")
    int8 = [b for b in o.backends if "int8" in BACKENDS[b].precisions]
    if o.precision == "int8" and int8 != list(o.backends):
        runs_int8 = " or ".join(n for n, b in BACKENDS.items() if "int8" in b.precisions)
        raise UserError(f"--precision int8 runs on --backend {runs_int8}; {chosen} would run the fp32 graph: export each apart")
    if o.precision == "int8" and o.dynamic_batch:
        raise UserError("--precision int8 quantises the graph at one batch: leave out --dynamic-batch")
    if o.precision == "int8" and not o.calibration_data:
        raise UserError("--precision int8 quantises on real images: give --calibration-data (the training data, e.g. "
                        "--calibration-data DIR/cifar10)")
    if o.precision != "int8" and (o.calibration_data or o.calibrator != ExportOptions.calibrator or o.allow_float_ops):
        raise UserError("--calibration-data, --calibrator and --allow-float-ops shape an int8 export: give --precision "
                        "int8, or leave them out")


def torch_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(c)) for c in np.array_split(x, max(1, len(x) // 64))]).numpy()


def _load_table(options: ExportOptions, arch: Network, say: Callable[[str], None]) -> LatencyTable | None:
    path = options.lut or arch.meta.get("lut")
    if not path:
        return None
    if not Path(path).exists():
        if options.lut:
            raise UserError(f"--lut {path}: no such file")
        say(f"note: the table recorded in the architecture ({path}) is not here; no prediction to compare with")
        return None
    table = LatencyTable.load(path)
    profiled = table.measurement.get("precision", "fp32")
    if profiled != options.precision:  # quantisation reorders ops' times: the other precision's table predicts nothing
        if options.lut:
            raise UserError(f"--lut {path} was profiled at {profiled}, this export is {options.precision}: give a "
                            f"table profiled at {options.precision} (nas2deploy profile --precision {options.precision}), "
                            f"or export at --precision {profiled}")
        say(f"note: the architecture's table {path} was profiled at {profiled}, this export is {options.precision}; "
            f"no prediction to compare with (give --lut a table profiled at {options.precision})")
        return None
    return table


class Exporter:
    """One export: holds the network, its graph and the report as the steps fill it."""

    def __init__(self, arch: Network, weights: str | None, out: str | Path, options: ExportOptions,
                 say: Callable[[str], None] = lambda line: None, warn: Callable[[str], None] | None = None):
        self.arch, self.weights, self.out, self.options, self.say = arch, weights, Path(out), options, say
        self.warn_line = warn or (lambda line: say(f"warning: {line}"))
        self.report: dict[str, Any] = {"format": REPORT_FORMAT, "version": 1, "arch": arch.name, "steps_s": {},
                                       "warnings": []}
        self.comparisons: list[Comparison] = []
        self.artifacts: dict[str, Artifact] = {}

    def warn(self, line: str) -> None:
        """Say ``line`` as a warning and keep it in the report (report.json and report.md)."""
        self.report["warnings"].append(line)
        self.warn_line(line)

    def _step(self, name: str, start: float) -> None:
        self.report["steps_s"][name] = round(time.perf_counter() - start, 3)

    def settings(self, backend: str) -> BackendSettings:
        """Where and how ``backend`` runs the export: the options' device and batch, and their
        precision when the backend builds at a precision (TensorRT), else fp32; ``FP32_GRAPH``: the
        fp32 graph on ONNX Runtime's CPU provider, beside an int8 export."""
        if backend == FP32_GRAPH:
            return dataclasses.replace(self.settings(ONNX_CHECKER), precision="fp32", device="cpu")
        o, impl = self.options, BACKENDS[backend]
        own = {opt.name for opt in impl.options}
        built = impl.uses_precision or (o.precision == "int8" and "int8" in impl.precisions)
        return BackendSettings(backend=backend, device=o.device, batch=o.batch, threads=o.threads,
                               precision=o.precision if built else "fp32",
                               options={k: v for k, v in o.backend_options.items() if k in own})

    def run(self) -> dict[str, Any]:
        """The export (``OUT/.lock`` held from before the folder is checked to the last file)."""
        with folder_lock(self.out, f"export {self.out}"):
            return self._run()

    def _run(self) -> dict[str, Any]:
        o = self.options
        refuse_unused_options(o)
        claim_folder(self.out, o.force, own=(".lock",))  # before any work; written only once the inputs are known good
        for b in o.backends:  # fail on a missing stack, or what a backend cannot build, before any work
            self.settings(b).check_available()
            if o.dynamic_batch and not BACKENDS[b].dynamic_batch:
                raise UserError(f"--backend {b} builds for one batch: leave out --dynamic-batch (or export once per batch)")
        table = _load_table(o, self.arch, self.say)
        if table is not None:
            table.predict(self.arch)  # names any op the table lacks before the long steps
            for line in table_warnings(table):  # a drifted or noisy table: its prediction is said with a caveat
                self.warn(line)
        # bad data or weights fail before any file is written
        inputs = accuracy_inputs(self.arch, o.data, o.images, o.samples)
        calibration = calibration_images(self.arch, o.calibration_data, o.calibration_images, o.batch) \
            if o.precision == "int8" else None
        t_all = time.perf_counter()
        model = self._load()
        self.out.mkdir(parents=True, exist_ok=True)
        save_arch(self.arch, self.out / "arch.json")
        save_weights(model, self.out / "weights.pt")
        self.artifacts = self._export(model, calibration)
        self._check_accuracy(model, *inputs)
        self.report["steps_s"]["export_and_check"] = round(time.perf_counter() - t_all, 3)
        self._measure(table)
        self._finish(table)
        failed = [c for c in self.comparisons if not c.passed and not c.lossy]
        if failed:
            raise CheckFailed(f"accuracy check failed ({failed[0].line()}); report: {self.out / 'report.md'}")
        lossy = [c for c in self.comparisons if not c.passed and c.lossy]
        if o.strict and lossy:
            raise CheckFailed(f"--strict: the int8 network loses more than --max-drop {o.max_drop:g} points "
                              f"({lossy[0].line()}); report: {self.out / 'report.md'}")
        over = self.report.get("over_budget", [])
        if o.strict and over:
            raise OverBudget(f"--strict: {over[0]}; report: {self.out / 'report.md'}")
        return self.report

    # -- load ------------------------------------------------------------------------------------
    def _load(self) -> nn.Module:
        t = time.perf_counter()
        if self.weights:
            verify_artifact(Path(self.weights))
            model = load_weights(self.arch, self.weights)
            self.report["weights"] = str(self.weights)
        else:
            torch.manual_seed(0)
            model = self.arch.build()
            self.report["weights"] = None
            self.say("note: no --weights; exporting freshly initialised weights (the checks still compare runtimes)")
        model.eval()
        self._step("load", t)
        return model

    def _export(self, model: nn.Module, calibration: np.ndarray | None) -> dict[str, Artifact]:
        """model.onnx (and with ``calibration`` its int8 graph, model.int8.onnx), then what each
        backend deploys besides (TensorRT: its engine; AOTInductor: its package); returns the
        artifact each backend runs: its own, else the (int8) ONNX model, else the torch module."""
        t = time.perf_counter()
        o, size = self.options, self.arch.input_size
        onnx_bytes = check_onnx(export_onnx(model, (o.batch, 3, size, size), "fp32", o.dynamic_batch), "model.onnx",
                                input_shape=(3, size, size))
        atomic_write_bytes(self.out / "model.onnx", onnx_bytes)
        self.report["onnx"] = {"file": "model.onnx", "opset": OPSET, "bytes": len(onnx_bytes),
                               "batch": "dynamic" if o.dynamic_batch else o.batch, "checked": "onnx.checker full_check + shape inference"}
        self._step("onnx", t)
        self.say(f"wrote {self.out / 'model.onnx'} ({len(onnx_bytes) / 1e6:.1f} MB, opset {OPSET}, checked)")
        onnx_model, module = OnnxModel(onnx_bytes, "model.onnx"), TorchModule(model, (3, size, size), self.arch.name)
        artifacts: dict[str, Artifact] = {}
        quantized = None
        if calibration is not None:
            quantized = self._quantize(onnx_bytes, calibration)
            artifacts[FP32_GRAPH] = onnx_model
        for name in {*o.backends, ONNX_CHECKER, INDEPENDENT_CHECKER}:
            backend, t = BACKENDS[name], time.perf_counter()
            deployed = backend.deploy(self.settings(name), module, self.out,
                                      (1, o.batch, max(o.batch, 32)) if o.dynamic_batch else None,
                                      quantized) if name in o.backends else None
            if deployed is not None:
                artifacts[name], self.report.setdefault("deployed", {})[name] = deployed
                self._step(f"build_{name}", t)
            else:
                graph = quantized if quantized is not None and self.settings(name).precision == "int8" else onnx_model
                artifacts[name] = graph if ".onnx" in backend.suffixes else module
        return artifacts

    def _quantize(self, onnx_bytes: bytes, calibration: np.ndarray) -> OnnxModel:
        """model.int8.onnx: the fp32 graph quantised to QDQ on the calibration images, checked."""
        from nas2deploy.backends.quantize import float_ops, quantize_qdq

        o, size, t = self.options, self.arch.input_size, time.perf_counter()
        # TensorRT takes only symmetric int8 activations; ONNX Runtime's CPU kernels prefer uint8
        activations = "int8" if "tensorrt" in o.backends else "uint8"
        quantized = quantize_qdq(onnx_bytes, calibration, o.batch, o.calibrator, activations)
        in_float = float_ops(quantized.data)
        if in_float:
            left = ", ".join(f"{op} x{n}" for op, n in sorted(in_float.items()))
            if not o.allow_float_ops:
                raise UserError(f"the int8 graph of {self.arch.name} leaves operators in float ({left}): ONNX Runtime's "
                                "quantiser has no integer kernel for them; give --allow-float-ops to write it with them "
                                "in fp32, or export at fp32")
            self.warn(f"the int8 graph runs {left} in float (--allow-float-ops)")
        data = check_onnx(quantized.data, "model.int8.onnx", input_shape=(3, size, size))
        atomic_write_bytes(self.out / "model.int8.onnx", data)
        self.report["quantization"] = {"file": "model.int8.onnx", "data": o.calibration_data, **quantized.describe(),
                                       "float_ops": in_float}
        self._step("quantize", t)
        self.say(f"wrote {self.out / 'model.int8.onnx'} ({len(data) / 1e6:.1f} MB, {o.calibrator} calibration on "
                 f"{quantized.images} training images of {o.calibration_data}, {quantized.seconds:.1f} s)")
        return OnnxModel(data, "model.int8.onnx")

    # -- run and compare -------------------------------------------------------------------------
    def _check_accuracy(self, model: nn.Module, x: np.ndarray, labels: np.ndarray | None, where: str) -> None:
        """PyTorch fp32 on the CPU is the reference. Compared with it: every exported ONNX file on
        ONNX Runtime (on the deployed device, or the CPU), the ONNX reference evaluator on the
        first few inputs, and every other deployed backend that does not run PyTorch itself."""
        t = time.perf_counter()
        o = self.options
        reference = torch_outputs(model, x)
        checks = {ONNX_CHECKER: dataclasses.replace(self.settings(ONNX_CHECKER), device=o.device if ONNX_CHECKER in o.backends else "cpu"),
                  INDEPENDENT_CHECKER: self.settings(INDEPENDENT_CHECKER)}
        checks.update({b: self.settings(b) for b in o.backends if BACKENDS[b].independent_of_torch and b not in checks})
        if FP32_GRAPH in self.artifacts:  # an int8 export: the fp32 graph is checked too
            checks[FP32_GRAPH] = self.settings(FP32_GRAPH)
        counts = {name: min(o.reference_samples, len(x)) if name == INDEPENDENT_CHECKER else len(x) for name in checks}
        for name, settings in checks.items():
            with open_runner(settings, self.artifacts[name]) as runner:
                out = run_all({name: (runner, counts[name])}, x)[name]
            n = counts[name]
            self.comparisons.append(compare_outputs(reference[:n], out, settings.precision, REFERENCE, name,
                                                    None if labels is None else labels[:n], o.max_drop))
        self.report["accuracy"] = {"inputs": where, "samples": len(x), "comparisons": [c.to_dict() for c in self.comparisons]}
        self._step("accuracy", t)
        for c in self.comparisons:
            self.say(c.line())
            if not c.passed and c.lossy:
                lost = c.accuracy_drop if c.accuracy_drop is not None else (1 - c.top1_agreement) * 100
                self.warn(f"{c.candidate} (int8) loses {lost:.2f} points against the fp32 network, more than --max-drop "
                          f"{o.max_drop:g}: calibrate on more or other images (--calibration-images, --calibrator), or "
                          "deploy fp32")

    # -- measure ---------------------------------------------------------------------------------
    def _measure(self, table: LatencyTable | None) -> None:
        t = time.perf_counter()
        o = self.options
        table_settings = self._table_settings(table)
        results: dict[str, Any] = {}
        timed = [*o.backends, *([FP32_GRAPH] if FP32_GRAPH in self.artifacts else [])]
        for backend in timed:
            settings = self.settings(backend)
            timing = TimingSettings()
            drift = None
            same = table_settings is not None and (table_settings.backend, table_settings.batch,
                                                   table_settings.precision) == (backend, o.batch, settings.precision)
            if table is not None and table_settings is not None and same:
                settings = table_settings
                timing = timing_from_table(table)
                with DriftTracker(table, settings, timing) as tracker:
                    drift = tracker.update()
            with open_runner(settings, self.artifacts[backend]) as runner:
                stats = measure(runner, timing).stats
            entry: dict[str, Any] = {"settings": settings.describe(), "timing": stats.to_dict(),
                                     "throughput_per_s": stats.throughput_per_s(o.batch)}
            if drift is not None and table is not None:
                pred = table.predict(self.arch, drift)
                entry["prediction"] = {"table": table.name, "drift": drift, "raw_ms": pred.raw_ms,
                                       "calibrated_ms": pred.calibrated_ms,
                                       "measured_over_predicted": stats.median_ms / pred.best_ms}
            results[backend] = entry
            if timing.unstable(stats):  # the harness's own rule: the median's interval, or the runs' CoV
                spread = f"its median's 95% interval stayed +-{stats.ci_rel or float('inf'):.1%} (target {timing.target_ci:.1%})" \
                    if timing.target_ci > 0 else f"the runs varied by CoV {stats.cov:.0%} (above {timing.max_cov:.0%})"
                self.warn(f"{backend}: {spread}: the machine was busy and the median may be off; measure again on a "
                          "quiet machine (nas2deploy bench)")
            self.say(f"{backend}: median {stats.median_ms:.3f} ms (p90 {stats.p90_ms:.3f}, CoV {stats.cov:.1%})"
                     + (f"; predicted {entry['prediction']['calibrated_ms'] or entry['prediction']['raw_ms']:.3f} ms "
                        f"(x{entry['prediction']['measured_over_predicted']:.3f})" if "prediction" in entry else ""))
        if FP32_GRAPH in results:
            int8 = next(b for b in o.backends if self.settings(b).precision == "int8")
            speedup = results[FP32_GRAPH]["timing"]["median_ms"] / results[int8]["timing"]["median_ms"]
            self.report["quantization"]["speedup_over_fp32"] = round(speedup, 3)
            self.say(f"int8 on {int8}: {speedup:.2f}x the speed of the fp32 graph")
        self.report["latency"] = results
        self._step("latency", t)

    def _table_settings(self, table: LatencyTable | None) -> BackendSettings | None:
        if table is None:
            return None
        try:
            return settings_from_table(table)
        except UserError as exc:
            self.warn(f"not comparing with the table's prediction: {exc}")
            self.report["prediction_skipped"] = str(exc)
            return None

    # -- report ----------------------------------------------------------------------------------
    def _finish(self, table: LatencyTable | None) -> None:
        from nas2deploy.report.export_report import write_export_report

        budget = self.options.budget_ms or self.arch.meta.get("budget_ms")
        self.report["budget_ms"] = budget
        self.report["over_budget"] = []
        for backend, entry in self.report["latency"].items() if budget else ():
            if backend == FP32_GRAPH:
                continue  # timed for the speed-up, not deployed
            median = entry["timing"]["median_ms"]
            if median > budget:
                line = f"{backend} measured {median:.3f} ms, {median / budget:.2f}x the {budget:g} ms budget"
                self.report["over_budget"].append(line)
                self.warn(line)
        self.report["summary"] = arch_summary(self.arch, table)
        self.report["passed"] = all(c.passed for c in self.comparisons)
        self.report["files"] = {name: sha256_file(self.out / name) for name in ARTIFACTS if (self.out / name).exists()}
        atomic_write_json(self.out / "report.json", self.report)
        write_export_report(self.out, self.report, self.arch)
