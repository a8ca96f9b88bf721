"""The fused kernels of ``spikegrad.rules.cupy_kernels`` against the torch references.

Every rule's forward and backward kernel, for several configurations, float32 and float16,
odd shapes and ``T = 1``, random upstream gradients (on every output) and random initial
states: spikes and states identical, gradients within per-dtype tolerances. For float16 the
reference is the float32 computation on the upcast inputs, rounded to half.

Where they run:

* ``cpu``: the same generated source compiled as C++ through the host shim (g++; one build for
  all configurations, cached on disk), so CI without a GPU checks the kernels' arithmetic;
* ``cuda``: CuPy on a GPU (skipped without CUDA or CuPy);
* ``nvcc``: the generated CUDA source compiles (skipped without nvcc).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from spikegrad.rules import bpsta, multistrength, na, reset_term, surrogate
from spikegrad.rules.cupy_kernels import dispatch, functions, host, kernels

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


def _rt_spec(cfg):
    mechanism, sur, k, tau_s = cfg
    return kernels.reset_term_spec(0.75, 1.0, sur, mechanism, k, tau_s)


ALL_SPECS = ([_rt_spec(c) for c in RT] + [kernels.na_spec(c) for c in NA_CFGS]
             + [kernels.bpsta_spec(c) for c in HT_CFGS]
             + [kernels.multistrength_spec(c) for c in MS_CFGS])


def _gpu_ready() -> str | None:
    problem = dispatch.cupy_problem()
    return None if problem is None else problem[1]


DEVICES = [
    pytest.param("cpu", id="host-shim"),
    pytest.param("cuda", id="cupy", marks=pytest.mark.skipif(
        _gpu_ready() is not None, reason=f"CuPy kernels cannot run here: {_gpu_ready()}")),
]


@pytest.fixture(scope="module", autouse=True)
def _host_build():
    """One host-shim build for every configuration of this module (cached on disk)."""
    if host.compiler() is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs g++ to check the kernels on the CPU")
        pytest.skip("no C++ compiler for the kernels' host shim")
    host.prepare(ALL_SPECS)


# --- the comparison ---------------------------------------------------------------------------
def _compare(kernel, reference, inputs, dtype, device, seed, exact=True):
    """Kernel vs reference: outputs equal, gradients of random upstream grads close."""
    gen = torch.Generator().manual_seed(seed)
    xk = [x.to(device, dtype).requires_grad_(x.requires_grad) for x in inputs]
    xr = [x.detach().float().requires_grad_(x.requires_grad) for x in xk]
    outs_k, outs_r = kernel(*xk), reference(*xr)
    for ok, orf in zip(outs_k, outs_r, strict=True):
        assert ok.dtype == dtype and ok.shape == orf.shape
        if exact:
            assert torch.equal(ok, orf.to(dtype)), (ok - orf.to(dtype)).abs().max()
        else:
            torch.testing.assert_close(ok, orf.to(dtype), **TOL[dtype])
    ups = [torch.randn(o.shape, generator=gen).to(device, dtype) for o in outs_k]
    diff = [i for i, x in enumerate(xk) if x.requires_grad]
    gk = torch.autograd.grad(sum((o * g).sum() for o, g in zip(outs_k, ups, strict=True)),
                             [xk[i] for i in diff])
    gr = torch.autograd.grad(sum((o * g.float()).sum() for o, g in zip(outs_r, ups, strict=True)),
                             [xr[i] for i in diff])
    for a, b in zip(gk, gr, strict=True):
        torch.testing.assert_close(a, b.to(dtype), **TOL[dtype])


def _inputs(shape, seed, mean=0.45, std=0.7):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * std + mean
    s0 = torch.randn(shape[1:], generator=gen) * 0.3 + 0.2
    a0 = torch.rand(shape[1:], generator=gen)
    return x, s0, a0


# --- reset-term ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", RT, ids=lambda c: f"{c[0]}-{type(c[1]).__name__}-k{c[2]}-{c[3]}")
def test_reset_term_matches_reference(cfg, dtype, device):
    mechanism, sur, k, tau_s = cfg
    spec = _rt_spec(cfg)

    def reference(c, v0, a0):
        s, v, _ = reset_term.SequenceFunction.apply(c, v0, 0.75, 1.0, sur, mechanism, k)
        return (s if tau_s is None else reset_term.trace(s, tau_s, a0=a0)), v

    def kernel(c, v0, a0):
        return functions.reset_term_sequence(c, v0, a0, spec)

    for i, shape in enumerate(SHAPES):
        c, v0, a0 = _inputs(shape, seed=i)
        _compare(kernel, reference, [c.requires_grad_(), v0.requires_grad_(),
                                     a0.requires_grad_(tau_s is not None)], dtype, device, i)


# --- NA -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", NA_CFGS,
                         ids=lambda c: f"{c.tau_s}-{c.reset}-{c.distance}-{c.error}")
def test_na_matches_reference(cfg, dtype, device):
    spec = kernels.na_spec(cfg)
    for i, shape in enumerate(SHAPES + [(20, 3)]):
        c, _, a0 = _inputs(shape, seed=10 + i, mean=0.5, std=0.6)
        u0 = torch.rand(shape[1:], generator=torch.Generator().manual_seed(i)) * 1.4
        if shape == (20, 3):
            c[0, 0] = 1.0  # u == θ exactly: no spike (strict), weight +clamp
            u0[0] = 0.0
        _compare(lambda c_, u_, a_: functions.na_sequence(c_, spec, None, u_, a_),
                 lambda c_, u_, a_: na.NAFunction.apply(c_, cfg, None, u_, a_),
                 [c.requires_grad_(), u0, a0], dtype, device, i)


@pytest.mark.parametrize("device", DEVICES)
def test_na_rescale_runs_in_torch_after_the_kernel(device):
    cfg = NA_CFGS[1]
    spec = kernels.na_spec(cfg)
    c, _, _ = _inputs((9, 4, 5), seed=3, mean=0.5, std=0.6)
    r_k, r_r = na.Rescale(), na.Rescale()
    _compare(lambda x: functions.na_sequence(x, spec, r_k),
             lambda x: na.NAFunction.apply(x, cfg, r_r), [c.requires_grad_()], F32, device, 3)
    assert r_k.ref is not None and r_k.ref == r_r.ref


# --- BPSA / BPTA --------------------------------------------------------------------------------
def _loop(step, cfg):
    def reference(x, v0):
        outs, vs, v = [], [], v0
        for t in range(x.shape[0]):
            o, v = step(x[t], v, cfg)
            outs.append(o)
            vs.append(v)
        return torch.stack(outs), torch.stack(vs)
    return reference


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", HT_CFGS, ids=lambda c: f"{c.mode}-{c.decay}-{c.alpha}-{c.dt}")
def test_bpsta_matches_reference(cfg, dtype, device):
    spec = kernels.bpsta_spec(cfg)

    def step(x, v, cfg_):
        o, _, v = bpsta.step_v(x, v, cfg_)
        return o, v

    for i, shape in enumerate(SHAPES):
        x, v0, _ = _inputs(shape, seed=20 + i, mean=0.3, std=0.6)
        _compare(lambda x_, v_: functions.bpsta_sequence(x_, v_, spec), _loop(step, cfg),
                 [x.requires_grad_(), v0.requires_grad_()], dtype, device, i)


# --- multi-strength -----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", MS_CFGS,
                         ids=lambda c: f"tau{c.threshold}-b{c.beta}-D{c.max_strength}-"
                                       f"detach{int(c.detach_reset)}")
def test_multistrength_matches_reference(cfg, dtype, device):
    spec = kernels.multistrength_spec(cfg)
    for i, shape in enumerate(SHAPES):
        z, v0, _ = _inputs(shape, seed=30 + i, mean=0.6, std=1.2)
        _compare(lambda z_, v_: functions.multistrength_sequence(z_, v_, spec),
                 _loop(multistrength.step, cfg),
                 [z.requires_grad_(), v0.requires_grad_()], dtype, device, i)


# --- generated CUDA source ----------------------------------------------------------------------
def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if found is None and root and Path(root, "bin", "nvcc").exists():
            found = str(Path(root, "bin", "nvcc"))
    return found


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (PATH, $CUDA_HOME, /usr/local/cuda)")
def test_generated_cuda_source_compiles_with_nvcc(tmp_path):
    """Every configuration above, both directions, float32 and float16, in one nvcc call;
    and one configuration alone, exactly the text CuPy hands to NVRTC."""
    from spikegrad.rules.cupy_kernels.launch import NVRTC_OPTIONS

    combined = tmp_path / "all.cu"
    combined.write_text("".join(s.source for s in ALL_SPECS))
    single = tmp_path / "one.cu"
    single.write_text(ALL_SPECS[0].source)
    for src in (combined, single):
        res = subprocess.run([_nvcc(), "-cubin", "-arch=sm_80", *NVRTC_OPTIONS, str(src),
                              "-o", str(src.with_suffix(".cubin"))],
                             capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        assert src.with_suffix(".cubin").stat().st_size > 0
    names = [s.kernel_name(d, t) for s in ALL_SPECS for d in ("forward", "backward")
             for t in ("f32", "f16")]
    assert len(set(names)) == len(names) == 4 * len(ALL_SPECS)


# --- the generator ------------------------------------------------------------------------------
def test_source_is_generated_from_the_parameters_once():
    a = kernels.na_spec(NA_CFGS[1])
    b = kernels.na_spec(dataclasses.replace(NA_CFGS[1], implementation="cpp"))
    c = kernels.na_spec(dataclasses.replace(NA_CFGS[1], clamp=4.0))
    assert a.source == b.source and a.digest == b.digest  # same arithmetic, same kernels
    assert c.digest != a.digest and "4.000000000e+00f" in c.source
    sig = surrogate.Sigmoid(0.3)
    assert sig.c_derivative("x") in _rt_spec(RT[0]).source.replace("inclusive", "")
    with pytest.raises(NotImplementedError, match="no CUDA expression"):
        surrogate.Surrogate().c_derivative("x")


# --- the timing entry point ---------------------------------------------------------------------
def test_bench_runs_on_the_host_shim(capsys):
    from spikegrad.rules.cupy_kernels import bench

    assert bench.main(["--device", "cpu", "--steps", "1", "3", "--neurons", "17",
                       "--min-run-time", "0.001", "--json"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 4 * 2 and all('"torch_ms"' in r and '"cupy_ms"' in r for r in rows)


@pytest.mark.skipif(_gpu_ready() is None, reason="a GPU is here: the benchmark runs")
def test_bench_without_gpu_exits_with_the_reason(capsys):
    from spikegrad.rules.cupy_kernels import bench

    assert bench.main(["--steps", "4"]) == 2
    assert f"cannot run here: {_gpu_ready()}" in capsys.readouterr().err
