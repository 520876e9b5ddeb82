import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST

from nas2deploy.backends import BackendSettings
from nas2deploy.errors import UserError
from nas2deploy.latency.profile import journal_path, profile_space
from nas2deploy.latency.table import LatencyTable, merge_tables


def test_profile_a_shard_into_a_table(tmp_path, small_space):
    out = tmp_path / "t.json"
    seen = []
    table, stats = profile_space(small_space, BackendSettings(), out, FAST, shard=(0, 30),
                                 progress=lambda d, n, k: seen.append((d, n)))
    expected = small_space.op_specs()[0::30]
    assert sorted(table.entries) == sorted(s.key for s in expected)
    assert seen[-1] == (len(expected), len(expected))
    assert table.meta["shard"] == "0/30" and table.meta["measurement"]["threads"] == 1
    assert table.reference and "end_stats" in table.reference
    assert not journal_path(out).exists()
    assert 0 < stats.timed_s < stats.wall_s
    again = LatencyTable.load(out)
    assert again.entries == table.entries


def test_shards_merge_into_the_whole_space(tmp_path, small_space):
    parts = []
    for i in range(2):
        table, _ = profile_space(small_space, BackendSettings(), tmp_path / f"s{i}.json", FAST, shard=(i, 40))
        parts.append(table)
    merged = merge_tables(parts)
    wanted = small_space.op_specs()
    assert set(merged.entries) == {s.key for s in wanted[0::40]} | {s.key for s in wanted[1::40]}


@pytest.mark.slow
def test_resume_after_kill_9_loses_and_repeats_nothing(tmp_path):
    out = tmp_path / "t.json"
    journal = journal_path(out)
    cmd = [sys.executable, "-m", "nas2deploy", "profile", "--input-size", "32", "--width-mult", "0.5",
           "--num-classes", "10", "--max-stack-layers", "1", "--runs", "200", "--shard", "0/15", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # header + reference + at least 3 ops
        if journal.exists() and len(journal.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the table appears only when the profile is complete"
    before = [json.loads(line) for line in journal.read_text().splitlines()[2:] if line.endswith("}")]
    assert len(before) >= 3
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} resumed from the journal" in result.stdout or f"{len(before) + 1} resumed" in result.stdout
    table = LatencyTable.load(out)
    for record in before:  # journaled measurements are kept as they were, not re-taken
        key = next(k for k, e in table.entries.items() if e.spec.to_dict() == record["spec"])
        assert table.entries[key].stats.to_dict() == record["stats"]
    assert not journal.exists()


def test_resume_with_other_settings_is_refused(tmp_path, small_space):
    out = tmp_path / "t.json"
    journal = journal_path(out)
    journal.write_text(json.dumps({"header": {"measurement": {"batch": 8}}}) + "\n")
    with pytest.raises(UserError, match=r"written under different settings \(.*measurement.batch: 8 vs 1;.*the journal's first"):
        profile_space(small_space, BackendSettings(), out, FAST, shard=(0, 30))


def test_a_torn_journal_line_is_cut_before_resuming(tmp_path, small_space):
    out = tmp_path / "t.json"
    journal = journal_path(out)
    profile_space(small_space, BackendSettings(), out, FAST, shard=(0, 60))
    lines = []
    table = LatencyTable.load(out)
    out.unlink()
    header = {"measurement": table.meta["measurement"], "timing": table.meta["timing"],
              "space": table.meta["space"], "shard": table.meta["shard"]}
    first = next(iter(table.entries.values()))
    lines = [json.dumps({"header": header}), json.dumps({"reference": table.reference}), json.dumps(first.to_dict())]
    journal.write_text("\n".join(lines) + "\n" + '{"spec": {"type": "mbc')  # killed mid-write
    resumed, stats = profile_space(small_space, BackendSettings(), out, FAST, shard=(0, 60))
    assert stats.resumed == 1 and resumed.entries[first.spec.key] == first
    assert set(resumed.entries) == set(table.entries)


def test_a_profile_records_the_reference_drift_and_a_large_one_is_flagged(tmp_path, small_space):
    from nas2deploy.latency.summary import table_warnings

    table, _ = profile_space(small_space, BackendSettings(), tmp_path / "t.json", FAST, shard=(0, 15))
    drift = LatencyTable.load(tmp_path / "t.json").meta["profile"]["drift"]
    assert len(drift) == 10 and all(ratio > 0 for _, ratio in drift)
    assert [n for n, _ in drift] == sorted(n for n, _ in drift)
    table.meta["profile"]["drift"] = [[10, 1.02], [20, 1.18]]  # injected: the machine slowed by 18%
    assert any("drifted by +18%" in line for line in table_warnings(table))
    table.meta["profile"]["drift"] = [[10, 1.02], [20, 0.97]]
    assert not any("drifted" in line for line in table_warnings(table))


def test_the_helper_process_prepares_what_the_backend_would(small_space):
    """The prefetcher's artifacts are the backend's own prepare() (an ONNX graph per op, named by
    its key), made in another process; a backend with nothing to prepare gets no helper."""
    from nas2deploy.backends import OnnxModel
    from nas2deploy.latency.prefetch import Prefetcher

    specs = small_space.op_specs()[:3]
    with Prefetcher(BackendSettings(), specs, min_ops=1) as prefetch:
        assert prefetch.helper is not None
        got = [prefetch.artifact(s) for s in specs]
    assert all(isinstance(a, OnnxModel) and a.source == s.key and len(a.data) > 100 for a, s in zip(got, specs))
    with Prefetcher(BackendSettings(backend="torch"), specs, min_ops=1) as prefetch:
        assert prefetch.helper is None
    with Prefetcher(BackendSettings(), specs) as prefetch:  # 3 ops: a helper would cost more than it saves
        assert prefetch.helper is None
