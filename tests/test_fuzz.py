"""Property-based input tests: mutated tables, archs, SegArchs, weights, ONNX models and search
configurations (``tests/support/mutations.py``) go through what the commands run on them; every
outcome is a valid object or a one-line UserError, never another exception, and a mutation that
breaks a rule is never accepted. Hypothesis draws the mutations; ``benchmarks/fuzz_inputs.py``
runs a thousand of them and prints the counts. ``make test`` draws 25 per kind (the default
profile, ``conftest.py``); ``pytest tests/test_fuzz.py --hypothesis-profile thorough`` draws 500."""

import random
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed (a bare GPU image)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from support.mutations import KINDS, Corpus, mutate, outcome


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return Corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("kind", KINDS)
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_a_mutated_file_is_used_or_refused_in_one_line(corpus, kind, seed):
    with tempfile.TemporaryDirectory() as tmp:
        mutant = mutate(kind, corpus, Path(tmp) / "m", random.Random(seed))
        result, message = outcome(mutant, corpus)
        assert result in ("accepted", "refused"), f"{mutant.what}: {result}: {message}"
        if mutant.must_refuse:
            assert result == "refused", f"{mutant.what} was accepted"
