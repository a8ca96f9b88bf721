"""Shared fixtures for the test suite."""

from __future__ import annotations

import pytest
import torch

DTYPES = (torch.float32, torch.float64)

#: per-dtype tolerances for comparing values and gradients of two implementations.
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}

#: devices every rule must run on (CUDA only where present).
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available"),
    ),
]


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tol(dtype: torch.dtype) -> dict[str, float]:
    """``assert_close`` tolerances for the parametrised ``dtype``."""
    return TOL[dtype]


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator: every test draws reproducible random data."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def fresh_inductor_cache(tmp_path_factory: pytest.TempPathFactory):
    """A new, empty Inductor (and Triton) cache for one test module: its first compile of any
    graph is a cold one, as a new user's is (a failure seen only with a cold cache passed on
    every rerun of a warm one). ``SPIKEGRAD_TEST_INDUCTOR_CACHE=keep`` keeps the usual cache.

    Inductor reads ``TORCHINDUCTOR_CACHE_DIR`` at each use (``cache_dir()``) but keeps
    in-memory copies (compiled modules, the autotune cache path): ``fresh_cache`` points both
    variables at a new directory and clears those copies on entry and exit. Yields the
    directory (``None`` when kept)."""
    import os

    if os.environ.get("SPIKEGRAD_TEST_INDUCTOR_CACHE") == "keep":
        yield None
        return
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    from torch._inductor.utils import fresh_cache

    with fresh_cache(dir=str(tmp_path_factory.mktemp("inductor_cache"))):
        path = cache_dir()
        assert not os.listdir(path), f"the fresh Inductor cache {path} is not empty"
        yield path
