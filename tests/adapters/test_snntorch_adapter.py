"""The snntorch adapter: host idioms shared by every spikegrad snntorch neuron, and host traps.

* per-step idioms (``init_hidden``, ``output``, lazy state, batch-size changes), persistence
  (``state_dict``, whole-model ``torch.save``, ``deepcopy``), dtypes and refused flags, for each
  neuron (ResetTermLeaky with and without its trace, HTDGLIFLeaky, MultiStrengthLeaky);
* snntorch's traps: ``utils.reset`` (top-level children only, every neuron of the process),
  the class-level registry ``SpikingNeuron.instances`` (kept weak for spikegrad neurons),
  ``Leaky.detach_hidden``; against :func:`spikegrad.neurons.reset_states`.

Host behaviour that spikegrad cannot change is asserted too, so that a change upstream shows.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import weakref

import pytest
import snntorch as snn
import torch
from snntorch import utils
from snntorch.functional import quant
from torch import nn

from spikegrad.adapters.snntorch import SpikegradLeaky, _RegistryHandle
from spikegrad.neurons import HTDGLIFLeaky, MultiStrengthLeaky, ResetTermLeaky, reset_states

B, N = 4, 7

NEURONS = {
    "ResetTermLeaky": lambda **kw: ResetTermLeaky(0.9, **kw),
    "ResetTermLeaky-trace": lambda **kw: ResetTermLeaky(0.9, tau_s=2.0, **kw),
    "HTDGLIFLeaky": lambda **kw: HTDGLIFLeaky(**kw),
    "MultiStrengthLeaky": lambda **kw: MultiStrengthLeaky(**kw),
}
CLASSES = {
    "ResetTermLeaky": lambda **kw: ResetTermLeaky(0.9, **kw),
    "HTDGLIFLeaky": lambda **kw: HTDGLIFLeaky(**kw),
    "MultiStrengthLeaky": lambda **kw: MultiStrengthLeaky(**kw),
}


@pytest.fixture(params=list(NEURONS), ids=list(NEURONS))
def make(request):
    return NEURONS[request.param]


@pytest.fixture(params=list(CLASSES), ids=list(CLASSES))
def make_cls(request):
    return CLASSES[request.param]


def inputs(steps=6, batch=B, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch, N, generator=g, dtype=dtype) * 1.4


def run(neuron, x):
    mem = neuron.init_leaky()
    outs, mems = [], []
    for t in range(x.shape[0]):
        out, mem = neuron(x[t], mem)
        outs.append(out)
        mems.append(mem)
    return torch.stack(outs), torch.stack(mems)


def run_hidden(neuron, x):
    return torch.stack([neuron(x[t]) for t in range(x.shape[0])])


def state_tensors(neuron):
    return [neuron.mem] + [getattr(neuron, name) for name in neuron._state_names]


def assert_zero_state(neuron):
    for s in state_tensors(neuron):
        assert s.numel() > 0 and torch.count_nonzero(s) == 0
        assert s.grad_fn is None


def assert_nonzero_state(neuron):
    for s in state_tensors(neuron):
        assert torch.count_nonzero(s) > 0


class TopLevel(nn.Module):
    """A network whose neuron is a top-level child (what ``utils.reset`` inspects)."""

    def __init__(self, neuron):
        super().__init__()
        self.fc = nn.Linear(N, N)
        self.lif = neuron

    def forward(self, x):
        return self.lif(self.fc(x))


class Nested(nn.Module):
    """A network whose only neuron sits inside an ``nn.Sequential``."""

    def __init__(self, neuron):
        super().__init__()
        self.body = nn.Sequential(nn.Identity(), neuron)

    def forward(self, x):
        return self.body(x)


# =================================================================================================
# 4. Host idioms
# =================================================================================================
def test_init_hidden_returns_output_only(make):
    x = inputs()
    hidden = make(init_hidden=True)
    outs = []
    for t in range(x.shape[0]):
        out = hidden(x[t])
        assert isinstance(out, torch.Tensor)
        outs.append(out)
    ref, _ = run(make(), x)
    torch.testing.assert_close(torch.stack(outs), ref)
    with pytest.raises(TypeError, match="mem"):
        hidden(x[0], hidden.mem)


def test_output_true_with_init_hidden_returns_mem(make):
    x = inputs()
    n = make(init_hidden=True, output=True)
    ref_out, ref_mem = run(make(), x)
    for t in range(x.shape[0]):
        res = n(x[t])
        assert isinstance(res, tuple) and len(res) == 2
        out, mem = res
        assert mem is n.mem
        torch.testing.assert_close(out, ref_out[t])
        torch.testing.assert_close(mem, ref_mem[t])


def test_lazy_state(make):
    n = make()
    m0 = n.init_leaky()
    assert isinstance(m0, torch.Tensor) and m0.numel() == 0
    assert n.reset_mem().numel() == 0
    x = inputs()
    out, mem = n(x[0], m0)
    assert n.mem.shape == mem.shape == x[0].shape
    ref = make()
    out_ref, mem_ref = ref(x[0], torch.zeros_like(x[0]))
    assert torch.equal(out, out_ref) and torch.equal(mem, mem_ref)
    for s in state_tensors(n):
        assert s.shape == x[0].shape


@pytest.mark.parametrize("init_hidden", [False, True])
def test_batch_size_change_needs_rest(make, init_hidden):
    """A state of another batch size raises, naming both shapes (the host silently zeroes it);
    from rest (``reset_mem()``/``init_leaky()``) a new batch size restarts as in the host."""
    n = make(init_hidden=init_hidden)
    big, small = inputs(batch=5, seed=1), inputs(batch=3, seed=2)
    mem = n.init_leaky()
    for t in range(3):
        if init_hidden:
            n(big[t])
        else:
            _, mem = n(big[t], mem)
    assert_nonzero_state(n)
    shapes = rf"\(5, {small.shape[-1]}\).*\(3, {small.shape[-1]}\)"
    with pytest.raises(ValueError, match=shapes + ".*reset_mem"):
        n(small[0]) if init_hidden else n(small[0], mem)
    mem = n.reset_mem()
    assert mem.shape == big[0].shape  # the rest state keeps the old batch size ...
    fresh = make(init_hidden=init_hidden)
    fresh_mem = fresh.init_leaky()
    for t in range(3):
        if init_hidden:
            out, ref = n(small[t]), fresh(small[t])
        else:
            out, mem = n(small[t], mem)  # ... and restarts at the new one
            ref, fresh_mem = fresh(small[t], fresh_mem)
            assert torch.equal(mem, fresh_mem)
        assert torch.equal(out, ref)
        for s in state_tensors(n):
            assert s.shape == small[t].shape


def test_identity_on_mem_between_steps_keeps_gradients(make):
    """Every stateful neuron: ``mem.clone()`` / ``mem * 1.0`` between steps changes nothing."""
    x = inputs(seed=4).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))

    def grad(between):
        n, mem, outs = make(), None, []
        mem = n.init_leaky()
        for t in range(x.shape[0]):
            out, mem = n(x[t], mem)
            outs.append(out)
            mem = between(mem)
        return torch.autograd.grad((torch.stack(outs) * g).sum(), x)[0]

    want = grad(lambda m: m)
    assert torch.count_nonzero(want) > 0
    assert torch.equal(grad(lambda m: m.clone()), want)
    assert torch.equal(grad(lambda m: m * 1.0), want)


def test_mem_that_broadcasts_is_used(make):
    """A ``mem`` of shape ``[N]`` (e.g. a learnt initial state) is broadcast over the batch,
    not replaced by zeros: the output equals the loop from the expanded state."""
    x = inputs(batch=4, seed=3)
    init = torch.linspace(0.1, 0.9, x.shape[-1], dtype=x.dtype)
    a, b = make(), make()
    out_a, _ = a(x[0], init)
    out_b, _ = b(x[0], init.expand_as(x[0]).clone())
    assert torch.equal(out_a, out_b)
    with pytest.raises(ValueError, match=r"\(3,\).*does not broadcast"):
        make()(x[0], torch.zeros(3, dtype=x.dtype))


def test_explicit_mem_of_a_new_batch_size(make):
    """An explicit zero ``mem`` of the new batch size matches the input, but the extra state
    (trace) still has the old one: it restarts too."""
    n = make()
    big, small = inputs(batch=5, seed=3), inputs(batch=3, seed=4)
    run(n, big)
    out, mem = n(small[0], torch.zeros_like(small[0]))
    ref_out, ref_mem = make()(small[0], torch.zeros_like(small[0]))
    assert torch.equal(out, ref_out) and torch.equal(mem, ref_mem)
    for s in state_tensors(n):
        assert s.shape == small[0].shape


STATE_DICT_PAIRS = [
    pytest.param(lambda: ResetTermLeaky(0.8, threshold=0.7),
                 lambda: ResetTermLeaky(0.5), id="ResetTermLeaky"),
    pytest.param(lambda: ResetTermLeaky(0.8, threshold=0.7, tau_s=2.0, learn_beta=True),
                 lambda: ResetTermLeaky(0.5, tau_s=2.0, learn_beta=True),
                 id="ResetTermLeaky-trace-learn_beta"),
    pytest.param(lambda: HTDGLIFLeaky(beta=0.8, threshold=0.6),
                 lambda: HTDGLIFLeaky(), id="HTDGLIFLeaky"),
    pytest.param(lambda: HTDGLIFLeaky(mode="braincog", threshold=0.6),
                 lambda: HTDGLIFLeaky(mode="braincog"), id="HTDGLIFLeaky-braincog"),
    pytest.param(lambda: HTDGLIFLeaky(mode="braincog", threshold=0.6, alpha=0.4, dt=0.5),
                 lambda: HTDGLIFLeaky(mode="braincog", alpha=0.4, dt=0.5),
                 id="HTDGLIFLeaky-braincog-dt"),
    pytest.param(lambda: MultiStrengthLeaky(beta=0.9, threshold=0.7),
                 lambda: MultiStrengthLeaky(), id="MultiStrengthLeaky"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("make_saved, make_fresh", STATE_DICT_PAIRS)
def test_state_dict_round_trip(make_saved, make_fresh, dtype):
    saved, fresh = make_saved(), make_fresh()
    x = inputs(steps=10, dtype=dtype)
    out_saved, mem_saved = run(saved, x)
    out_fresh, _ = run(fresh, x)
    assert not torch.equal(out_saved, out_fresh)  # the fresh neuron really is different
    fresh.load_state_dict(saved.state_dict())
    out_loaded, mem_loaded = run(fresh, x)
    assert torch.equal(out_loaded, out_saved)
    assert torch.equal(mem_loaded, mem_saved)


def test_whole_model_torch_save_load(make):
    torch.manual_seed(0)
    model = TopLevel(make(init_hidden=True))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded.lif) is type(model.lif)
    x = inputs(steps=8)
    reset_states(model)
    torch.testing.assert_close(run_hidden(loaded, x), run_hidden(model, x), rtol=0, atol=0)


def test_host_default_surrogate_cannot_be_pickled():
    """Host limit (documented, not copied): snn.Leaky's default spike_grad is the closure
    ``atan()``, so a whole model holding one cannot be pickled."""
    model = TopLevel(snn.Leaky(0.9, init_hidden=True))
    try:
        with pytest.raises((AttributeError, pickle.PicklingError, TypeError), match="pickle"):
            torch.save(model, io.BytesIO())
    finally:
        snn.SpikingNeuron.instances.remove(model.lif)


def test_deepcopy(make):
    n = make(init_hidden=True)
    x = inputs(steps=8)
    run_hidden(n, x[:3])
    clone = copy.deepcopy(n)
    for a, b in zip(state_tensors(n), state_tensors(clone), strict=True):
        assert torch.equal(a, b) and a is not b
    torch.testing.assert_close(run_hidden(clone, x[3:]), run_hidden(n, x[3:]), rtol=0, atol=0)
    before = [s.clone() for s in state_tensors(n)]
    clone(x[0] * 3)  # the copy's state is its own
    for a, b in zip(state_tensors(n), before, strict=True):
        assert torch.equal(a, b)


def test_float64(make):
    x32 = inputs(steps=8)
    x64 = x32.double().requires_grad_(True)
    out64, mem64 = run(make(), x64)
    out32, mem32 = run(make(), x32)
    assert out64.dtype == mem64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mem64.float(), mem32, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out64)
    (grad,) = torch.autograd.grad((out64 * g).sum() + mem64.sum(), x64)
    assert grad.dtype == torch.float64 and torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_input_raises_type_error(make, dtype):
    n = make()
    with pytest.raises(TypeError, match="floating-point"):
        n(torch.ones(B, N, dtype=dtype), n.init_leaky())
    with pytest.raises(TypeError, match="floating-point"):
        make(init_hidden=True)(torch.ones(B, N, dtype=dtype))


def test_reset_delay_false_raises(make_cls):
    with pytest.raises(ValueError, match="reset_delay"):
        make_cls(reset_delay=False)


@pytest.mark.parametrize("flag, value", [
    ("inhibition", True),
    ("state_quant", quant.state_quant(num_bits=8)),
    ("surrogate_disable", True),
])
def test_refused_host_flags_name_the_flag(make_cls, flag, value):
    if flag == "surrogate_disable" and isinstance(make_cls(), ResetTermLeaky):
        # its rule takes any surrogate, so it takes the host's bypass too (its behaviour is
        # tested in tests/neurons/test_host_contract.py)
        assert make_cls(surrogate_disable=True).surrogate_disable is True
        return
    with pytest.raises(ValueError, match=flag):
        make_cls(**{flag: value})


def _strong_entries():
    return [m for m in snn.SpikingNeuron.instances if not isinstance(m, _RegistryHandle)]


def _live_handles():
    return [m for m in snn.SpikingNeuron.instances if isinstance(m, _RegistryHandle) and m.alive()]


@pytest.mark.parametrize("build", [
    pytest.param(lambda: ResetTermLeaky(0.9, reset_delay=False), id="reset_delay"),
    pytest.param(lambda: ResetTermLeaky(0.9, inhibition=True), id="inhibition"),
    pytest.param(lambda: ResetTermLeaky(0.9, tau_s=0.5), id="tau_s"),
    pytest.param(lambda: HTDGLIFLeaky(spike_grad=snn.surrogate.atan()), id="spike_grad"),
    pytest.param(lambda: MultiStrengthLeaky(surrogate_disable=True), id="surrogate_disable"),
])
def test_refused_construction_leaves_nothing_alive_in_the_registry(build):
    gc.collect()
    strong, live = len(_strong_entries()), len(_live_handles())
    with pytest.raises(ValueError):
        build()
    gc.collect()
    assert len(_strong_entries()) == strong
    assert len(_live_handles()) == live


# =================================================================================================
# 5. snntorch traps
# =================================================================================================
def test_utils_reset_resets_mem_and_trace(make):
    """(a) top-level spikegrad neurons: utils.reset zeroes mem AND the extra (trace) state."""
    torch.manual_seed(0)
    net = TopLevel(make(init_hidden=True))
    x = inputs(steps=5)
    run_hidden(net, x[:4])
    assert_nonzero_state(net.lif)
    utils.reset(net)
    assert_zero_state(net.lif)
    fresh = copy.deepcopy(net)
    reset_states(fresh)
    assert torch.equal(net(x[4]), fresh(x[4]))


def test_utils_reset_trace_example_from_brief():
    n = ResetTermLeaky(0.9, tau_s=2, init_hidden=True)
    net = TopLevel(n)
    x = inputs(steps=5)
    run_hidden(net, x[:4])
    assert torch.count_nonzero(n.trace) > 0
    utils.reset(net)
    assert torch.count_nonzero(n.trace) == 0 and torch.count_nonzero(n.mem) == 0
    fresh = ResetTermLeaky(0.9, tau_s=2, init_hidden=True)
    assert torch.equal(n(x[4]), fresh(x[4]))


def test_utils_reset_does_not_reach_nested_neurons(make):
    """(b) host: utils.reset only inspects top-level children; reset_states reaches all."""
    net = Nested(make(init_hidden=True))
    lif = net.body[1]
    x = inputs(steps=5)
    run_hidden(net, x[:4])
    before = [s.clone() for s in state_tensors(lif)]
    assert_nonzero_state(lif)
    utils.reset(net)
    for a, b in zip(state_tensors(lif), before, strict=True):
        assert torch.equal(a, b)  # untouched: the host never looked inside nn.Sequential
    reset_states(net)
    assert_zero_state(lif)
    fresh = make(init_hidden=True)
    assert torch.equal(lif(x[4]), fresh(x[4]))


def test_reset_scopes_host_resets_other_nets_reset_states_does_not(make):
    """(c) host: utils.reset(netA) resets every Leaky of the process, netB's included;
    reset_states(netA) resets exactly netA's neurons."""
    net_a, net_b = TopLevel(make(init_hidden=True)), TopLevel(make(init_hidden=True))
    x = inputs(steps=4)
    run_hidden(net_a, x)
    run_hidden(net_b, x)
    utils.reset(net_a)
    assert_zero_state(net_a.lif)
    assert_zero_state(net_b.lif)  # host semantics: B was reset too

    run_hidden(net_a, x)
    run_hidden(net_b, x)
    b_before = [s.clone() for s in state_tensors(net_b.lif)]
    reset_states(net_a)
    assert_zero_state(net_a.lif)
    for a, b in zip(state_tensors(net_b.lif), b_before, strict=True):
        assert torch.equal(a, b)


def test_reset_states_also_resets_plain_snntorch_neurons():
    plain = snn.Leaky(0.9, init_hidden=True)
    try:
        net = Nested(plain)
        run_hidden(net, inputs(steps=3))
        assert torch.count_nonzero(plain.mem) > 0
        reset_states(net)
        assert torch.count_nonzero(plain.mem) == 0
    finally:
        snn.SpikingNeuron.instances.remove(plain)


def test_registry_holds_spikegrad_neurons_weakly(make):
    """(d) a deleted spikegrad neuron is freed; a plain snn.Leaky is kept by the registry."""
    n = make(init_hidden=True)
    n(inputs()[0])
    ref = weakref.ref(n)
    assert any(isinstance(h, _RegistryHandle) and h._owner() is n
               for h in snn.SpikingNeuron.instances)
    assert not any(m is n for m in snn.SpikingNeuron.instances)
    del n
    gc.collect()
    assert ref() is None

    plain_ref = weakref.ref(snn.Leaky(0.9))
    gc.collect()
    plain = plain_ref()
    try:
        assert plain is not None  # host: SpikingNeuron.instances keeps every neuron ever built
        assert any(m is plain for m in snn.SpikingNeuron.instances)
    finally:
        snn.SpikingNeuron.instances.remove(plain)


def test_registry_does_not_grow_with_dead_handles():
    """Dead handles are pruned at each registration. (snntorch's Leaky stores a bound method on
    itself, a reference cycle, so a neuron is freed by the cyclic collector, not at ``del``.)"""
    x = inputs()[0]
    makers = list(NEURONS.values())
    gc.collect()
    keep = makers[1](init_hidden=True)  # also prunes whatever earlier tests left behind
    keep(x)
    gc.collect()
    before = len(snn.SpikingNeuron.instances)
    for i in range(40):
        n = makers[i % len(makers)](init_hidden=True)
        n(x)
        del n
        if i % 10 == 9:
            gc.collect()
            assert len(snn.SpikingNeuron.instances) <= before + 10
    dead = [h for h in snn.SpikingNeuron.instances
            if isinstance(h, _RegistryHandle) and not h.alive()]
    assert dead  # the last ones are collected but not yet pruned ...
    utils.reset(TopLevel(keep))  # ... and harmless to the host's reset
    assert_zero_state(keep)
    makers[2]()  # the next registration drops every dead handle
    assert len(snn.SpikingNeuron.instances) <= before + 1
    assert not any(isinstance(h, _RegistryHandle) and not h.alive()
                   for h in snn.SpikingNeuron.instances)


@pytest.mark.parametrize("how", ["deepcopy", "torch.load"])
def test_copied_or_loaded_neuron_is_reached_by_utils_reset(make, how):
    """(e) a neuron built by unpickling / deepcopy registers with the host too."""
    net = TopLevel(make(init_hidden=True))
    if how == "deepcopy":
        other = copy.deepcopy(net)
    else:
        buf = io.BytesIO()
        torch.save(net, buf)
        buf.seek(0)
        other = torch.load(buf, weights_only=False)
    assert isinstance(other.lif, SpikegradLeaky) and other.lif is not net.lif
    assert any(isinstance(h, _RegistryHandle) and h._owner() is other.lif
               for h in snn.SpikingNeuron.instances)
    x = inputs(steps=4)
    run_hidden(other, x)
    assert_nonzero_state(other.lif)
    utils.reset(other)
    assert_zero_state(other.lif)


def test_detach_hidden_detaches_mem_and_trace():
    """(f) snn.Leaky.detach_hidden() (truncated BPTT) detaches the trace as well as mem."""
    n = ResetTermLeaky(0.9, tau_s=2.0, init_hidden=True)
    x = inputs(steps=4).requires_grad_(True)
    run_hidden(n, x)
    assert n.mem.grad_fn is not None and n.trace.grad_fn is not None
    mem, trace = n.mem.detach().clone(), n.trace.detach().clone()
    snn.Leaky.detach_hidden()
    assert n.mem.grad_fn is None and not n.mem.requires_grad
    assert n.trace.grad_fn is None and not n.trace.requires_grad
    assert torch.equal(n.mem, mem) and torch.equal(n.trace, trace)  # values kept


def test_detach_hidden_all_neurons(make):
    n = make(init_hidden=True)
    x = inputs(steps=3).requires_grad_(True)
    run_hidden(n, x)
    assert all(s.grad_fn is not None for s in state_tensors(n))
    snn.Leaky.detach_hidden()
    assert all(s.grad_fn is None for s in state_tensors(n))
