"""Shared cases and checks of the CuPy kernel tests (``test_cupy_kernels.py`` compares every
kernel with its torch reference; ``test_cupy_launch.py`` checks dispatch and launch with a fake
CuPy). Not a test module itself."""

from __future__ import annotations

import os

import pytest
import torch

from spikegrad.rules import bpsta, dispatch, multistrength, na, reset_term, surrogate
from spikegrad.rules.cupy_kernels import host

F16, F32 = torch.float16, torch.float32
TOL = {F32: dict(rtol=1e-5, atol=1e-5), F16: dict(rtol=2e-3, atol=2e-3)}
SHAPES = [(1, 3, 4), (7, 2, 5), (13, 3), (5, 2, 3, 3)]  # T = 1, odd sizes, 3-d trailing shape

RT = [  # (mechanism, surrogate, reset_grad_scale, tau_s)
    ("zero", surrogate.Sigmoid(0.3, inclusive=True), 1.0, None),
    ("zero", surrogate.Sigmoid(0.3, inclusive=True), 0.0, 2.0),
    ("subtract", surrogate.Sigmoid(0.3, inclusive=True), 1.0, 2.0),
    ("subtract", surrogate.ATan(2.0), 0.3, None),
    ("zero", surrogate.ATan(2.0, inclusive=True), 0.3, 3.0),
]
NA_CFGS = [na.NA(beta=0.8, implementation="torch", tau_s=ts, reset=r, distance=d, error=e)
           for ts, r, d, e in [(None, "zero", "inverse_cube", "accumulated"),
                               (2.0, "zero", "inverse_cube", "accumulated"),
                               (2.0, "subtract", "inverse", "accumulated"),
                               (4.0, "zero", "inverse", "local"),
                               (None, "subtract", "inverse", "local")]]
HT_CFGS = [bpsta.HTDGLIF(), bpsta.HTDGLIF(decay=0.7, alpha=0.5),
           bpsta.HTDGLIF(mode="braincog"), bpsta.HTDGLIF(mode="braincog", dt=0.5, alpha=0.3)]
MS_CFGS = [multistrength.MultiStrength(), multistrength.MultiStrength(max_strength=2),
           multistrength.MultiStrength(threshold=0.3, detach_reset=False),
           multistrength.MultiStrength(threshold=0.7, beta=0.9, max_strength=3,
                                       detach_reset=False)]


def rt_spec(cfg):
    mechanism, sur, k, tau_s = cfg
    return reset_term.cupy.spec(0.75, 1.0, sur, mechanism, k, tau_s)


ALL_SPECS = ([rt_spec(c) for c in RT] + [na.cupy.spec(c) for c in NA_CFGS]
             + [bpsta.cupy.spec(c) for c in HT_CFGS]
             + [multistrength.cupy.spec(c) for c in MS_CFGS])


def gpu_ready() -> str | None:
    problem = dispatch.cupy_problem()
    return None if problem is None else problem[1]


DEVICES = [
    pytest.param("cpu", id="host-shim"),
    pytest.param("cuda", id="cupy", marks=pytest.mark.skipif(
        gpu_ready() is not None, reason=f"CuPy kernels cannot run here: {gpu_ready()}")),
]


def prepare_host() -> None:
    """One host-shim build for every configuration (cached on disk); a test module calls it
    from a module-scoped fixture."""
    if host.compiler() is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs g++ to check the kernels on the CPU")
        pytest.skip("no C++ compiler for the kernels' host shim")
    host.prepare(ALL_SPECS)


# --- the comparison ---------------------------------------------------------------------------
def compare(kernel, reference, inputs, dtype, device, seed, exact=True, out_dtypes=None):
    """Kernel vs reference: outputs equal, gradients of random upstream grads close.
    ``out_dtypes``: each output's dtype where it is not ``dtype`` (NA's float32 ``u``)."""
    if device == "cpu" and dtype == F16 and host.float16_problem() is not None:
        pytest.skip(host.float16_problem())
    gen = torch.Generator().manual_seed(seed)
    xk = [x.to(device, dtype).requires_grad_(x.requires_grad) for x in inputs]
    xr = [x.detach().float().requires_grad_(x.requires_grad) for x in xk]
    outs_k, outs_r = kernel(*xk), reference(*xr)
    for ok, orf, want in zip(outs_k, outs_r, out_dtypes or [dtype] * len(outs_r), strict=True):
        assert ok.dtype == want and ok.shape == orf.shape
        if exact:
            assert torch.equal(ok, orf.to(want)), (ok - orf.to(want)).abs().max()
        else:
            torch.testing.assert_close(ok, orf.to(want), **TOL[want])
    ups = [torch.randn(o.shape, generator=gen).to(device, dtype) for o in outs_k]
    diff = [i for i, x in enumerate(xk) if x.requires_grad]
    gk = torch.autograd.grad(sum((o * g).sum() for o, g in zip(outs_k, ups, strict=True)),
                             [xk[i] for i in diff])
    gr = torch.autograd.grad(sum((o * g.float()).sum() for o, g in zip(outs_r, ups, strict=True)),
                             [xr[i] for i in diff])
    for a, b in zip(gk, gr, strict=True):
        torch.testing.assert_close(a, b.to(dtype), **TOL[dtype])


def inputs(shape, seed, mean=0.45, std=0.7):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * std + mean
    s0 = torch.randn(shape[1:], generator=gen) * 0.3 + 0.2
    a0 = torch.rand(shape[1:], generator=gen)
    return x, s0, a0


def loop(step, cfg):
    def reference(x, v0):
        outs, vs, v = [], [], v0
        for t in range(x.shape[0]):
            o, v = step(x[t], v, cfg)
            outs.append(o)
            vs.append(v)
        return torch.stack(outs), torch.stack(vs)
    return reference
