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
