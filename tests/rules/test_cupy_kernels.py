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

import ctypes
import dataclasses
import os
import re
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from spikegrad.rules import bpsta, multistrength, na, reset_term, surrogate
from spikegrad.rules.cupy_kernels import dispatch, functions, host, kernels, launch

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
def _compare(kernel, reference, inputs, dtype, device, seed, exact=True, out_dtypes=None):
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
                 [c.requires_grad_(), u0, a0], dtype, device, i, out_dtypes=(dtype, F32))


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


# --- initial states -----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_initial_states_broadcast_as_the_reference_or_raise(device):
    """A state that broadcasts to one step (``[5]`` or ``[1, 5]`` for ``[T, 4, 5]``) runs as
    the reference broadcasts it (gradients summed back); any other size raises naming it
    (it used to be read past its end)."""
    cfg, ms = RT[1], MS_CFGS[3]
    rt, nas, mss = _rt_spec(cfg), kernels.na_spec(NA_CFGS[2]), kernels.multistrength_spec(ms)
    c, v0, a0 = _inputs((3, 4, 5), seed=4)
    v0, a0 = v0[0].requires_grad_(), a0[:1].requires_grad_()

    def rt_ref(c_, v_, a_):
        s, v, _ = reset_term.SequenceFunction.apply(c_, v_, 0.75, 1.0, cfg[1], cfg[0], cfg[2])
        return reset_term.trace(s, cfg[3], a0=a_), v

    _compare(lambda c_, v_, a_: functions.reset_term_sequence(c_, v_, a_, rt), rt_ref,
             [c.requires_grad_(), v0, a0], F32, device, 4)
    _compare(lambda c_, u_: functions.na_sequence(c_, nas, None, u_, None),
             lambda c_, u_: na.NAFunction.apply(c_, NA_CFGS[2], None, u_, None),
             [c, v0.detach()], F32, device, 4)
    _compare(lambda z_, v_: functions.multistrength_sequence(z_, v_, mss),
             _loop(multistrength.step, ms), [c, v0], F32, device, 4)
    c = c.detach().to(device)
    with pytest.raises(ValueError, match=r"v0 has shape \(5,\), which does not broadcast .*5, 4"):
        functions.reset_term_sequence(c.transpose(1, 2), torch.zeros(5, device=device), None, rt)
    with pytest.raises(ValueError, match=r"a0 has shape \(20,\)"):
        functions.reset_term_sequence(c, None, torch.zeros(20, device=device), rt)
    with pytest.raises(ValueError, match=r"u_init has shape \(2, 5\)"):
        functions.na_sequence(c, nas, None, torch.zeros(2, 5, device=device))
    with pytest.raises(ValueError, match=r"v0 has shape \(4, 6\)"):
        functions.bpsta_sequence(c, torch.zeros(4, 6, device=device),
                                 kernels.bpsta_spec(HT_CFGS[0]))
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
    out, _ = functions.reset_term_sequence(c.to(device, dtype), v0.to(device, dtype), None,
                                           _rt_spec(cfg))
    assert out.tolist() == [[float(inclusive)] * 2, [0.0, 0.0], [0.0, 0.0]]

    def reference(c_, v_):
        s, v, _ = reset_term.SequenceFunction.apply(c_, v_, 0.75, 1.0, cfg[1], "zero", 1.0)
        return s, v

    _compare(lambda c_, v_: functions.reset_term_sequence(c_, v_, None, _rt_spec(cfg)),
             reference, [c.requires_grad_(), v0.requires_grad_()], dtype, device, 5)
    na_out, _ = functions.na_sequence(c.detach().to(device, dtype), kernels.na_spec(NA_CFGS[0]))
    assert na_out.sum().item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
def test_multistrength_window_ends_at_exactly_tau_times_d_plus_one(dtype, device):
    """h == τ(D + 1) (D = 2, τ = 0.5: 1.5) is outside the gradient window; just below is in."""
    cfg = multistrength.MultiStrength(threshold=0.5, max_strength=2)
    z = torch.tensor([[1.5, 1.4990234375, 1.0, -0.5]])  # 1.4990234375: the half below 1.5
    theta, _ = functions.multistrength_sequence(z.to(device, dtype), None,
                                                kernels.multistrength_spec(cfg))
    assert theta.tolist() == [[2.0, 2.0, 2.0, 0.0]]
    _compare(lambda z_: functions.multistrength_sequence(z_, None, kernels.multistrength_spec(cfg)),
             lambda z_: _loop(multistrength.step, cfg)(z_, torch.zeros_like(z_[0])),
             [z.requires_grad_()], dtype, device, 6)
    zk = z.detach().to(device, dtype).requires_grad_()
    (g,) = torch.autograd.grad(
        functions.multistrength_sequence(zk, None, kernels.multistrength_spec(cfg))[0].sum(), zk)
    assert g.tolist() == [[0.0, 2.0, 2.0, 0.0]]  # dθ/dh = 1/τ inside [0, τ(D+1)) only


def test_host_shim_without_float16_refuses_half_and_still_builds(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "float16_problem", lambda: "no _Float16 in this compiler")
    spec = kernels.multistrength_spec(MS_CFGS[0])
    with pytest.raises(RuntimeError, match="no _Float16 in this compiler"):
        functions.multistrength_sequence(torch.rand(2, 3, dtype=F16), None, spec)
    src = tmp_path / "k.cpp"  # a compiler without _Float16 (simulated) still builds the source
    src.write_text(spec.source)
    res = subprocess.run([host.compiler(), "-fsyntax-only", "-std=c++17", "-U__FLT16_MAX__",
                          str(src)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]


# --- a fake CuPy: dispatch and launch without a GPU ---------------------------------------------
class FakeCuPy(types.ModuleType):
    """Stands in for ``cupy``: records what is built, on which device, and every launch; its
    kernels run through the host shim (so results still compare with the references)."""

    def __init__(self, compile_error: Exception | None = None):
        super().__init__("cupy")
        self.calls, self.devices, self.compile_error = [], [], compile_error
        fake = self

        class Device:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                fake.devices.append(self.index)

            def __exit__(self, *exc):
                fake.devices.pop()

        class ExternalStream:
            def __init__(self, ptr):
                fake.calls.append(("stream", ptr, fake.device))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        self.cuda = types.SimpleNamespace(Device=Device, ExternalStream=ExternalStream)
        self.float32, self.zeros, self.asnumpy = np.float32, np.zeros, np.asarray
        self.from_dlpack = lambda t: t

    @property
    def device(self):
        return self.devices[-1] if self.devices else None

    def RawKernel(self, code, name, options=()):  # noqa: N802 - CuPy's name
        self.calls.append(("compile", name, self.device))
        if self.compile_error is not None:
            raise self.compile_error
        return lambda grid, block, args: args[0].__setitem__(0, 1.0)

    def RawModule(self, code, options=()):  # noqa: N802 - CuPy's name
        self.calls.append(("module", self.device))
        return types.SimpleNamespace(get_function=lambda name: self._function(code, name))

    def _function(self, code, name):
        self.calls.append(("get_function", name, self.device))
        sig = re.search(rf"SG_GLOBAL void {name}\(([^)]*)\)", code).group(1)
        params = [p.split()[-1] for p in sig.split(", ")]

        def launch_(grid, block, args):
            self.calls.append(("launch", name, grid, block, params, args, self.device))
            types_ = {np.int32: ctypes.c_int, np.int64: ctypes.c_longlong}
            fn = getattr(host._LOADED[name.rsplit("_", 1)[1]], name + "_host")
            fn.argtypes = [types_.get(type(a), ctypes.c_void_p) for a in args]
            fn(*[a.data_ptr() if isinstance(a, torch.Tensor) else int(a) for a in args])
        return launch_


@pytest.fixture
def fake_cupy(monkeypatch):
    """A fake CuPy with a GPU index 1 holding every CPU tensor (torch's current device: 0)."""
    fake, runs, where = FakeCuPy(), [], {"device": torch.device("cuda", 1)}
    real_check, real_run = launch._check, launch.run
    monkeypatch.setattr(dispatch, "_import_cupy", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(launch, "_check", lambda *a: (real_check(*a)[0], where["device"]))
    monkeypatch.setattr(launch, "_stream_pointer", lambda device: 4242)
    monkeypatch.setattr(launch, "_FUNCTIONS", {})
    monkeypatch.setattr(launch, "_MODULES", {})
    monkeypatch.setattr(functions, "run", lambda *a: (runs.append(a), real_run(*a)))
    return fake, runs, where


def test_fake_cupy_launch_builds_once_per_device_and_passes_the_signature(fake_cupy):
    fake, runs, where = fake_cupy
    rt, nas, hts, mss = _rt_spec(RT[2]), kernels.na_spec(NA_CFGS[1]), *(
        [kernels.bpsta_spec(HT_CFGS[0]), kernels.multistrength_spec(MS_CFGS[3])])
    c, v0, a0 = _inputs((3, 4, 75), seed=40)  # T = 3, N = 300: three blocks of 128
    for _ in range(2):  # the second round reuses every compiled function
        _compare(lambda c_, v_, a_: functions.reset_term_sequence(c_, v_, a_, rt),
                 lambda c_, v_, a_: (lambda s, v, _: (reset_term.trace(s, 2.0, a0=a_), v))(
                     *reset_term.SequenceFunction.apply(c_, v_, 0.75, 1.0, RT[2][1], "subtract",
                                                        1.0)),
                 [c.requires_grad_(), v0.requires_grad_(), a0.requires_grad_()], F32, "cpu", 0)
        _compare(lambda c_: functions.na_sequence(c_, nas),
                 lambda c_: na.NAFunction.apply(c_, NA_CFGS[1], None), [c], F32, "cpu", 1)
        _compare(lambda x_, v_: functions.bpsta_sequence(x_, v_, hts),
                 _loop(lambda x, v, cfg: bpsta.step_v(x, v, cfg)[::2], HT_CFGS[0]),
                 [c, v0], F32, "cpu", 2)
        _compare(lambda z_, v_: functions.multistrength_sequence(z_, v_, mss),
                 _loop(multistrength.step, MS_CFGS[3]), [c, v0], F32, "cpu", 3)
    built = [call for call in fake.calls if call[0] == "get_function"]
    assert len(built) == 8 and len({b[1] for b in built}) == 8  # 4 rules x fwd/bwd, once each
    assert all(b[2] == 1 for b in built)  # compiled and loaded inside Device(1)
    assert [call[0] for call in fake.calls].count("module") == 4
    launches = [call for call in fake.calls if call[0] == "launch"]
    assert len(launches) == len(runs) == 16
    assert launch.BLOCK == 128
    for (spec, direction, steps, n, args), (_, name, grid, block, params, values, dev) in zip(
            runs, launches, strict=True):
        assert dev == 1 and grid == (-(-n // 128),) == (3,) and block == (128,)
        assert name == spec.kernel_name(direction, "f32")
        assert params == [p.name for p in spec.params(direction)] + ["T", "N"]
        assert type(values[-2]) is type(values[-1]) is np.int64
        assert (int(values[-2]), int(values[-1])) == (steps, n) == (3, 300)
        for p, v in zip(spec.params(direction), values[:-2], strict=True):
            if p.kind == "flag":
                assert type(v) is np.int32 and int(v) == args[p.name]
            else:
                assert v.data_ptr() == args[p.name].data_ptr()
    assert {call[1:] for call in fake.calls if call[0] == "stream"} == {(4242, 1)}
    where["device"] = torch.device("cuda", 2)  # another device: built again, there
    functions.multistrength_sequence(c.detach(), v0.detach(), mss)
    assert [call[1:] for call in fake.calls if call[0] == "get_function"][-1] == (
        mss.kernel_name("forward", "f32"), 2)


def test_auto_falls_back_when_cupy_cannot_compile(monkeypatch):
    fake = FakeCuPy(compile_error=RuntimeError("nvrtc: error: invalid value for --gpu-arch"))
    monkeypatch.setattr(dispatch, "_import_cupy", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    spec, gpu = ALL_SPECS[0], torch.device("cuda", 0)
    for _ in range(3):
        choice = dispatch.select("auto", step_mode="m", kernel=spec, device=gpu, dtype=F32)
        assert choice.implementation == "torch"
        assert "cannot compile or launch a kernel on cuda:0 (RuntimeError: nvrtc" in choice.reason
        with pytest.raises(RuntimeError, match="backend='cupy' cannot run .* cannot compile"):
            dispatch.select("cupy", step_mode="m", kernel=spec, device=gpu, dtype=F32)
        with pytest.raises(RuntimeError, match="backend='cupy' is unavailable: cupy cannot"):
            dispatch.check_backend("cupy", step_mode="m", kernel=spec)
    assert fake.calls == [("compile", "sg_probe", 0)]  # probed once, inside Device(0)


def test_no_cuda_device_message_tells_a_cpu_only_torch_apart(monkeypatch):
    monkeypatch.setattr(dispatch, "_import_cupy", lambda: FakeCuPy())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in dispatch.cupy_problem()[1]
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "no visible GPU" in dispatch.cupy_problem()[1]


def test_kernel_backward_is_once_differentiable():
    """A double backward raises instead of silently dropping the kernels' second derivative."""
    c, w = torch.rand(4, 3, requires_grad=True), torch.rand(4, 3, requires_grad=True)
    for fn, spec in ((functions.multistrength_sequence, kernels.multistrength_spec(MS_CFGS[0])),
                     (lambda c_, _, s: functions.na_sequence(c_, s), kernels.na_spec(NA_CFGS[0]))):
        out, _ = fn(c * 2, None, spec)
        (g,) = torch.autograd.grad((out * w).sum(), c, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiate twice"):
            g.sum().backward()
