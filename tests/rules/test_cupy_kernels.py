"""The hand-written CuPy kernels (each rule folder's ``cupy.py``) against the torch references.

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
from spikegrad.rules.cupy_kernels import host, launch
from tests.rules.cupy_cases import (
    ALL_SPECS,
    DEVICES,
    F16,
    F32,
    HT_CFGS,
    MS_CFGS,
    NA_CFGS,
    RT,
    SHAPES,
    compare,
    gpu_ready,
    inputs,
    loop,
    prepare_host,
    rt_spec,
)


@pytest.fixture(scope="module", autouse=True)
def _host_build() -> None:
    prepare_host()


# --- reset-term ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", RT, ids=lambda c: f"{c[0]}-{type(c[1]).__name__}-k{c[2]}-{c[3]}")
def test_reset_term_matches_reference(cfg, dtype, device):
    mechanism, sur, k, tau_s = cfg
    spec = rt_spec(cfg)

    def reference(c, v0, a0):
        s, v, _ = reset_term.SequenceFunction.apply(c, v0, 0.75, 1.0, sur, mechanism, k)
        return (s if tau_s is None else reset_term.trace(s, tau_s, a0=a0)), v

    def kernel(c, v0, a0):
        return reset_term.cupy.sequence(c, v0, a0, spec)

    for i, shape in enumerate(SHAPES):
        c, v0, a0 = inputs(shape, seed=i)
        compare(kernel, reference, [c.requires_grad_(), v0.requires_grad_(),
                                     a0.requires_grad_(tau_s is not None)], dtype, device, i)


# --- NA -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", NA_CFGS,
                         ids=lambda c: f"{c.tau_s}-{c.reset}-{c.distance}-{c.error}")
def test_na_matches_reference(cfg, dtype, device):
    spec = na.cupy.spec(cfg)
    for i, shape in enumerate(SHAPES + [(20, 3)]):
        c, _, a0 = inputs(shape, seed=10 + i, mean=0.5, std=0.6)
        u0 = torch.rand(shape[1:], generator=torch.Generator().manual_seed(i)) * 1.4
        if shape == (20, 3):
            c[0, 0] = 1.0  # u == θ exactly: no spike (strict), weight +clamp
            u0[0] = 0.0
        compare(lambda c_, u_, a_: na.cupy.sequence(c_, spec, None, u_, a_),
                 lambda c_, u_, a_: na.NAFunction.apply(c_, cfg, None, u_, a_),
                 [c.requires_grad_(), u0, a0], dtype, device, i, out_dtypes=(dtype, F32))


@pytest.mark.parametrize("device", DEVICES)
def test_na_rescale_runs_in_torch_after_the_kernel(device):
    cfg = NA_CFGS[1]
    spec = na.cupy.spec(cfg)
    c, _, _ = inputs((9, 4, 5), seed=3, mean=0.5, std=0.6)
    r_k, r_r = na.Rescale(), na.Rescale()
    compare(lambda x: na.cupy.sequence(x, spec, r_k),
             lambda x: na.NAFunction.apply(x, cfg, r_r), [c.requires_grad_()], F32, device, 3)
    assert r_k.ref is not None and r_k.ref == r_r.ref


# --- BPSA / BPTA --------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", HT_CFGS, ids=lambda c: f"{c.mode}-{c.decay}-{c.alpha}-{c.dt}")
def test_bpsta_matches_reference(cfg, dtype, device):
    spec = bpsta.cupy.spec(cfg)

    def step(x, v, cfg_):
        o, _, v = bpsta.reference_step_v(x, v, cfg_)
        return o, v

    for i, shape in enumerate(SHAPES):
        x, v0, _ = inputs(shape, seed=20 + i, mean=0.3, std=0.6)
        compare(lambda x_, v_: bpsta.cupy.sequence(x_, v_, spec), loop(step, cfg),
                 [x.requires_grad_(), v0.requires_grad_()], dtype, device, i)


# --- multi-strength -----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("cfg", MS_CFGS,
                         ids=lambda c: f"tau{c.threshold}-b{c.beta}-D{c.max_strength}-"
                                       f"detach{int(c.detach_reset)}")
def test_multistrength_matches_reference(cfg, dtype, device):
    spec = multistrength.cupy.spec(cfg)
    for i, shape in enumerate(SHAPES):
        z, v0, _ = inputs(shape, seed=30 + i, mean=0.6, std=1.2)
        compare(lambda z_, v_: multistrength.cupy.sequence(z_, v_, spec),
                 loop(multistrength.reference_step, cfg),
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
    a = na.cupy.spec(NA_CFGS[1])
    b = na.cupy.spec(dataclasses.replace(NA_CFGS[1], implementation="cpp"))
    c = na.cupy.spec(dataclasses.replace(NA_CFGS[1], clamp=4.0))
    assert a.source == b.source and a.digest == b.digest  # same arithmetic, same kernels
    assert c.digest != a.digest and "4.000000000e+00f" in c.source
    sig = surrogate.Sigmoid(0.3)
    assert sig.c_derivative("x") in rt_spec(RT[0]).source.replace("inclusive", "")
    with pytest.raises(NotImplementedError, match="no CUDA expression"):
        surrogate.Surrogate().c_derivative("x")


# --- the timing entry point ---------------------------------------------------------------------
def test_bench_runs_on_the_host_shim(capsys):
    from spikegrad.rules.cupy_kernels import bench

    assert bench.main(["--device", "cpu", "--steps", "1", "3", "--neurons", "17",
                       "--min-run-time", "0.001", "--json"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 4 * 2 and all('"torch_ms"' in r and '"cupy_ms"' in r for r in rows)


@pytest.mark.skipif(gpu_ready() is None, reason="a GPU is here: the benchmark runs")
def test_bench_without_gpu_exits_with_the_reason(capsys):
    from spikegrad.rules.cupy_kernels import bench

    assert bench.main(["--steps", "4"]) == 2
    assert f"cannot run here: {gpu_ready()}" in capsys.readouterr().err


# --- initial states -----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_initial_states_broadcast_as_the_reference_or_raise(device):
    """A state that broadcasts to one step (``[5]`` or ``[1, 5]`` for ``[T, 4, 5]``) runs as
    the reference broadcasts it (gradients summed back); any other size raises naming it
    (it used to be read past its end)."""
    cfg, ms = RT[1], MS_CFGS[3]
    rt, nas, mss = rt_spec(cfg), na.cupy.spec(NA_CFGS[2]), multistrength.cupy.spec(ms)
    c, v0, a0 = inputs((3, 4, 5), seed=4)
    v0, a0 = v0[0].requires_grad_(), a0[:1].requires_grad_()

    def rt_ref(c_, v_, a_):
        s, v, _ = reset_term.SequenceFunction.apply(c_, v_, 0.75, 1.0, cfg[1], cfg[0], cfg[2])
        return reset_term.trace(s, cfg[3], a0=a_), v

    compare(lambda c_, v_, a_: reset_term.cupy.sequence(c_, v_, a_, rt), rt_ref,
             [c.requires_grad_(), v0, a0], F32, device, 4)
    compare(lambda c_, u_: na.cupy.sequence(c_, nas, None, u_, None),
             lambda c_, u_: na.NAFunction.apply(c_, NA_CFGS[2], None, u_, None),
             [c, v0.detach()], F32, device, 4)
    compare(lambda z_, v_: multistrength.cupy.sequence(z_, v_, mss),
             loop(multistrength.reference_step, ms), [c, v0], F32, device, 4)
    c = c.detach().to(device)
    with pytest.raises(ValueError, match=r"v0 has shape \(5,\), which does not broadcast .*5, 4"):
        reset_term.cupy.sequence(c.transpose(1, 2), torch.zeros(5, device=device), None, rt)
    with pytest.raises(ValueError, match=r"a0 has shape \(20,\)"):
        reset_term.cupy.sequence(c, None, torch.zeros(20, device=device), rt)
    with pytest.raises(ValueError, match=r"u_init has shape \(2, 5\)"):
        na.cupy.sequence(c, nas, None, torch.zeros(2, 5, device=device))
    with pytest.raises(ValueError, match=r"v0 has shape \(4, 6\)"):
        bpsta.cupy.sequence(c, torch.zeros(4, 6, device=device),
                                 bpsta.cupy.spec(HT_CFGS[0]))
    args = dict(z=c.view(3, 20), v0=torch.zeros(5, device=device), theta_out=c.view(3, 20),
                v_out=c.view(3, 20), h_save=c.view(3, 20))  # and the launcher's own check
    with pytest.raises(ValueError, match=r"v0 has 5 elements, expected 20 \(N; T=3, N=20\)"):
        launch.run(mss, "forward", 3, 20, args)


# --- boundaries ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("inclusive", [True, False])
def test_spike_at_exactly_the_threshold(inclusive, dtype, device):
    """u == θ: spikes with inclusive=True (x >= 0), not without (x > 0); NA is strict."""
    cfg = ("zero", surrogate.Sigmoid(0.3, inclusive=inclusive), 1.0, None)
    c = torch.tensor([[1.0, 0.625], [0.0, 0.0], [0.0, 0.0]])  # u = 1 and 0.75 * 0.5 + 0.625 = 1
    v0 = torch.tensor([0.0, 0.5])
    out, _ = reset_term.cupy.sequence(c.to(device, dtype), v0.to(device, dtype), None,
                                           rt_spec(cfg))
    assert out.tolist() == [[float(inclusive)] * 2, [0.0, 0.0], [0.0, 0.0]]

    def reference(c_, v_):
        s, v, _ = reset_term.SequenceFunction.apply(c_, v_, 0.75, 1.0, cfg[1], "zero", 1.0)
        return s, v

    compare(lambda c_, v_: reset_term.cupy.sequence(c_, v_, None, rt_spec(cfg)),
             reference, [c.requires_grad_(), v0.requires_grad_()], dtype, device, 5)
    na_out, _ = na.cupy.sequence(c.detach().to(device, dtype), na.cupy.spec(NA_CFGS[0]))
    assert na_out.sum().item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
def test_multistrength_window_ends_at_exactly_tau_times_d_plus_one(dtype, device):
    """h == τ(D + 1) (D = 2, τ = 0.5: 1.5) is outside the gradient window; just below is in."""
    cfg = multistrength.MultiStrength(threshold=0.5, max_strength=2)
    z = torch.tensor([[1.5, 1.4990234375, 1.0, -0.5]])  # 1.4990234375: the half below 1.5
    theta, _ = multistrength.cupy.sequence(z.to(device, dtype), None,
                                                multistrength.cupy.spec(cfg))
    assert theta.tolist() == [[2.0, 2.0, 2.0, 0.0]]
    compare(lambda z_: multistrength.cupy.sequence(z_, None, multistrength.cupy.spec(cfg)),
             lambda z_: loop(multistrength.reference_step, cfg)(z_, torch.zeros_like(z_[0])),
             [z.requires_grad_()], dtype, device, 6)
    zk = z.detach().to(device, dtype).requires_grad_()
    (g,) = torch.autograd.grad(
        multistrength.cupy.sequence(zk, None, multistrength.cupy.spec(cfg))[0].sum(), zk)
    assert g.tolist() == [[0.0, 2.0, 2.0, 0.0]]  # dθ/dh = 1/τ inside [0, τ(D+1)) only


def test_host_shim_without_float16_refuses_half_and_still_builds(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "float16_problem", lambda: "no _Float16 in this compiler")
    spec = multistrength.cupy.spec(MS_CFGS[0])
    with pytest.raises(RuntimeError, match="no _Float16 in this compiler"):
        multistrength.cupy.sequence(torch.rand(2, 3, dtype=F16), None, spec)
    src = tmp_path / "k.cpp"  # a compiler without _Float16 (simulated) still builds the source
    src.write_text(spec.source)
    res = subprocess.run([host.compiler(), "-fsyntax-only", "-std=c++17", "-U__FLT16_MAX__",
                          str(src)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]


