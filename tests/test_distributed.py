"""Distributed search on torch.distributed: two CPU processes (gloo) launched by torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import synthetic_table

from nas2deploy.spaces import make_space

WORKER = str(Path(__file__).with_name("dist_worker.py"))
SPACES = {"densenas": {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1},
          "dcnas": {"input_size": 64, "layers": 4, "base_width": 8, "num_classes": 6, "head_width": 16}}


@pytest.mark.slow
@pytest.mark.parametrize("space", sorted(SPACES))
def test_two_ranks_stay_identical_and_match_one_process(tmp_path, space):
    table = tmp_path / "t.json"
    synthetic_table(make_space(space, SPACES[space])).save(table)
    (tmp_path / "dist").mkdir()
    (tmp_path / "single").mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           WORKER, str(table), str(tmp_path / "dist"), "1", space]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # The same global batch in one process, as two micro-batches (what each rank's BN sees), on
    # one thread as torchrun's workers run: identical arithmetic, so identical results.
    single = subprocess.run([sys.executable, WORKER, str(table), str(tmp_path / "single"), "2", space],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-2000:]
    r0 = torch.load(tmp_path / "dist" / "arch_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "dist" / "arch_rank1.pt", weights_only=True)
    one = torch.load(tmp_path / "single" / "arch_rank0.pt", weights_only=True)
    for a, b in zip(r0, r1):
        assert torch.equal(a, b), "ranks diverged"
    assert max(float(a.abs().max()) for a in one) > 0.02  # the search did move alpha and beta
    for a, b in zip(r0, one):  # tolerance: none
        assert torch.equal(a, b), float((a - b).abs().max())
