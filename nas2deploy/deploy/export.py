"""``nas2deploy export``: an architecture and its weights become a checked, measured export folder.

The steps are separate pieces, in Polygraphy's manner: *load* (build the network, export and
check the ONNX graph, build the TensorRT engine), *run* (every runner infers the same real
inputs), *compare* (``deploy.compare``) and *measure* (the shared timing harness). The folder:

    model.onnx      fp32 graph, opset 17, checked (onnx.checker full check) with inferred shapes
    model.engine    TensorRT engine (with --backend tensorrt), model.engine.json its platform
    model.pt2       AOTInductor package (with --backend aoti), model.pt2.json its platform
    arch.json       the architecture, weights.pt its weights (a state dict)
    report.json     accuracy comparisons, latency, prediction, budget, timings of each step
    report.md       the same for people, with PNG plots (see ``nas2deploy.report``)

The accuracy reference is PyTorch on the CPU in fp32. ONNX Runtime and TensorRT are compared
with it on all inputs; the ONNX reference evaluator on the first few (it is slow) as an
implementation that shares no kernel with either. A failed check writes the report and then
raises ``CheckFailed``, so the command exits non-zero with the report on disk.

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
from nas2deploy.deploy.inputs import accuracy_inputs
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
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network, save_arch
from nas2deploy.train import load_weights, save_weights
from nas2deploy.validate import Field

REPORT_FORMAT = "nas2deploy.export_report"
#: The files whose SHA-256 the report records (``bench`` and ``export --weights`` verify them).
ARTIFACTS = ("weights.pt", "model.onnx", "model.engine", "model.pt2")


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
    #: Fail (after writing the folder) when a backend measures above the budget.
    strict: bool = False


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
    digest = entry.str(max_len=64)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise entry.error("must be a SHA-256 digest (64 hex digits)")
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
    if o.precision != ExportOptions.precision and not any(b.uses_precision for b in impls):
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
    return LatencyTable.load(path)


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
        precision when the backend builds at a precision (TensorRT), else fp32."""
        o, impl = self.options, BACKENDS[backend]
        own = {opt.name for opt in impl.options}
        return BackendSettings(backend=backend, device=o.device, batch=o.batch, threads=o.threads,
                               precision=o.precision if impl.uses_precision else "fp32",
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
        # bad data or weights fail before any file is written
        inputs = accuracy_inputs(self.arch, o.data, o.images, o.samples)
        t_all = time.perf_counter()
        model = self._load()
        self.out.mkdir(parents=True, exist_ok=True)
        save_arch(self.arch, self.out / "arch.json")
        save_weights(model, self.out / "weights.pt")
        self.artifacts = self._export(model)
        self._check_accuracy(model, *inputs)
        self.report["steps_s"]["export_and_check"] = round(time.perf_counter() - t_all, 3)
        self._measure(table)
        self._finish(table)
        failed = [c for c in self.comparisons if not c.passed]
        if failed:
            raise CheckFailed(f"accuracy check failed ({failed[0].line()}); report: {self.out / 'report.md'}")
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

    def _export(self, model: nn.Module) -> dict[str, Artifact]:
        """model.onnx, then what each backend deploys besides (TensorRT: its engine; AOTInductor: its
        package); returns the artifact each backend runs: its own, else the ONNX model, else the
        torch module."""
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
        for name in {*o.backends, ONNX_CHECKER, INDEPENDENT_CHECKER}:
            backend, t = BACKENDS[name], time.perf_counter()
            deployed = backend.deploy(self.settings(name), module, self.out,
                                      (1, o.batch, max(o.batch, 32)) if o.dynamic_batch else None) if name in o.backends else None
            if deployed is not None:
                artifacts[name], self.report.setdefault("deployed", {})[name] = deployed
                self._step(f"build_{name}", t)
            else:
                artifacts[name] = onnx_model if ".onnx" in backend.suffixes else module
        return artifacts

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
        counts = {name: min(o.reference_samples, len(x)) if name == INDEPENDENT_CHECKER else len(x) for name in checks}
        for name, settings in checks.items():
            with open_runner(settings, self.artifacts[name]) as runner:
                out = run_all({name: (runner, counts[name])}, x)[name]
            n = counts[name]
            self.comparisons.append(compare_outputs(reference[:n], out, settings.precision, REFERENCE, name,
                                                    None if labels is None else labels[:n]))
        self.report["accuracy"] = {"inputs": where, "samples": len(x), "comparisons": [c.to_dict() for c in self.comparisons]}
        self._step("accuracy", t)
        for c in self.comparisons:
            self.say(c.line())

    # -- measure ---------------------------------------------------------------------------------
    def _measure(self, table: LatencyTable | None) -> None:
        t = time.perf_counter()
        o = self.options
        table_settings = self._table_settings(table)
        results: dict[str, Any] = {}
        for backend in o.backends:
            settings = self.settings(backend)
            timing = TimingSettings()
            drift = None
            if table is not None and table_settings is not None and (table_settings.backend, table_settings.batch) == (backend, o.batch):
                settings = table_settings
                timing = timing_from_table(table)
                with DriftTracker(table, settings, timing) as tracker:
                    drift = tracker.update()
            with open_runner(settings, self.artifacts[backend]) as runner:
                stats = measure(runner, timing).stats
            entry: dict[str, Any] = {"settings": settings.describe(), "timing": stats.to_dict(),
                                     "throughput_per_s": o.batch * 1000 / stats.median_ms}
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
