"""``backend="cupy"`` returns what ``backend="torch"`` returns, for every spikingjelly node.

Multi-step mode, float32, every configuration of ``test_spikingjelly_nodes.py``: outputs,
``v_seq``, every piece of state after the call, and input gradients of random upstream
gradients, over two consecutive calls (the second continues from the first's state, so the
gradients also cross the state). On a GPU the kernels run through CuPy on CUDA tensors; on
any machine they also run through the host shim (the same generated source compiled as C++;
the dispatcher is told a GPU is there and the CPU tensors are kept), so CI checks the wiring.
Runs on both spikingjelly lines.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("spikingjelly")

import torch  # noqa: E402

from spikegrad.neurons import (  # noqa: E402
    HTDGLIFNode,
    MultiStrengthIFNode,
    NALIFNode,
    ResetTermLIFNode,
)
from spikegrad.rules import na, surrogate  # noqa: E402
from spikegrad.rules.cupy_kernels import dispatch, host  # noqa: E402
from tests.neurons.test_spikingjelly_nodes import (  # noqa: E402
    HTDGLIF,
    MULTI,
    NA_CONFIGS,
    RESET_TERM,
    randn_like,
    x_for,
)

F32 = torch.float32
TOL = dict(rtol=1e-5, atol=1e-5)
CASES = (
    [pytest.param(ResetTermLIFNode, *p.values, id="ResetTerm-" + p.id) for p in RESET_TERM]
    + [pytest.param(ResetTermLIFNode, dict(tau=3.0, v_reset=None, reset_grad_scale=0.5,
                                           surrogate_function=surrogate.ATan(2.0)),
                    id="ResetTerm-atan-k0.5")]
    + [pytest.param(NALIFNode, *p.values, id="NA-" + p.id) for p in NA_CONFIGS]
    + [pytest.param(HTDGLIFNode, *p.values, id="HTDGLIF-" + p.id) for p in HTDGLIF]
    + [pytest.param(MultiStrengthIFNode, *p.values, id="Multi-" + p.id) for p in MULTI]
)
GPU = dispatch.cupy_problem()


@pytest.fixture(scope="module")
def _host_build():
    """One host-shim build for the kernels of every configuration here (cached on disk)."""
    specs = [cls(step_mode="m", **kw)._cupy_kernel() for cls, kw in (p.values for p in CASES)]
    host.prepare([s for s in specs if not isinstance(s, str)])


@pytest.fixture(params=["host-shim", "cuda"])
def device(request, monkeypatch):
    if request.param == "cuda":
        if GPU is not None:
            pytest.skip(f"CuPy kernels cannot run here: {GPU[1]}")
        return "cuda"
    if host.compiler() is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs g++ to check the kernels on the CPU")
        pytest.skip("no C++ compiler for the kernels' host shim")
    request.getfixturevalue("_host_build")
    real = dispatch.select

    def cpu_as_gpu(backend, **kw):
        return real(backend, **{**kw, "device": None})

    monkeypatch.setattr(dispatch, "cupy_problem", lambda: None)
    monkeypatch.setattr(dispatch, "select", cpu_as_gpu)
    return "cpu"


def _state(node):
    names = ("v", *node._extra_states)
    return [getattr(node, n) for n in names if isinstance(getattr(node, n), torch.Tensor)]


def _run(node, x, split=4):
    outs, vseqs, states = [], [], []
    for part in (x[:split], x[split:]):
        outs.append(node(part))
        vseqs.append(node.v_seq)
        states.append(_state(node))
    return outs, vseqs, states


@pytest.mark.parametrize("cls, kw", CASES)
def test_cupy_backend_equals_torch_backend(cls, kw, device):
    x = x_for(cls, kw, seed=5, dtype=F32).detach().to(device).requires_grad_(True)
    ref = cls(step_mode="m", store_v_seq=True, backend="torch", **kw)
    fused = cls(step_mode="m", store_v_seq=True, backend="cupy", **kw)
    outs_r, vs_r, st_r = _run(ref, x)
    outs_f, vs_f, st_f = _run(fused, x)
    warm = kw.get("warm_up", False)
    assert fused.implementation == ("torch" if warm else "cupy")
    for a, b in zip(outs_f + vs_f + sum(st_f, []), outs_r + vs_r + sum(st_r, []), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    rate = (torch.cat(outs_r) > 0).float().mean().item()
    assert 0.05 < rate < 0.95, f"firing rate {rate:.3f}: inputs do not exercise the node"
    loss_terms = outs_r + [v for v in vs_r if v.requires_grad]
    ups = [randn_like(t, seed=i) for i, t in enumerate(loss_terms)]

    def grad(outs, vs):
        terms = outs + [v for v in vs if v.requires_grad]
        assert len(terms) == len(ups)
        (g,) = torch.autograd.grad(sum((t * u).sum() for t, u in zip(terms, ups, strict=True)),
                                   x)
        return g

    torch.testing.assert_close(grad(outs_f, vs_f), grad(outs_r, vs_r), **TOL)


def test_non_contiguous_input_and_no_grad(device):
    x = torch.rand(3, 9, 5, device=device).transpose(0, 1)  # [T=9, B=3, N=5], not contiguous
    ref, fused = (ResetTermLIFNode(step_mode="m", backend=b, tau_s=2.0) for b in ("torch", "cupy"))
    with torch.no_grad():
        assert torch.equal(fused(x), ref(x)) and torch.equal(fused.v, ref.v)


def test_na_rescale_through_the_node(device):
    x = x_for(NALIFNode, dict(tau_s=2.0), seed=7, dtype=F32).detach().to(device)
    grads = []
    for backend in ("torch", "cupy"):
        xi = x.clone().requires_grad_(True)
        node = NALIFNode(step_mode="m", backend=backend, tau_s=2.0, rescale=na.Rescale())
        out = node(xi)
        (g,) = torch.autograd.grad((out * randn_like(out, seed=1)).sum(), xi)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], **TOL)
