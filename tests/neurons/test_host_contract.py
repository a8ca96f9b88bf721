"""The hosts' contracts that a drop-in must keep, for every spikegrad neuron.

* truncated BPTT: spikingjelly's ``functional.detach_net`` in both step modes equals a second
  chunk run from states made under ``torch.no_grad()`` (same outputs, same weight gradients);
* positional order: every spikingjelly node takes the host's ``LIFNode``/``IFNode`` parameters
  in the host's order (checked with ``inspect.signature`` against the installed line), its own
  options keyword-only, and a positional call binds as the host's would;
* ``functional_forward`` (2.x's explicit-state protocol) equals the stateful call and leaves the
  node's state alone;
* spikingjelly's surrogate interface (``set_spiking_mode``) on spikegrad's surrogates;
* snntorch's ``graded_spikes_factor``/``learn_graded_spikes_factor`` on every neuron (gradient
  of the factor checked against the output it scales) and ``surrogate_disable`` on
  ``ResetTermLeaky`` (the host's bypass: the same spikes, no gradient through them).

Runs on spikingjelly 2.x and 0.0.0.0.14.
"""

from __future__ import annotations

import copy
import inspect
import sys
import types

import pytest

pytest.importorskip("spikingjelly")
pytest.importorskip("snntorch")

import snntorch as snn  # noqa: E402
import torch  # noqa: E402
from spikingjelly.activation_based import functional, neuron  # noqa: E402
from torch import nn  # noqa: E402

from spikegrad import neurons  # noqa: E402
from spikegrad.adapters.spikingjelly import IS_SJ2  # noqa: E402
from spikegrad.rules import surrogate  # noqa: E402
from tests.neurons.test_snntorch_neurons import run as _loop  # noqa: E402  (the host's loop)

F64 = torch.float64
T, B, N = 6, 3, 5

SJ_NODES = {
    "ResetTermLIFNode": (neurons.ResetTermLIFNode, neuron.LIFNode),
    "NALIFNode": (neurons.NALIFNode, neuron.LIFNode),
    "HTDGLIFNode": (neurons.HTDGLIFNode, neuron.IFNode),
    "MultiStrengthIFNode": (neurons.MultiStrengthIFNode, neuron.IFNode),
}


def _net(cls, mode: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    node = cls(step_mode=mode)
    return nn.Sequential(nn.Linear(N, N, dtype=F64), node)


def _run(net: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "m":
        lin, node = net
        return node(lin(x))
    return torch.stack([net(x[t]) for t in range(x.shape[0])])


def _inputs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2 * T, B, N, generator=g, dtype=F64) * 1.5


# --- truncated BPTT -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("name", list(SJ_NODES))
def test_detach_net_is_truncated_bptt(name, mode):
    cls = SJ_NODES[name][0]
    x = _inputs(1)
    g = torch.randn(2 * T, B, N, generator=torch.Generator().manual_seed(2), dtype=F64)

    net = _net(cls, mode)
    functional.reset_net(net)
    out1 = _run(net, x[:T], mode)
    (out1 * g[:T]).sum().backward()
    functional.detach_net(net)
    for value in net[1]._memories.values():  # every state is off the graph, values kept
        assert not (isinstance(value, torch.Tensor) and value.requires_grad)
    net.zero_grad()
    out2 = _run(net, x[T:], mode)
    (out2 * g[T:]).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]

    ref = _net(cls, mode)  # same seed, same weights: the first chunk without a graph
    functional.reset_net(ref)
    with torch.no_grad():
        ref1 = _run(ref, x[:T], mode)
    ref2 = _run(ref, x[T:], mode)
    (ref2 * g[T:]).sum().backward()

    assert torch.equal(out1.detach(), ref1)
    assert torch.equal(out2.detach(), ref2.detach())
    assert any(r.grad.abs().sum() > 0 for r in ref.parameters())  # the check can fail
    for got, want in zip(grads, (p.grad for p in ref.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_detach_net_cuts_the_first_chunk():
    """Without detach_net the second chunk's gradient reaches through the first (so the test
    above compares something that differs)."""
    x = _inputs(1)
    g = torch.randn(2 * T, B, N, generator=torch.Generator().manual_seed(2), dtype=F64)
    full, cut = _net(neurons.ResetTermLIFNode, "m"), _net(neurons.ResetTermLIFNode, "m")
    for net, detach in ((full, False), (cut, True)):
        functional.reset_net(net)
        _run(net, x[:T], "m")
        if detach:
            functional.detach_net(net)
        (_run(net, x[T:], "m") * g[T:]).sum().backward()
    assert not torch.allclose(full[0].weight.grad, cut[0].weight.grad)


# --- positional order ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SJ_NODES))
def test_positional_order_is_the_hosts(name):
    ours, host = SJ_NODES[name]
    host_params = [p for p in inspect.signature(host).parameters.values()
                   if p.kind is p.POSITIONAL_OR_KEYWORD]
    params = list(inspect.signature(ours).parameters.values())
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == [p.name for p in host_params]
    own = [p for p in params if p.name not in {h.name for h in host_params}]
    assert own and all(p.kind is p.KEYWORD_ONLY for p in own)
    assert ("backend" in [p.name for p in positional]) is (not IS_SJ2)  # 0.0.0.0.14 has it


@pytest.mark.parametrize("name", list(SJ_NODES))
def test_positional_call_binds_as_the_hosts(name):
    ours, host = SJ_NODES[name]
    names = [p.name for p in inspect.signature(host).parameters.values()
             if p.kind is p.POSITIONAL_OR_KEYWORD]
    defaults = {p.name: p.default for p in inspect.signature(ours).parameters.values()}
    values = {**{n: defaults[n] for n in names}, "step_mode": "m", "store_v_seq": True}
    node = ours(*(values[n] for n in names))
    assert node.step_mode == "m" and node.store_v_seq is True


def test_host_parameters_a_rule_cannot_honour_raise_with_the_reason():
    with pytest.raises(ValueError, match="surrogate_function.*NA defines the gradient"):
        neurons.NALIFNode(surrogate_function=surrogate.ATan())
    with pytest.raises(ValueError, match="detach_reset"):
        neurons.NALIFNode(detach_reset=True)
    with pytest.raises(ValueError, match="v_reset.*resets to zero"):
        neurons.HTDGLIFNode(v_reset=None)
    with pytest.raises(ValueError, match="detach_reset.*alpha=0.0"):
        neurons.HTDGLIFNode(detach_reset=True)
    with pytest.raises(ValueError, match="v_reset.*subtracts"):
        neurons.MultiStrengthIFNode(1.0, 0.0)  # the host's positional v_reset
    with pytest.raises(ValueError, match="surrogate_function.*straight-through"):
        neurons.MultiStrengthIFNode(surrogate_function=surrogate.Sigmoid())


# --- functional_forward (2.x) -------------------------------------------------------------------
@pytest.mark.skipif(not IS_SJ2, reason="functional_forward is spikingjelly 2.x's protocol only")
@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("name", list(SJ_NODES))
def test_functional_forward_equals_the_stateful_call(name, mode):
    cls = SJ_NODES[name][0]
    x = _inputs(3)[:T].requires_grad_(True)
    inp = x if mode == "m" else x[0]
    node = cls(step_mode=mode)
    before = {k: v for k, v in node._memories.items()}
    outs, states = node.functional_forward((inp,), tuple(node._memories.values()))
    assert {k: v for k, v in node._memories.items()} == before  # the node's state untouched
    ref = cls(step_mode=mode)
    want = ref(inp)
    assert torch.equal(outs[0], want)
    for got, expected in zip(states, ref._memories.values(), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    node(inp)  # the stateful path still works after a functional call
    g = torch.randn_like(want)
    (ga,) = torch.autograd.grad((outs[0] * g).sum(), x)
    (gb,) = torch.autograd.grad((want * g).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


# --- spikingjelly's surrogate interface ---------------------------------------------------------
@pytest.mark.parametrize("make", [surrogate.Sigmoid, surrogate.ATan])
def test_set_spiking_mode(make):
    fn = make()
    x = torch.linspace(-1, 1, 9, dtype=F64)
    fn.set_spiking_mode(False)
    assert fn == make(spiking=False) and hash(fn) == hash(make(spiking=False))
    torch.testing.assert_close(fn(x), fn.primitive(x))
    fn.set_spiking_mode(True)
    assert torch.equal(fn(x), (x > 0).to(F64))
    with pytest.raises(TypeError, match="spiking must be a bool"):
        fn.set_spiking_mode(1)


def test_host_plot_surrogate_function_takes_a_spikegrad_surrogate(monkeypatch, tmp_path):
    sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    plot = getattr(sj_surrogate, "plot_surrogate_function", None)
    if plot is None:
        pytest.skip("this spikingjelly line has no plot_surrogate_function")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the host's plot styles need LaTeX and scienceplots; only its calls on the surrogate matter
    monkeypatch.setitem(sys.modules, "scienceplots", types.ModuleType("scienceplots"))
    monkeypatch.setattr(plt.style, "use", lambda *a, **k: None)
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)
    fn = surrogate.ATan()
    plot(fn)
    assert fn.spiking is True  # the host switches it back


# --- snntorch: graded spikes and surrogate_disable ------------------------------------------------
SNN = {
    "ResetTermLeaky": lambda **kw: neurons.ResetTermLeaky(0.9, **kw),
    "ResetTermLeaky-trace": lambda **kw: neurons.ResetTermLeaky(0.9, tau_s=2.0, **kw),
    "NALeaky": lambda **kw: neurons.NALeaky(0.8, **kw),
    "HTDGLIFLeaky": lambda **kw: neurons.HTDGLIFLeaky(**kw),
    "MultiStrengthLeaky": lambda **kw: neurons.MultiStrengthLeaky(**kw),
}


@pytest.mark.parametrize("name", list(SNN))
def test_learn_graded_spikes_factor(name):
    cur = (_inputs(4)[:T] * 1.2).requires_grad_(True)
    g = torch.randn(T, B, N, generator=torch.Generator().manual_seed(5), dtype=F64)
    plain = SNN[name]().double()
    scaled = SNN[name](graded_spikes_factor=1.7, learn_graded_spikes_factor=True).double()
    factor = scaled.graded_spikes_factor
    assert isinstance(factor, nn.Parameter) and factor in set(scaled.parameters())

    out0, mem0 = _loop(plain, cur)
    out1, mem1 = _loop(scaled, cur)
    assert out0.abs().sum() > 0
    f = float(factor.detach())  # the host keeps the factor as a float32 tensor (1.7 rounded)
    torch.testing.assert_close(out1, f * out0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mem1, mem0, rtol=0, atol=0)  # the rule runs unscaled
    gf, gc = torch.autograd.grad((out1 * g).sum(), (factor, cur))
    # d/df sum(f * out0 * g) = sum(out0 * g); the input sees the rule's gradient times f
    torch.testing.assert_close(gf, (out0.detach() * g).sum().to(gf.dtype), rtol=1e-6, atol=1e-9)
    (g0,) = torch.autograd.grad((out0 * g).sum(), cur)
    torch.testing.assert_close(gc, f * g0, rtol=1e-10, atol=1e-12)


def test_na_sequence_applies_the_graded_spikes_factor():
    cur = _inputs(6)[:T].requires_grad_(True)
    lif = neurons.NALeaky(0.8, graded_spikes_factor=0.5).double()
    out, _ = lif.sequence(cur)
    loop, _ = _loop(lif, cur)
    torch.testing.assert_close(out, loop, rtol=1e-12, atol=1e-12)
    assert set(out.unique().tolist()) <= {0.0, 0.5}


def test_reset_term_surrogate_disable_is_the_hosts_bypass():
    cur = (_inputs(7)[:T]).requires_grad_(True)
    ours = neurons.ResetTermLeaky(0.9, surrogate_disable=True).double()
    host = snn.Leaky(0.9, surrogate_disable=True, reset_mechanism="zero").double()
    spk, mem = _loop(ours, cur)
    mem_h = host.reset_mem()
    spk_h = []
    for t in range(T):
        s, mem_h = host(cur[t], mem_h)
        spk_h.append(s)
    assert torch.equal(spk, torch.stack(spk_h))
    assert spk.sum() > 0 and not spk.requires_grad  # no gradient through the spikes
    (g_mem,) = torch.autograd.grad(mem.sum(), cur)  # mem still carries the leak's gradient
    assert g_mem.abs().sum() > 0


def test_state_layout_is_the_hosts_where_the_rule_adds_none():
    """spikingjelly's functional tools take a node's memories as its state tuple: a reset-term
    node without a trace has the host's ``('v',)``; a trace or NA's ``u`` add their own."""
    assert tuple(neurons.ResetTermLIFNode()._memories) == tuple(neuron.LIFNode()._memories)
    assert tuple(neurons.ResetTermLIFNode(tau_s=2.0)._memories) == ("v", "trace")
    assert tuple(neurons.NALIFNode()._memories) == ("v", "u", "trace")
    for mode in "sm":  # and the trace-less node still runs in both modes
        node = neurons.ResetTermLIFNode(step_mode=mode)
        x = _inputs(8)[:T]
        out = node(x) if mode == "m" else torch.stack([node(x[t]) for t in range(T)])
        assert out.sum() > 0 and tuple(node._memories) == ("v",)


@pytest.mark.parametrize("mode", ["s", "m"])
def test_na_node_refuses_an_assigned_v_instead_of_ignoring_it(mode):
    """NA's state is u (v is derived from it): a v set from outside, before the first step or
    mid-sequence, raises; moving the node (``.double()``) or deep-copying it does not."""
    x = _inputs(9)[:T]
    node = neurons.NALIFNode(step_mode=mode)
    node.v = torch.rand(B, N, dtype=F64)
    with pytest.raises(ValueError, match="node.u"):
        node(x if mode == "m" else x[0])
    node = neurons.NALIFNode(step_mode=mode).float()
    node(x.float() if mode == "m" else x[0].float())
    node = copy.deepcopy(node).double()
    out = node(x if mode == "m" else x[1])
    assert out.dtype == F64


def test_reset_mechanism_set_after_construction_is_followed_or_refused():
    """snntorch's ``reset_mechanism`` is a settable property: the rule follows it (NA's replay
    included, equal to a neuron built with it), or the assignment raises; state_dicts saved with
    another reset carry it over."""
    cur = _inputs(10)[:T].requires_grad_(True)
    g = torch.randn(T, B, N, generator=torch.Generator().manual_seed(11), dtype=F64)
    for make in (lambda **kw: neurons.NALeaky(0.8, **kw),
                 lambda **kw: neurons.ResetTermLeaky(0.9, **kw)):
        changed, built = make().double(), make(reset_mechanism="subtract").double()
        changed.reset_mechanism = "subtract"
        (a, ma), (b, mb) = _loop(changed, cur), _loop(built, cur)
        assert torch.equal(a, b) and torch.equal(ma, mb)
        (ga,) = torch.autograd.grad((a * g).sum(), cur)
        (gb,) = torch.autograd.grad((b * g).sum(), cur)
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
        zero = make().double()
        (z, _) = _loop(zero, cur)
        assert not torch.equal(z, a)  # the two resets differ on this input
        loaded = make().double()
        loaded.load_state_dict(built.state_dict())
        assert loaded.reset_mechanism == "subtract"
        assert torch.equal(_loop(loaded, cur)[0], b)
    for lif, value in ((neurons.NALeaky(0.8), "none"), (neurons.ResetTermLeaky(0.9), "none"),
                       (neurons.HTDGLIFLeaky(), "subtract"),
                       (neurons.MultiStrengthLeaky(), "zero")):
        before = lif.reset_mechanism
        with pytest.raises(ValueError, match="reset_mechanism"):
            lif.reset_mechanism = value
        assert lif.reset_mechanism == before
