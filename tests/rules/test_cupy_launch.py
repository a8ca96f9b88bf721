"""Dispatch and launch of the CuPy kernels without a GPU: a fake CuPy records what is compiled,
on which device, with which grid, block and arguments, and runs the kernels through the host
shim, so that the results still compare with the torch references."""

from __future__ import annotations

import ctypes
import re
import types

import numpy as np
import pytest
import torch

from spikegrad.rules import bpsta, dispatch, multistrength, na, reset_term
from spikegrad.rules.cupy_kernels import functions, host, launch
from tests.rules.cupy_cases import (
    ALL_SPECS,
    F32,
    HT_CFGS,
    MS_CFGS,
    NA_CFGS,
    RT,
    compare,
    inputs,
    loop,
    prepare_host,
    rt_spec,
)


@pytest.fixture(scope="module", autouse=True)
def _host_build() -> None:
    prepare_host()


# --- a fake CuPy: dispatch and launch without a GPU ---------------------------------------------
class FakeCuPy(types.ModuleType):
    """Stands in for ``cupy``: records what is built, on which device, and every launch; its
    kernels run through the host shim (so results still compare with the references)."""

    def __init__(self, compile_error: Exception | None = None,
                 module_error: Exception | None = None):
        super().__init__("cupy")
        self.calls, self.devices, self.compile_error = [], [], compile_error
        self.module_error = module_error  # the rule's kernels fail; the device probe does not
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
        if self.module_error is not None:
            raise self.module_error
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
    for module in (functions, na.cupy):  # the LIF-family driver and NA's node
        monkeypatch.setattr(module, "run", lambda *a: (runs.append(a), real_run(*a)))
    return fake, runs, where


def test_fake_cupy_launch_builds_once_per_device_and_passes_the_signature(fake_cupy):
    fake, runs, where = fake_cupy
    rt, nas, hts, mss = rt_spec(RT[2]), na.cupy.spec(NA_CFGS[1]), *(
        [bpsta.cupy.spec(HT_CFGS[0]), multistrength.cupy.spec(MS_CFGS[3])])
    c, v0, a0 = inputs((3, 4, 75), seed=40)  # T = 3, N = 300: three blocks of 128
    for _ in range(2):  # the second round reuses every compiled function
        compare(lambda c_, v_, a_: reset_term.cupy.sequence(c_, v_, a_, rt),
                 lambda c_, v_, a_: (lambda s, v, _: (reset_term.trace(s, 2.0, a0=a_), v))(
                     *reset_term.SequenceFunction.apply(c_, v_, 0.75, 1.0, RT[2][1], "subtract",
                                                        1.0)),
                 [c.requires_grad_(), v0.requires_grad_(), a0.requires_grad_()], F32, "cpu", 0)
        compare(lambda c_: na.cupy.sequence(c_, nas),
                 lambda c_: na.NAFunction.apply(c_, NA_CFGS[1], None), [c], F32, "cpu", 1)
        compare(lambda x_, v_: bpsta.cupy.sequence(x_, v_, hts),
                 loop(lambda x, v, cfg: bpsta.reference_step_v(x, v, cfg)[::2], HT_CFGS[0]),
                 [c, v0], F32, "cpu", 2)
        compare(lambda z_, v_: multistrength.cupy.sequence(z_, v_, mss),
                 loop(multistrength.reference_step, MS_CFGS[3]), [c, v0], F32, "cpu", 3)
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
    multistrength.cupy.sequence(c.detach(), v0.detach(), mss)
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


def test_auto_falls_back_per_configuration_when_a_rule_kernel_fails_first_use(fake_cupy,
                                                                             monkeypatch):
    """The device probe compiles, but one rule's kernels do not (NVRTC error in its source):
    ``"auto"`` runs torch for that configuration with one warning, ``"cupy"`` raises with the
    cause, and the failing source is compiled once (the outcome is cached)."""
    from spikegrad.rules import first_use
    from spikegrad.rules.first_use import KernelFallbackWarning

    fake, _, _ = fake_cupy
    fake.module_error = RuntimeError("nvrtc: error: too many resources requested for launch")
    monkeypatch.setattr(first_use, "_place", lambda x, device, dtype: x.to(dtype))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    first_use.forget()
    spec, gpu = bpsta.cupy.spec(HT_CFGS[0]), torch.device("cuda", 0)
    with pytest.warns(KernelFallbackWarning, match=r"CuPy kernel of the bpsta rule .*\(float32 "
                      r"on cuda:0\) failed on first use \(RuntimeError: nvrtc: error: too many"):
        for _ in range(3):
            choice = dispatch.select("auto", step_mode="m", kernel=spec, device=gpu, dtype=F32)
            assert choice.implementation == "torch" and "failed on first use" in choice.reason
    with pytest.raises(RuntimeError, match="backend='cupy' cannot run this call: the CuPy "
                                           "kernel of the bpsta rule"):
        dispatch.select("cupy", step_mode="m", kernel=spec, device=gpu, dtype=F32)
    assert [c for c in fake.calls if c[0] == "module"] == [("module", 1)]  # one try, cached
    fake.module_error = None  # another configuration compiles: it is used
    other = multistrength.cupy.spec(MS_CFGS[0])
    assert dispatch.select("auto", step_mode="m", kernel=other, device=gpu,
                           dtype=F32).implementation == "cupy"
    first_use.forget()


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
    for fn, spec in ((multistrength.cupy.sequence, multistrength.cupy.spec(MS_CFGS[0])),
                     (lambda c_, _, s: na.cupy.sequence(c_, s), na.cupy.spec(NA_CFGS[0]))):
        out, _ = fn(c * 2, None, spec)
        (g,) = torch.autograd.grad((out * w).sum(), c, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiate twice"):
            g.sum().backward()
