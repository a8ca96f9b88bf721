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
from spikingjelly.activation_based import functional  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

from spikegrad.neurons import (  # noqa: E402
    HTDGLIFNode,
    MultiStrengthIFNode,
    NALIFNode,
    ResetTermLIFNode,
)
from spikegrad.rules import (  # noqa: E402
    dispatch,  # noqa: E402
    na,
    surrogate,
)
from spikegrad.rules.cupy_kernels import host  # noqa: E402
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

    monkeypatch.setattr(dispatch, "cupy_problem", lambda device=None: None)
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


def _half_ready(device):
    if device == "cpu" and host.float16_problem() is not None:
        pytest.skip(host.float16_problem())


@pytest.mark.parametrize("dtype", [F32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("cls, kw", CASES)
def test_one_call_equals_two_chained_calls(cls, kw, dtype, device):
    """The state a call leaves is the state the kernel carried: splitting a sequence over two
    calls changes nothing (float32: bit for bit; float16: the carried state is rounded to half
    between the calls, so values agree to half precision and spikes exactly)."""
    if dtype != F32:
        _half_ready(device)
    x = x_for(cls, kw, seed=9, dtype=dtype).detach().to(device)
    whole, split = (cls(step_mode="m", store_v_seq=True, backend="cupy", **kw) for _ in "ab")
    out = [whole(x), whole.v_seq, *_state(whole)]
    first, v_first = split(x[:3]), split.v_seq
    got = [torch.cat([first, split(x[3:])]), torch.cat([v_first, split.v_seq]), *_state(split)]
    for a, b in zip(got, out, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0 if dtype == F32 else 2e-3)


def test_na_float16_spike_is_decided_once(device):
    """fp16 NA: u = 0.8 * 0.5 + 0.6001 = 1.0000977 fires in fp32 (the kernel's arithmetic) but
    rounds to 1.0 in half; nothing after the kernel may re-decide the spike on the rounded u."""
    _half_ready(device)
    x = torch.tensor([0.5, 0.6001, 0.3], dtype=torch.float16, device=device).view(3, 1)
    one = NALIFNode(step_mode="m", store_v_seq=True, backend="cupy")
    two = NALIFNode(step_mode="m", store_v_seq=True, backend="cupy")
    out_one, v_one = one(x), one.v_seq
    out_two = torch.cat([two(x[:2]), two(x[2:])])
    spikes = torch.tensor([[0.0], [1.0], [0.0]], dtype=torch.float16, device=device)
    assert torch.equal(out_one, spikes) and torch.equal(out_two, spikes)
    assert v_one[1].item() == 0.0  # hard reset after the spike at step 1
    assert torch.equal(v_one, one.v_seq) and torch.equal(two.v, one.v)


def test_supported_backends_and_host_set_backend_skip_a_node_without_kernel(monkeypatch, caplog):
    """With CuPy usable, a configuration without a kernel (a host surrogate) reports
    ``("torch",)``, so 0.0.0.0.14's ``functional.set_backend(net, "cupy")`` warns and goes on to
    the next node instead of aborting on the setter's ValueError."""
    monkeypatch.setattr(dispatch, "cupy_problem", lambda device=None: None)
    plain = ResetTermLIFNode(step_mode="m", surrogate_function=sj_surrogate.Sigmoid(alpha=4.0))
    fused = ResetTermLIFNode(step_mode="m")
    assert plain.supported_backends == ("torch",)  # a host surrogate: no fused kernel at all
    assert fused.supported_backends == ("torch", "cupy", "triton")
    set_backend = getattr(functional, "set_backend", None)
    if set_backend is None:
        return  # spikingjelly 2.x has no set_backend
    set_backend(torch.nn.Sequential(plain, fused), "cupy")
    assert plain.backend == "torch" and fused.backend == "cupy"
    assert "does not supports for backend=cupy" in caplog.text


def test_backend_torch_builds_no_kernel():
    """A constant the kernels cannot hold (a surrogate slope past float32) matters only to
    them: backend='torch' constructs and runs, 'auto' falls back saying why."""
    sur = surrogate.ATan(alpha=1e39)
    node = ResetTermLIFNode(step_mode="m", backend="torch", surrogate_function=sur)
    assert node(torch.rand(3, 2)).shape == (3, 2) and node.implementation == "torch"
    auto = ResetTermLIFNode(step_mode="m", backend="auto", surrogate_function=sur)
    assert "not a finite float32" in auto.implementation_reason
    assert auto.supported_backends == ("torch",)


def test_the_configuration_reason_comes_before_a_missing_cupy(monkeypatch):
    """Installing CuPy would not give a host surrogate a kernel: that is the reason given."""
    monkeypatch.setattr(dispatch, "_import_cupy", lambda: ModuleNotFoundError("cupy"))
    with pytest.raises(ValueError, match=r"surrogate spikingjelly.*Sigmoid has no CUDA"):
        ResetTermLIFNode(step_mode="m", backend="cupy", surrogate_function=sj_surrogate.Sigmoid())
    node = ResetTermLIFNode(step_mode="m", backend="auto",
                            surrogate_function=sj_surrogate.Sigmoid())
    assert "has no CUDA expression" in node.implementation_reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a usable GPU")
@pytest.mark.parametrize("backend", ["cupy", "triton"])
def test_no_gpu_is_said_before_any_package(backend):
    """Without a GPU, an explicit kernel backend names the missing device first (installing
    CuPy or Triton would not help), whether or not the package is installed."""
    from spikegrad.neurons import NALIFNode

    with pytest.raises(RuntimeError, match="no CUDA device"):
        NALIFNode(step_mode="m", backend=backend)
