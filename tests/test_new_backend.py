"""A new backend is one module and its registration: a backend with one option of its own,
defined here, profiles, exports and benches through the command line, its option recorded in
tables and matched when they are merged, without a line of nas2deploy changed; and an installed
package's backend is found through its entry point.

The backend: ONNX Runtime on the CPU with its threads' spinning chosen (``--ort-spin``): when
they spin between runs a session answers sooner and burns a core while idle, which is a
measurement condition a table must record.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nas2deploy.backends import BACKENDS, Backend, BackendOption, BackendSettings, OnnxModel, Runner, TorchModule
from nas2deploy.cli import cli

TINY = ["--input-size", "32", "--width-mult", "0.25", "--num-classes", "10", "--max-stack-layers", "0"]


class SpinningOnnxRuntime(Backend):
    name = "ort-spin"
    devices = ("cpu",)
    precisions = ("fp32",)
    options = (BackendOption("ort_spin", "flag", False, "Let ONNX Runtime's threads spin between runs.", identity=True),)

    def check_available(self, settings: BackendSettings) -> None:
        import onnxruntime  # noqa: F401

    def version(self) -> str:
        import onnxruntime

        return f"{onnxruntime.__version__}"

    def open(self, settings: BackendSettings, artifact: Any) -> Runner:
        import onnxruntime as ort

        from nas2deploy.backends.onnx import check_onnx, onnx_from_module
        from nas2deploy.backends.onnxruntime import OnnxRuntimeRunner

        if isinstance(artifact, TorchModule):
            artifact = onnx_from_module(artifact, settings.batch)
        elif not isinstance(artifact, OnnxModel):
            artifact = OnnxModel(check_onnx(artifact.path.read_bytes(), artifact.source), artifact.source)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.option("ort_spin") else "0")
        session = ort.InferenceSession(artifact.data, options, providers=["CPUExecutionProvider"])
        return OnnxRuntimeRunner(session, settings.batch, source=artifact.source)


@pytest.fixture
def spinning():
    from nas2deploy.backends import register_backend

    register_backend(SpinningOnnxRuntime())
    yield
    BACKENDS.pop("ort-spin")


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result.output


@pytest.mark.slow
def test_a_backend_defined_outside_the_package_profiles_exports_and_benches(tmp_path, spinning):
    from nas2deploy.latency.table import LatencyTable
    from nas2deploy.spaces.tables import profile_command

    assert "--ort-spin" in run("profile", "--help") and "[--backend ort-spin]" in run("export", "--help")
    table = tmp_path / "spin.json"
    run("profile", *TINY, "--backend", "ort-spin", "--ort-spin", "--runs", "5", "--shard", "0/40", "--out", str(table))
    loaded = LatencyTable.load(table)
    assert loaded.measurement["backend"] == "ort-spin" and loaded.measurement["ort_spin"] is True
    from nas2deploy.spaces.tables import table_space

    assert "--backend ort-spin" in profile_command(loaded, table_space(loaded), "x.json").split(" --space")[1]
    assert "--ort-spin" in profile_command(loaded, table_space(loaded), "x.json")
    still = tmp_path / "still.json"
    run("profile", *TINY, "--backend", "ort-spin", "--runs", "5", "--shard", "1/40", "--out", str(still))
    out = run("lut", "merge", str(tmp_path / "m.json"), str(table), str(still), code=1)
    assert "ort_spin: True vs False" in out
    run("space", "sample", "densenas", "--lut", "latency_tables/densenas32_small_c10_ort_cpu_fp32_b1.json",
        "--max-stack-layers", "0", "--budget-ms", "0.5", "--fill", "0", "--count", "1", "--out", str(tmp_path / "nets"))
    arch = next((tmp_path / "nets").glob("*.json"))
    run("export", "--arch", str(arch), "--backend", "ort-spin", "--ort-spin", "--samples", "4", "--out", str(tmp_path / "e"))
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["passed"] and report["latency"]["ort-spin"]["settings"]["ort_spin"] is True
    assert any(c["candidate"] == "ort-spin" and c["passed"] for c in report["accuracy"]["comparisons"])
    bench = json.loads(run("bench", str(tmp_path / "e" / "model.onnx"), "--backend", "ort-spin", "--ort-spin",
                           "--runs", "5", "--json"))
    assert bench["settings"]["ort_spin"] is True and bench["timing"]["runs"] >= 5
    refused = run("profile", "--ort-spin", "--out", str(tmp_path / "t.json"), code=1)
    assert "--ort-spin applies to --backend ort-spin only; --backend onnxruntime would ignore it" in refused


def test_an_installed_packages_backend_is_registered_through_its_entry_point(tmp_path, monkeypatch):
    from nas2deploy.backends.registry import ENTRY_POINTS, register_backend
    from nas2deploy.plugins import load_entry_points

    (tmp_path / "spin_plugin.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_new_backend import SpinningOnnxRuntime
    """))
    dist = tmp_path / "spin_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: spin-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINTS}]\nort-spin = spin_plugin:SpinningOnnxRuntime\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_entry_points(ENTRY_POINTS, Backend, register_backend)
        assert type(BACKENDS["ort-spin"]).__name__ == "SpinningOnnxRuntime"
        assert BackendSettings("ort-spin", options={"ort_spin": True}).describe()["ort_spin"] is True
    finally:
        BACKENDS.pop("ort-spin", None)
        sys.modules.pop("spin_plugin", None)
