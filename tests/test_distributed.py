"""Distributed search on torch.distributed: two CPU processes (gloo) launched by torchrun."""

import pytest
from support.ranks import SPACES, compare, describe


@pytest.mark.slow
@pytest.mark.parametrize("space", sorted(SPACES))
def test_two_ranks_stay_identical_and_match_one_process(tmp_path, space):
    """On the CPU (gloo), bit for bit: the same global batch in one process as two micro-batches
    (what each rank's BN sees), on one thread as torchrun's workers run, is identical arithmetic."""
    d = compare(space, "cpu", tmp_path)
    print(describe(space, "cpu", d))
    assert d["ranks"] == 0, "ranks diverged"
    assert d["moved"] > 0.02  # the search did move alpha and beta
    assert d["vs_single"] == d["arch_vs_single"] == 0  # tolerance: none
