"""Files written by the 0.1.0 release load and give the same results: its search runs (DenseNAS
and DCNAS checkpoints), a DPC study (Optuna journal, ``study.json``, re-ranking journal), an
export folder, and the shipped tables and architectures. ``tests/fixtures/release-0.1.0`` holds
what that release wrote (its README gives the commands) and ``expected.json`` what it computed
from them; a change that moves a key, a module or a format must keep these loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from nas2deploy.cli import cli
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import load_arch

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"
SHIPPED = Path(__file__).resolve().parents[1] / "latency_tables"
EXPECTED = json.loads((RELEASE / "expected.json").read_text())


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A copy of the release's files as the current folder (their paths are relative to it)."""
    folder = tmp_path / "release"
    shutil.copytree(RELEASE, folder)
    monkeypatch.chdir(folder)
    return folder


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("table", sorted(EXPECTED["predictions"]))
def test_tables_predict_the_release_networks_as_the_release_did(table, release):
    path = SHIPPED / table if (SHIPPED / table).exists() else release / table
    loaded = LatencyTable.load(path)
    for arch, (raw, calibrated) in EXPECTED["predictions"][table].items():
        prediction = loaded.predict(load_arch(arch))
        assert prediction.raw_ms == pytest.approx(raw, rel=1e-12)
        assert prediction.calibrated_ms == (None if calibrated is None else pytest.approx(calibrated, rel=1e-12))


@pytest.mark.parametrize("run_dir, budget, derived", [("run-densenas", "4.0", "derived-densenas.json"),
                                                      ("run-dcnas", "5.0", "derived-dcnas.json"),
                                                      ("run-dcnas", None, "derived-dcnas-free.json")])
def test_release_search_runs_derive_the_same_networks(release, run_dir, budget, derived):
    out = release / "again.json"
    run("derive", run_dir, *(["--budget-ms", budget] if budget else []), "--out", str(out))
    mine, theirs = json.loads(out.read_text()), json.loads((release / derived).read_text())
    assert {**mine, "name": ""} == {**theirs, "name": ""}


def test_release_search_runs_and_exports_regenerate_their_reports(release):
    for folder in ("run-densenas", "run-dcnas", "export-densenas"):
        assert "report.md" in run("report", folder)
        assert (release / folder / "report.md").stat().st_size > 0


def test_a_release_export_verifies_and_benches(release):
    out = json.loads(run("bench", "export-densenas/model.onnx", "--runs", "3", "--json"))
    assert out["batch"] == 1 and out["timing"]["runs"] >= 3


def test_a_release_dpc_study_reports_and_opens(release):
    pytest.importorskip("optuna")
    from nas2deploy.spaces import make_space

    run("report", "study-dpc")
    report = (release / "study-dpc" / "report.md").read_text()
    assert "8 trials: 7 trained, 1 over the budget" in report and "Chosen: trial 0" in report
    from nas2deploy.search.blackbox.storage import open_storage_study
    from nas2deploy.search.blackbox.study import ranked_candidates
    from nas2deploy.spaces import get_space

    study = open_storage_study("study-dpc/study.log", "dpc")
    assert [t.state.name for t in study.get_trials()] == EXPECTED["study_states"]
    space = make_space("dpc", json.loads((release / "study-dpc" / "study.json").read_text())["space"])
    adapter = get_space("dpc").study
    assert adapter is not None
    # every trained cell of that study scored the same: that release ranked them by trial number
    # (EXPECTED["study_candidates"]), ties now go to the faster cell
    assert sorted(EXPECTED["study_candidates"]) == [0, 1, 2, 3, 4, 6, 7]
    assert [c.trial for c in ranked_candidates(study, adapter, space)] == [7, 2, 3, 6, 0, 1, 4]
