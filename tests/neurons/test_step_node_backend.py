"""``neurons.Node(rule, backend=...)``: the host's backend switch covers a user's step rule.

``backend="cupy"`` runs the CUDA C generated from the step (here through the host shim: the CPU
tensors are taken for CUDA ones by the dispatcher, as in test_spikingjelly_cupy.py) with the
same spikes, states and gradients as the step's own loop (``backend="torch"``,
``implementation="torch"``); what cannot run is refused with the reason, as for spikegrad's own
nodes.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

pytest.importorskip("spikingjelly")

from spikegrad import neurons  # noqa: E402
from spikegrad.rules import dispatch, first_use, stepfn, surrogate  # noqa: E402
from spikegrad.rules.cupy_kernels import host  # noqa: E402
from spikegrad.rules.stepfn import cuda_gen  # noqa: E402
from spikegrad.rules.stepfn import rules as R  # noqa: E402

F32 = torch.float32


@dataclasses.dataclass(frozen=True)
class Adaptive(stepfn.StepRule):
    """A spike-driven threshold (written as a user would; not an example of the package)."""

    beta: float = 0.9
    rho: float = 0.8
    gain: float = 1.5
    spike: surrogate.Surrogate = surrogate.Sigmoid(0.4)
    states = ("v", "b")

    @staticmethod
    def step(x, state, cfg):
        v, b = state
        u = cfg.beta * v + x
        theta = 1.0 + cfg.gain * b
        s = cfg.spike(u - theta)
        return s, (u - s * theta, cfg.rho * b + (1 - cfg.rho) * s)


class Cumulative(stepfn.StepRule):
    """A step the generator cannot fuse (a scan over neurons is not elementwise)."""

    states = ("v",)

    @staticmethod
    def step(x, state, cfg):
        u = 0.9 * state[0] + torch.cumsum(x, dim=-1)
        s = surrogate.ATan()(u - 1.0)
        return s, (u * (1 - s),)


RULES = [Adaptive(), R.HTDGLIF()]


@pytest.fixture
def host_shim(monkeypatch):
    """The dispatcher takes CPU tensors for CUDA ones; the CUDA C runs through the host shim."""
    if host.compiler() is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs g++ to check the kernels on the CPU")
        pytest.skip("no C++ compiler for the kernels' host shim")
    real = dispatch.select
    monkeypatch.setattr(dispatch, "cupy_problem", lambda device=None: None)
    monkeypatch.setattr(dispatch, "select", lambda backend, **kw: real(backend, **{
        **kw, "device": None}))


def _run(node, x):
    """Two chained multi-step calls; outputs, final states, the gradient to ``x``."""
    outs = [node(x[:3]), node(x[3:])]
    states = [node.v, *(getattr(node, n) for n in node._extra_states)]
    gen = torch.Generator().manual_seed(3)
    terms = outs + states
    loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in terms)
    (grad,) = torch.autograd.grad(loss, x)
    return outs, states, grad


@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
def test_cupy_backend_equals_the_steps_loop(rule, host_shim, monkeypatch):
    runs = []
    real = cuda_gen.sequence
    monkeypatch.setattr(cuda_gen, "sequence", lambda *a: runs.append(a[1].shape) or real(*a))
    x = (torch.rand(7, 2, 33, generator=torch.Generator().manual_seed(1)) * 1.6).requires_grad_()
    ref = neurons.Node(rule, step_mode="m", implementation="torch")
    fused = neurons.Node(rule, step_mode="m", backend="cupy")
    assert fused.backend == "cupy" and "cupy" in fused.supported_backends
    outs_r, st_r, g_r = _run(ref, x)
    outs_f, st_f, g_f = _run(fused, x)
    assert fused.implementation == "cupy" and ref.implementation == "torch"
    assert runs == [(3, 2, 33), (4, 2, 33)], "each call ran the generated CUDA C"
    for a, b in zip(outs_f, outs_r, strict=True):
        assert torch.equal(a, b)
    rate = float(torch.cat(outs_r).gt(0).float().mean())
    assert 0.05 < rate < 0.95, rate
    for a, b in zip(st_f, st_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_f, g_r, rtol=1e-4, atol=1e-5)


def test_the_generated_kernels_probe_is_their_own(host_shim):
    """The first-use probe of a user's rule runs its generated kernel (no registration)."""
    spec = stepfn.kernel(Adaptive(), "cupy")
    values = first_use._run("cupy", spec, torch.device("cpu"), F32)
    assert [n for n, _ in values] == ["outputs", "states", "states", "gradient"]
    assert all(bool(torch.isfinite(v).all()) for _, v in values)
    assert "Adaptive" in first_use.describe("cupy", spec)


def test_what_cannot_run_is_refused_with_the_reason():
    if dispatch.cupy_problem() is None:
        pytest.skip("CuPy runs here")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        neurons.Node(Adaptive(), step_mode="m", backend="cupy")
    with pytest.raises(ValueError, match="needs step_mode='m'"):
        neurons.Node(Adaptive(), backend="cupy")
    with pytest.raises(ValueError, match=r"unknown backend='numba'; choose one of"):
        neurons.Node(Adaptive(), step_mode="m", backend="numba")
    node = neurons.Node(Adaptive(), step_mode="m", backend="auto")
    x = torch.rand(4, 3)
    assert torch.equal(node(x), neurons.Node(Adaptive(), step_mode="m",
                                             implementation="torch")(x))
    assert node.implementation == "torch" and node.implementation_reason


def test_a_step_the_generator_lacks_and_store_v_seq_have_no_kernel(host_shim):
    with pytest.raises(ValueError, match=r"no generated cupy kernel for Cumulative.*cumsum"):
        neurons.Node(Cumulative(), step_mode="m", backend="cupy")
    with pytest.raises(ValueError, match="store_v_seq=True"):
        neurons.Node(Adaptive(), step_mode="m", backend="cupy", store_v_seq=True)
    assert neurons.Node(Cumulative(), step_mode="m").supported_backends == ("torch",)
    auto = neurons.Node(Adaptive(), step_mode="m", backend="auto", store_v_seq=True)
    x = torch.rand(5, 4)
    assert torch.equal(auto(x), neurons.Node(Adaptive(), step_mode="m", store_v_seq=True,
                                             implementation="torch")(x))
    assert auto.v_seq.shape == (5, 4)
