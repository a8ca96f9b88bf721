"""``NALeaky``: NA in snntorch's per-step loop, against the independent reference of
``tests/rules/test_na.py`` (RULES.md §3 written out with explicit loops, no spikegrad code).

* the per-step loop ``spk, mem = lif(cur, mem)`` gives the whole-window NA gradient (spike and
  trace outputs, both distances, both resets), with random upstream gradients on the output and
  on ``mem`` (added to ``δ`` unchanged); it equals ``lif.sequence()``; the forward is RULES.md's
  (strict ``u > ϑ``);
* windows: a new one after ``init_leaky()``/``reset_mem()``/``snntorch.utils.reset``/
  ``Leaky.detach_hidden()`` or a detached ``mem``; nothing is recorded under ``torch.no_grad()``;
  a second backward pass does not reuse the first one's errors;
* memory stays flat over thousands of training steps, and a window is freed without the cyclic
  garbage collector;
* host idioms, refused flags, the rescale (``sequence()`` only; golden values), and the seed-002
  tutorial network with the neuron swapped in.

Gradients are compared with random upstream gradients (never only ``.sum()``), in float64.
"""

from __future__ import annotations

import copy
import gc
import io
import json
import os
import weakref
from pathlib import Path

import pytest
import snntorch as snn
import torch
from snntorch import utils
from snntorch.functional import quant
from torch import nn

from spikegrad.neurons import NALeaky, reset_states
from spikegrad.rules import na
from tests.rules.test_na import (
    P,
    ref_delta,
    ref_errors,
    ref_forward,
    ref_post_reset,
    ref_trace,
    ref_weight,
)

F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}
GOLDEN = json.loads((Path(__file__).parents[1] / "rules" / "data" / "na_golden_bf8b564.json")
                    .read_text())
T, B, N = 7, 3, 5


# --- helpers ------------------------------------------------------------------------------------
def currents(shape=(T, B, N), seed=0, mean=0.45, std=0.7, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * std + mean).to(dtype).requires_grad_(True)


def randn_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(x.shape, generator=g, dtype=F64).to(x.dtype)


def run(lif, x, mem=None):
    """The host's per-step loop from ``lif.init_leaky()`` (or from ``mem``)."""
    mem = lif.init_leaky() if mem is None else mem
    outs, mems = [], []
    for t in range(x.shape[0]):
        out, mem = lif(x[t], mem)
        outs.append(out)
        mems.append(mem)
    return torch.stack(outs), torch.stack(mems)


def run_hidden(lif, x):
    outs, mems = [], []
    for t in range(x.shape[0]):
        outs.append(lif(x[t]))
        mems.append(lif.mem)
    return torch.stack(outs), torch.stack(mems)


def p_of(lif: NALeaky) -> P:
    r = lif.rule
    return P(beta=r.beta, theta=r.threshold, tau_s=r.tau_s, distance=r.distance, clamp=r.clamp,
             error=r.error, reset=r.reset)


def expected_grad(x, g_out, g_mem, p, u_prev=None, a_prev=None):
    return ref_delta(x, g_out, p, u_prev, a_prev) + g_mem


def grad_of(x, outs, mems, g_out, g_mem, **kw):
    (g,) = torch.autograd.grad((outs * g_out).sum() + (mems * g_mem).sum(), x, **kw)
    return g


def assert_meaningful(spk):
    rate = (spk > 0).double().mean().item()
    assert 0.05 < rate < 0.8, f"spike rate {rate:.3f}: inputs do not exercise the neuron"


# =================================================================================================
# 1. The per-step loop against the reference
# =================================================================================================
PER_STEP = [
    pytest.param(dict(tau_s=None), id="spikes-inverse_cube"),
    pytest.param(dict(tau_s=2.0), id="trace-inverse_cube"),
    pytest.param(dict(tau_s=None, distance="inverse"), id="spikes-inverse"),
    pytest.param(dict(tau_s=2.0, distance="inverse"), id="trace-inverse"),
    pytest.param(dict(tau_s=3.0, reset_mechanism="subtract", error="local", clamp=2.0),
                 id="trace-subtract-local"),
    pytest.param(dict(tau_s=None, reset_mechanism="subtract", threshold=0.8),
                 id="spikes-subtract"),
]


@pytest.mark.parametrize("kw", PER_STEP)
def test_per_step_gradients_match_reference(kw):
    lif = NALeaky(0.8, **kw)
    p = p_of(lif)
    x = currents(seed=1)
    outs, mems = run(lif, x)
    s_r, u_r, a_r = ref_forward(x, p)
    assert_meaningful(s_r)
    torch.testing.assert_close(mems, u_r, **TIGHT)
    if p.tau_s is None:
        assert torch.equal(outs, s_r)
    else:
        torch.testing.assert_close(outs, a_r, **TIGHT)
    g_out, g_mem = randn_like(outs, 2), randn_like(mems, 3)
    got = grad_of(x, outs, mems, g_out, g_mem, retain_graph=True)
    torch.testing.assert_close(got, expected_grad(x, g_out, g_mem, p), **TIGHT)
    # the gradient at mem is added unchanged, with no propagation through time
    assert torch.equal(grad_of(x, outs, mems, torch.zeros_like(g_out), g_mem), g_mem)


def test_per_step_mem_gradient_alone_is_identity():
    lif = NALeaky(0.8, tau_s=2.0)
    x = currents(seed=4)
    _, mems = run(lif, x)
    (g,) = torch.autograd.grad(mems[3].sum(), x)
    expected = torch.zeros_like(x)
    expected[3] = 1
    assert torch.equal(g, expected)


@pytest.mark.parametrize("kw", PER_STEP[:2] + PER_STEP[4:5])
def test_per_step_equals_sequence(kw):
    x = currents(seed=5)
    loop, seq = NALeaky(0.8, **kw), NALeaky(0.8, **kw)
    o_l, m_l = run(loop, x)
    o_s, m_s = seq.sequence(x)
    assert torch.equal(o_l, o_s) and torch.equal(m_l, m_s)
    g_out, g_mem = randn_like(o_l, 6), randn_like(m_l, 7)
    torch.testing.assert_close(grad_of(x, o_l, m_l, g_out, g_mem),
                               grad_of(x, o_s, m_s, g_out, g_mem), **TIGHT)
    # sequence() leaves the state as after the loop
    assert torch.equal(seq.mem, loop.mem.detach()) and seq.mem.grad_fn is None
    assert torch.equal(seq.trace, loop.trace)
    o_next_l, _ = loop(x[0].detach(), loop.mem)
    o_next_s, _ = seq(x[0].detach(), seq.mem)
    assert torch.equal(o_next_l, o_next_s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_forward_is_rules_forward_with_strict_threshold(dtype):
    """``u == ϑ`` does not spike (strict ``u > ϑ``, the authors'); ``mem`` is the pre-reset
    potential; the hard reset and the leak act on the post-reset state."""
    lif = NALeaky(0.5, threshold=1.0)
    out, mem = lif(torch.tensor([[1.0, 1.5, 0.5]], dtype=dtype), lif.init_leaky())
    assert out.tolist() == [[0.0, 1.0, 0.0]] and mem.tolist() == [[1.0, 1.5, 0.5]]
    # u = 0.5 v + c with v = [1.0, 0 (reset), 0.5]: u == ϑ exactly twice, no spike
    out, mem = lif(torch.tensor([[0.5, 0.5, 0.75]], dtype=dtype), mem)
    assert out.tolist() == [[0.0, 0.0, 0.0]] and mem.tolist() == [[1.0, 0.5, 1.0]]
    out, mem = lif(torch.tensor([[0.0, 0.0, 0.0]], dtype=dtype), mem)
    assert out.tolist() == [[0.0, 0.0, 0.0]] and mem.tolist() == [[0.5, 0.25, 0.5]]


def test_forward_matches_reference_float32():
    x = currents(seed=8, dtype=torch.float32).detach()
    lif = NALeaky(0.8, tau_s=2.0)
    outs, mems = run(lif, x)
    _, u_r, a_r = ref_forward(x, p_of(lif))
    torch.testing.assert_close(mems.double(), u_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs.double(), a_r, rtol=1e-5, atol=1e-6)


# =================================================================================================
# 2. Windows
# =================================================================================================
def _two_segments(how, tau_s):
    """Run 4 steps, apply ``how``, run 5 more; return everything needed for the check."""
    init_hidden = how in ("utils.reset", "detach_hidden")
    lif = NALeaky(0.8, tau_s=tau_s, init_hidden=init_hidden)
    net = nn.ModuleDict({"lif": lif})  # lif is a top-level child, as utils.reset needs
    x1, x2 = currents((4, B, N), seed=9), currents((5, B, N), seed=10)
    if init_hidden:
        lif.reset_mem()
        o1, m1 = run_hidden(lif, x1)
    else:
        o1, m1 = run(lif, x1)
    first = lif._window
    u_prev = a_prev = None
    mem = m1[-1]
    if how == "init_leaky":
        mem = lif.init_leaky()
    elif how == "reset_mem":
        mem = lif.reset_mem()
    elif how == "utils.reset":
        utils.reset(net)
    elif how == "detach_hidden":
        u_prev, a_prev = lif.mem.detach().clone(), lif.trace.clone()
        snn.Leaky.detach_hidden()
    elif how == "detached_mem":
        mem = mem.detach()
        u_prev, a_prev = mem, lif.trace.clone()
    if init_hidden:
        o2, m2 = run_hidden(lif, x2)
    else:
        o2, m2 = run(lif, x2, mem)
    assert lif._window is not first and len(lif._window) == 5 and len(first) == 4
    return lif, x1, x2, o1, m1, o2, m2, u_prev, a_prev


@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
@pytest.mark.parametrize("how", ["init_leaky", "reset_mem", "utils.reset", "detach_hidden",
                                 "detached_mem"])
def test_new_window(how, tau_s):
    lif, x1, x2, o1, m1, o2, m2, u_prev, a_prev = _two_segments(how, tau_s)
    p = p_of(lif)
    if u_prev is None:  # the state restarted from rest
        assert torch.count_nonzero(m2[0] - x2[0]) == 0
    s2, u2, a2 = ref_forward(x2, p, u_prev, a_prev)
    torch.testing.assert_close(m2, u2, **TIGHT)
    torch.testing.assert_close(o2, s2 if tau_s is None else a2, **TIGHT)
    w = [randn_like(o1, 11), randn_like(m1, 12), randn_like(o2, 13), randn_like(m2, 14)]
    loss = sum((o * g).sum() for o, g in zip((o1, m1, o2, m2), w, strict=True))
    g1, g2 = torch.autograd.grad(loss, [x1, x2])
    torch.testing.assert_close(g1, expected_grad(x1, w[0], w[1], p), **TIGHT)
    torch.testing.assert_close(g2, expected_grad(x2, w[2], w[3], p, u_prev, a_prev), **TIGHT)


def test_one_window_without_reset():
    """Without a reset the 9 steps are one window, which is NOT the two-window gradient."""
    lif = NALeaky(0.8, tau_s=2.0)
    x = currents((9, B, N), seed=15)
    outs, mems = run(lif, x)
    g_out, g_mem = randn_like(outs, 16), randn_like(mems, 17)
    got = grad_of(x, outs, mems, g_out, g_mem)
    p = p_of(lif)
    torch.testing.assert_close(got, expected_grad(x, g_out, g_mem, p), **TIGHT)
    split = torch.cat([expected_grad(x[:4], g_out[:4], g_mem[:4], p),
                       expected_grad(x[4:], g_out[4:], g_mem[4:], p, mems[3], outs[3])])
    assert (got - split).abs().max() > 1e-3


# --- the window follows values, not tensor identity ---------------------------------------------
IDENTITIES = {
    "same": lambda m: m,
    "clone": lambda m: m.clone(),
    "times_one": lambda m: m * 1.0,
    "plus_zero": lambda m: m + 0.0,
    "to_same_dtype": lambda m: m.to(m.dtype),
    "to_copy": lambda m: m.to(m.dtype, copy=True),
    "contiguous": lambda m: m.contiguous(),
}


@pytest.fixture(params=["torch", "cpp"])
def na_impl(request, monkeypatch):
    """Both implementations of NA's replay: the torch reference and the compiled kernel."""
    if request.param == "torch":
        monkeypatch.setenv("SPIKEGRAD_NA_CPP", "0")
    else:
        from spikegrad.rules.na import cpu as na_cpu

        if na_cpu.status() != "available":
            pytest.skip(f"compiled NA kernel unavailable: {na_cpu.status()}")
    return request.param


def run_between(lif, x, between):
    """The per-step loop with ``mem = between(t, mem)`` applied after every step."""
    mem, outs, mems = lif.init_leaky(), [], []
    for t in range(x.shape[0]):
        out, mem = lif(x[t], mem)
        outs.append(out)
        mems.append(mem)
        mem = between(t, mem)
    return torch.stack(outs), torch.stack(mems)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
@pytest.mark.parametrize("name", list(IDENTITIES))
def test_identity_between_steps_keeps_the_window(name, tau_s, dtype, na_impl):
    """``mem`` passed through an identity between steps gives bit for bit the gradient of the
    untouched loop, which is the whole-window NA estimator (the sequence call)."""
    x = currents((8, B, N), seed=40, dtype=dtype)
    g = randn_like(x, 41)
    plain, _ = run(NALeaky(0.8, tau_s=tau_s), x)
    (want,) = torch.autograd.grad((plain * g).sum(), x)
    outs, _ = run_between(NALeaky(0.8, tau_s=tau_s), x, lambda t, m: IDENTITIES[name](m))
    (got,) = torch.autograd.grad((outs * g).sum(), x)
    assert torch.equal(outs, plain)
    assert torch.equal(got, want)
    seq, _ = NALeaky(0.8, tau_s=tau_s).sequence(x)
    (whole,) = torch.autograd.grad((seq * g).sum(), x)
    torch.testing.assert_close(got, whole, rtol=0, atol=1e-12 if dtype == F64 else 1e-5)
    if dtype == F64:
        p = p_of(NALeaky(0.8, tau_s=tau_s))
        torch.testing.assert_close(got, ref_delta(x, g, p), **TIGHT)


def test_identity_changes_the_gradient_if_windows_split():
    """The check above can fail: a window per step (what the identity test guards against)
    gives a different gradient on the same inputs."""
    x = currents((8, B, N), seed=40)
    g = randn_like(x, 41)
    outs, _ = run_between(NALeaky(0.8, tau_s=2.0), x, lambda t, m: m.detach())
    (split,) = torch.autograd.grad((outs * g).sum(), x)
    (whole,) = torch.autograd.grad((NALeaky(0.8, tau_s=2.0).sequence(x)[0] * g).sum(), x)
    assert (split - whole).abs().max() > 0.1


def ref_delta_set_states(c: torch.Tensor, g: torch.Tensor, passed, p: P) -> torch.Tensor:
    """Scalar reference of the documented rule for a ``mem`` set between steps.

    ``passed[t]`` is the tensor the user passed into step ``t`` (``None``: the previous step's
    own ``u``). The forward takes the passed state; wherever it differs from ``u[t-1]``, every
    neighbor's replay takes it too, i.e. neighbor ``k``'s potential at such a step ``t > k``
    is the forward's ``u[t]``.
    """
    T = c.shape[0]
    cols_c, cols_g = c.detach().reshape(T, -1).T.tolist(), g.reshape(T, -1).T.tolist()
    cols_p = [None if x is None else x.detach().reshape(-1).tolist() for x in passed]
    out = []
    for j, (cc, gg) in enumerate(zip(cols_c, cols_g, strict=True)):
        u, s, a, changed, v, tr = [], [], [], [], 0.0, 0.0
        for t in range(T):
            given = None if cols_p[t] is None else cols_p[t][j]
            changed.append(t > 0 and given is not None and given != u[-1])
            if given is not None and t > 0:
                v = ref_post_reset(given, 1.0 if given > p.theta else 0.0, p)
            ut = p.beta * v + cc[t]
            st = 1.0 if ut > p.theta else 0.0
            v, tr = ref_post_reset(ut, st, p), ref_trace(tr, st, p)
            u.append(ut), s.append(st), a.append(tr)
        e = ref_errors(gg, p)
        deltas = []
        for k in range(T):
            ak = ref_trace(a[k - 1] if k else 0.0, 1.0 - s[k], p)
            vk = p.theta if s[k] == 1.0 else 0.0
            d_l = e[k] * (ak - a[k])
            for t in range(k + 1, T):
                ut = u[t] if changed[t] else p.beta * vk + cc[t]
                st = 1.0 if ut > p.theta else 0.0
                vk, ak = ref_post_reset(ut, st, p), ref_trace(ak, st, p)
                d_l += e[t] * (ak - a[t])
            deltas.append(d_l * ref_weight(u[k], p))
        out.append(deltas)
    return torch.tensor(out, dtype=F64).T.reshape(c.shape)


@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
def test_changed_mem_takes_the_passed_state(tau_s, na_impl):
    """A ``mem`` whose values the user changed (a per-sample mask at step 2, noise on some
    neurons at step 4) gives the documented rule's gradient, checked against a scalar loop."""
    x = currents((8, B, N), seed=42)
    g = randn_like(x, 43)
    mask = torch.ones(B, N, dtype=F64)
    mask[0] = 0.0  # sample 0 restarts
    noise = randn_like(mask, 44) * 0.3 * (torch.arange(N) % 2 == 0)
    passed = [None] * x.shape[0]

    def between(t, m):
        new = m * mask if t == 2 else (m + noise if t == 4 else m)
        passed[t + 1 if t + 1 < x.shape[0] else t] = new if t in (2, 4) else None
        return new

    lif = NALeaky(0.8, tau_s=tau_s)
    outs, _ = run_between(lif, x, between)
    (got,) = torch.autograd.grad((outs * g).sum(), x)
    want = ref_delta_set_states(x, g, passed, p_of(lif))
    torch.testing.assert_close(got, want, **TIGHT)
    untouched, _ = run(NALeaky(0.8, tau_s=tau_s), x)
    (plain,) = torch.autograd.grad((untouched * g).sum(), x)
    assert (got - plain).abs().max() > 1e-3  # the change matters (the check can fail)


def test_zeroed_mem_splits_the_window_exactly(na_impl):
    """Spikes out, all of ``mem`` zeroed after step 3: the gradient is that of two whole
    windows, ``x[:4]`` and ``x[4:]`` from rest (an independent property of the rule)."""
    x = currents((9, B, N), seed=45)
    g = randn_like(x, 46)
    outs, _ = run_between(NALeaky(0.8), x, lambda t, m: m * 0.0 if t == 3 else m)
    (got,) = torch.autograd.grad((outs * g).sum(), x)
    p = p_of(NALeaky(0.8))
    want = torch.cat([ref_delta(x[:4], g[:4], p), ref_delta(x[4:], g[4:], p)])
    torch.testing.assert_close(got, want, **TIGHT)


def test_in_place_change_of_mem_raises():
    lif = NALeaky(0.8, tau_s=2.0)
    x = currents(seed=47)
    _, mem = lif(x[0], lif.init_leaky())
    mem.mul_(0.5)
    with pytest.raises(RuntimeError, match="modified in place.*mem = mem \\* mask"):
        lif(x[1], mem)


def test_no_grad_records_nothing():
    lif = NALeaky(0.8, tau_s=2.0)
    x = currents(seed=18)
    with torch.no_grad():
        outs, mems = run(lif, x)
        assert lif._window is None
    assert outs.grad_fn is None and mems.grad_fn is None
    ref_o, ref_m = run(NALeaky(0.8, tau_s=2.0), x)
    assert torch.equal(outs, ref_o) and torch.equal(mems, ref_m)
    # inputs that need no gradient record nothing either
    lif2 = NALeaky(0.8, tau_s=2.0)
    run(lif2, x.detach())
    assert lif2._window is None


@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
def test_second_backward_pass_does_not_reuse_errors(tau_s):
    """A second backward pass over the same graph (``retain_graph=True``) whose loss does not
    reach the last steps must not reuse the errors the first pass stored for them."""
    lif = NALeaky(0.8, tau_s=tau_s)
    x = currents(seed=19)
    outs_list, mem = [], lif.init_leaky()
    for t in range(T):
        out, mem = lif(x[t], mem)
        outs_list.append(out)
    outs = torch.stack(outs_list)
    p = p_of(lif)
    g = randn_like(outs, 20)
    (first,) = torch.autograd.grad((outs * g).sum(), x, retain_graph=True)
    torch.testing.assert_close(first, ref_delta(x, g, p), **TIGHT)
    g2 = torch.zeros_like(g)
    g2[2] = randn_like(g[2], 21)
    (second,) = torch.autograd.grad((outs_list[2] * g2[2]).sum(), x, retain_graph=True)
    torch.testing.assert_close(second, ref_delta(x, g2, p), **TIGHT)
    (third,) = torch.autograd.grad((outs * g).sum(), x)  # the full loss again
    torch.testing.assert_close(third, first, **TIGHT)


# =================================================================================================
# 3. Memory
# =================================================================================================
def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _count_tensors() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_memory_flat_over_training_steps():
    torch.manual_seed(0)
    fc = nn.Linear(8, 6)
    lif = NALeaky(0.8, tau_s=2.0)
    opt = torch.optim.SGD(fc.parameters(), lr=1e-3)
    x = torch.rand(5, 4, 8) * 1.5
    registry = len(snn.SpikingNeuron.instances)

    def train(steps):
        for _ in range(steps):
            mem = lif.init_leaky()
            outs = []
            for t in range(5):
                out, mem = lif(fc(x[t]), mem)
                outs.append(out)
            loss = torch.stack(outs).pow(2).sum() + 0.1 * mem.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(200)
    gc.collect()
    tensors, objects, rss = _count_tensors(), len(gc.get_objects()), _rss_bytes()
    train(1800)
    gc.collect()
    assert _count_tensors() <= tensors + 2
    assert len(gc.get_objects()) <= objects + 200
    if rss is not None:
        assert _rss_bytes() - rss < 32 * 2**20
    assert len(snn.SpikingNeuron.instances) <= registry
    assert fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
def test_window_freed_without_cyclic_gc(tau_s):
    """After the backward, dropping the outputs and restarting the state frees the window by
    reference counting alone: no reference cycle holds it, and it holds nothing of the graph."""
    lif = NALeaky(0.8, tau_s=tau_s)
    fc = nn.Linear(N, N, dtype=F64)
    x = currents(seed=22)
    gc.collect()
    gc.disable()
    try:
        outs, mems = run(lif, fc(x))
        window = lif._window
        assert len(window) == T
        stored = [t for step in window._steps for t in step] + [window.a_init]
        assert not any(t.requires_grad or t.grad_fn is not None for t in stored)
        w_ref = weakref.ref(window)
        t_ref = weakref.ref(window._steps[0][0])
        del window, stored
        loss = (outs * randn_like(outs, 23)).sum() + (mems * randn_like(mems, 24)).sum()
        loss.backward()
        assert fc.weight.grad.abs().sum() > 0
        del outs, mems, loss
        lif.reset_mem()  # the next window starts: the old one must go now
        assert w_ref() is None and t_ref() is None
    finally:
        gc.enable()


# =================================================================================================
# 4. Host idioms
# =================================================================================================
@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
def test_init_hidden_and_output(tau_s):
    x = currents(seed=25)
    ref = NALeaky(0.8, tau_s=tau_s)
    o_r, m_r = run(ref, x)
    hidden = NALeaky(0.8, tau_s=tau_s, init_hidden=True)
    hidden.reset_mem()
    outs = []
    for t in range(T):
        out = hidden(x[t])
        assert isinstance(out, torch.Tensor)
        outs.append(out)
    outs = torch.stack(outs)
    assert torch.equal(outs, o_r)
    both = NALeaky(0.8, tau_s=tau_s, init_hidden=True, output=True)
    both.reset_mem()
    res = [both(x[t]) for t in range(T)]
    assert all(isinstance(r, tuple) and len(r) == 2 for r in res)
    o_b, m_b = torch.stack([r[0] for r in res]), torch.stack([r[1] for r in res])
    assert torch.equal(o_b, o_r) and torch.equal(m_b, m_r)
    g_out, g_mem = randn_like(o_r, 26), randn_like(m_r, 27)
    expected = expected_grad(x, g_out, g_mem, p_of(ref))
    torch.testing.assert_close(grad_of(x, o_r, m_r, g_out, g_mem), expected, **TIGHT)
    torch.testing.assert_close(grad_of(x, o_b, m_b, g_out, g_mem), expected, **TIGHT)
    (g_h,) = torch.autograd.grad((outs * g_out).sum(), x)
    torch.testing.assert_close(g_h, ref_delta(x, g_out, p_of(ref)), **TIGHT)
    with pytest.raises(TypeError, match="mem"):
        hidden(x[0], hidden.mem)


def test_lazy_state_and_batch_change():
    lif = NALeaky(0.8, tau_s=2.0)
    m0 = lif.init_leaky()
    assert m0.numel() == 0
    big, small = currents((4, 5, N), seed=28), currents((5, 2, N), seed=29)
    _, m_big = run(lif, big)
    assert lif.trace.shape == (5, N) and torch.count_nonzero(lif.trace) > 0
    old = lif._window
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(2, 5\).*reset_mem"):
        run(lif, small, m_big[-1])  # the batch-5 mem passed to a batch of 2: refused
    o, m = run(lif, small, lif.reset_mem())  # from rest, a new batch size is fine
    assert lif._window is not old and len(lif._window) == 5
    assert lif.trace.shape == lif.mem.shape == (2, N)
    p = p_of(lif)
    s_r, u_r, a_r = ref_forward(small, p)
    torch.testing.assert_close(m, u_r, **TIGHT)
    torch.testing.assert_close(o, a_r, **TIGHT)
    g_out, g_mem = randn_like(o, 30), randn_like(m, 31)
    torch.testing.assert_close(grad_of(small, o, m, g_out, g_mem),
                               expected_grad(small, g_out, g_mem, p), **TIGHT)


def test_state_dict_round_trip():
    saved = NALeaky(0.7, threshold=0.8, tau_s=2.0)
    fresh = NALeaky(0.5, tau_s=2.0)
    x = currents(seed=32)
    o_s, m_s = run(saved, x)
    o_f, _ = run(fresh, x)
    assert not torch.equal(o_s, o_f)
    fresh.load_state_dict(saved.state_dict())
    assert fresh.rule == saved.rule
    o_l, m_l = run(fresh, x)
    assert torch.equal(o_l, o_s) and torch.equal(m_l, m_s)
    g_out, g_mem = randn_like(o_s, 33), randn_like(m_s, 34)
    torch.testing.assert_close(grad_of(x, o_l, m_l, g_out, g_mem),
                               grad_of(x, o_s, m_s, g_out, g_mem), **TIGHT)


class TopLevel(nn.Module):
    def __init__(self, lif):
        super().__init__()
        self.fc = nn.Linear(N, N, dtype=F64)
        self.lif = lif

    def forward(self, x):
        return self.lif(self.fc(x))


def test_whole_model_torch_save_and_deepcopy():
    torch.manual_seed(0)
    model = TopLevel(NALeaky(0.8, tau_s=2.0, init_hidden=True, distance="inverse",
                             rescale=None))
    x = currents(seed=35)
    with torch.no_grad():
        for t in range(3):
            model(x[t])  # mid-sequence state, no window (inference)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    clone = copy.deepcopy(model)
    for other in (loaded, clone):
        assert type(other.lif) is NALeaky and other.lif.rule == model.lif.rule
        assert torch.equal(other.lif.mem, model.lif.mem)
        assert torch.equal(other.lif.trace, model.lif.trace)
    results = []
    for m in (model, loaded, clone):
        reset_states(m)
        outs = torch.stack([m(x[t]) for t in range(T)])
        (g,) = torch.autograd.grad((outs * randn_like(outs, 36)).sum(), m.fc.weight)
        results.append((outs, g))
    for outs, g in results[1:]:
        assert torch.equal(outs, results[0][0])
        torch.testing.assert_close(g, results[0][1], **TIGHT)


@pytest.mark.parametrize("kwargs, flag", [
    (dict(spike_grad=snn.surrogate.atan()), "spike_grad"),
    (dict(learn_beta=True), "learn_beta"),
    (dict(learn_threshold=True), "learn_threshold"),
    (dict(surrogate_disable=True), "surrogate_disable"),
    (dict(inhibition=True), "inhibition"),
    (dict(state_quant=quant.state_quant(num_bits=8)), "state_quant"),
    (dict(reset_delay=False), "reset_delay"),
    (dict(distance="cube"), "distance"),
    (dict(error="global"), "error"),
    (dict(clamp=0.0), "clamp"),
    (dict(tau_s=0.5), "tau_s"),
    (dict(threshold=0.0), "threshold"),
    (dict(reset_mechanism="none"), "reset"),
])
def test_refused_flags_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        NALeaky(0.8, **kwargs)


def test_beta_outside_unit_interval_raises():
    for beta in (-0.1, 1.5):
        with pytest.raises(ValueError, match="beta"):
            NALeaky(beta)
    with pytest.raises(TypeError, match="rescale"):
        NALeaky(0.8, rescale=object())


def test_integer_input_raises_type_error():
    lif = NALeaky(0.8)
    with pytest.raises(TypeError, match="floating-point"):
        lif(torch.ones(B, N, dtype=torch.int64), lif.init_leaky())
    with pytest.raises(TypeError, match="floating-point"):
        lif.sequence(torch.ones(T, B, N, dtype=torch.int32))


# =================================================================================================
# 5. Rescale
# =================================================================================================
def test_rescale_per_step_raises_and_points_to_sequence():
    lif = NALeaky(0.8, tau_s=2.0, rescale=na.Rescale())
    x = currents(seed=37)
    with pytest.raises(ValueError, match=r"sequence"):
        lif(x[0], lif.init_leaky())
    with torch.no_grad():  # inference records nothing, so it is allowed
        outs, _ = run(lif, x)
    assert outs.shape == x.shape


@pytest.mark.parametrize("name", list(GOLDEN["cases"]))
def test_rescale_via_sequence_equals_golden(name):
    case = GOLDEN["cases"][name]
    prm = case["params"]
    tau_s = None if prm["tau_s"] == 1 else float(prm["tau_s"])
    lif = NALeaky(1 - 1 / prm["tau_m"], threshold=float(prm["threshold"]), tau_s=tau_s,
                  rescale=na.Rescale())
    c = torch.tensor(case["c"], dtype=F64, requires_grad=True)
    g = torch.tensor(case["g"], dtype=F64)
    out, _ = lif.sequence(c)
    (d,) = torch.autograd.grad((out * g).sum(), c)
    torch.testing.assert_close(d, torch.tensor(case["delta_rescaled_as_output_layer"],
                                               dtype=F64), **TIGHT)
    # without the rescale: the raw δ
    plain = NALeaky(1 - 1 / prm["tau_m"], threshold=float(prm["threshold"]), tau_s=tau_s)
    out, _ = plain.sequence(c)
    (d,) = torch.autograd.grad((out * g).sum(), c)
    torch.testing.assert_close(d, torch.tensor(case["delta"], dtype=F64), **TIGHT)


# =================================================================================================
# 6. Drop-in swap into the seed-002 tutorial network
# =================================================================================================
from tests.neurons.tutorial_net import TutorialNet  # noqa: E402


def test_drop_in_tutorial_network_trains():
    torch.manual_seed(0)
    net = TutorialNet(lambda: NALeaky(beta=0.8, tau_s=2.0))
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.9, 0.999))
    loss_fn = nn.CrossEntropyLoss()
    data = torch.rand(16, 784)
    targets = torch.randint(0, 10, (16,))
    w1_before = net.fc1.weight.detach().clone()
    for _ in range(3):
        spk_rec, mem_rec = net(data)
        assert spk_rec.shape == mem_rec.shape == (net.num_steps, 16, 10)
        loss_val = torch.zeros(1)
        for step in range(net.num_steps):
            loss_val += loss_fn(mem_rec[step], targets)
        assert torch.isfinite(loss_val).all()
        optimizer.zero_grad()
        loss_val.backward()
        for layer in (net.fc1, net.fc2):
            assert torch.isfinite(layer.weight.grad).all()
            assert layer.weight.grad.abs().sum() > 0
        optimizer.step()
    assert not torch.equal(net.fc1.weight, w1_before)


def test_default_reset_is_noted_once_and_an_explicit_one_is_not(monkeypatch):
    """NA's default zero reset differs from snn.Leaky's subtraction (and learns far less in the
    tutorial MLP): left unset it warns once per process; given, in any form, it does not."""
    import warnings

    from spikegrad.neurons import snntorch_na

    monkeypatch.setattr(snntorch_na, "_NOTED", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NALeaky(0.9, reset_mechanism="zero")
        NALeaky(0.9, 1.0, None, False, False, False, False, False, "subtract")  # positional
        assert not caught
        NALeaky(0.9)
        NALeaky(beta=0.8, threshold=0.5)
    notes = [w for w in caught if w.category is UserWarning]
    assert len(notes) == 1 and "reset_mechanism='subtract'" in str(notes[0].message)
    assert NALeaky(0.9).rule.reset == "zero"  # the default itself is unchanged
