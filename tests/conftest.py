"""Shared fixtures: a small DenseNAS space and timing settings fast enough for unit tests.

The backends here are real (ONNX Runtime and PyTorch on the CPU); only the number of timed
runs is reduced, since tests check correctness, not speed.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from nas2deploy.backends.timing import TimingSettings
from nas2deploy.spaces import make_space

try:
    from hypothesis import settings
except ImportError:  # a bare GPU image (benchmarks/gpu_check.sh): the property tests skip themselves
    pass
else:
    settings.register_profile("default", max_examples=25)
    settings.register_profile("thorough", max_examples=500)
    settings.load_profile("default")

# Commands choose their threads by the cores free as they start (``nas2deploy.threads``); tests
# fix them at this process's count, so that a run and its resumption (in this process or a
# child) compute with the same threads whatever else the machine is doing.
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))

SMALL = {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 1}
FAST = TimingSettings(warmup_runs=2, warmup_ms=0.0, min_runs=5, min_time_ms=0.0, retries=0)

HAS_CUDA = torch.cuda.is_available()
_trt = importlib.util.find_spec("tensorrt")
HAS_TENSORRT = _trt is not None and _trt.origin is not None

_no_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU visible to torch on this machine")
_no_tensorrt = pytest.mark.skipif(
    not (HAS_TENSORRT and HAS_CUDA),
    reason="TensorRT runtime and an NVIDIA GPU are required (TensorRT cannot be installed on the CPU CI machines)",
)


#: The marks of a test (or a ``pytest.param``) that needs CUDA: ``gpu`` (``pytest -m gpu`` runs
#: these in benchmarks/gpu_check.sh), skipped without CUDA.
CUDA_MARKS = (pytest.mark.gpu, _no_cuda)


def needs_cuda(test):
    return pytest.mark.gpu(_no_cuda(test))


def needs_tensorrt(test):
    return pytest.mark.tensorrt(_no_tensorrt(test))


@pytest.fixture(scope="session")
def postgres_url():
    """A private PostgreSQL server for the session (``support/postgres.py``), or a skip saying
    why this machine has none."""
    from support.postgres import server, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with server() as url:
        yield url


@pytest.fixture
def small_space():
    return make_space("densenas", SMALL)


def synthetic_table(space, seed=0, calibration=None):
    """A table with distinct random latencies for every op of ``space``, so every choice matters
    (for search logic; measured tables are tested elsewhere). No device_name: a synthetic table
    is no device's, so closed-loop and prediction checks refuse it."""
    from nas2deploy.testing import random_table

    return random_table(space, seed, calibration)


def saved_table(tmp_path_factory, space: str, shape: dict, seed: int = 0) -> str:
    """The path of a ``synthetic_table`` of ``space`` at ``shape``, written once per module."""
    path = tmp_path_factory.mktemp("lut") / f"{space}.json"
    synthetic_table(make_space(space, shape), seed=seed).save(path)
    return str(path)


def search_config(**fields):
    """A SearchConfig from flat fields, as a config file may hold them (space options at the top
    level are moved under the space: the path old files take)."""
    from nas2deploy.search.config import SearchConfig
    from nas2deploy.validate import Field

    return SearchConfig(**SearchConfig.read(Field(fields, "test config", "fix the test")))
