"""The snntorch neurons against independent references.

* ResetTermLeaky against snntorch's own ``Leaky`` (the cases where API.md says the math is the
  same), against hand computations where it is not, and its trace against ``reset_term.trace``;
* HTDGLIFLeaky against ``bpsta.forward`` and the golden values of RULES.md §4;
* MultiStrengthLeaky against ``multistrength.forward``, RULES.md §6's example and charge
  conservation;
* each neuron swapped into the seed-002 tutorial network (fc1 784->1000, lif1, fc2 1000->10, lif2).

Gradients are compared with random upstream gradients on every output (never only ``.sum()``).
"""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from spikegrad.neurons import HTDGLIFLeaky, MultiStrengthLeaky, ResetTermLeaky
from spikegrad.rules import bpsta, multistrength, reset_term, surrogate

T, B, N = 25, 6, 10
SLOPE = 1 / 0.3  # snntorch's sigmoid(slope=1/T) is the paper's Sigmoid(temperature=T)


# --- helpers ------------------------------------------------------------------------------------
def currents(seed: int = 0, *, mean: float = 0.35, std: float = 0.7, dtype=torch.float32,
             shape=(T, B, N)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=dtype) * std + mean).requires_grad_(True)


def run(neuron: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step loop in the host's idiom; returns the stacked first and second outputs."""
    mem = neuron.init_leaky()
    outs, mems = [], []
    for t in range(x.shape[0]):
        out, mem = neuron(x[t], mem)
        outs.append(out)
        mems.append(mem)
    return torch.stack(outs), torch.stack(mems)


def upstream(like: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(like.shape, generator=g, dtype=like.dtype)


def grads(outputs, weights, wrt):
    """Gradients of ``Σ_i <outputs[i], weights[i]>`` w.r.t. ``wrt`` (None -> zeros)."""
    loss = sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))
    gs = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, wrt, strict=True)]


def assert_grads_close(ga, gb, **tol):
    assert len(ga) == len(gb)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, **tol)


def assert_meaningful_spiking(spk: torch.Tensor) -> None:
    """The comparison only means something if neurons both fire and stay silent."""
    rate = (spk > 0).float().mean().item()
    assert 0.05 < rate < 0.9, f"spike rate {rate:.3f}: inputs do not exercise the neuron"


def learnables(neuron, learn_beta, learn_threshold):
    out = []
    if learn_beta:
        out.append(neuron.beta)
    if learn_threshold:
        out.append(neuron.threshold)
    return out


# =================================================================================================
# 1. ResetTermLeaky
# =================================================================================================
def test_default_spike_grad_is_paper_sigmoid():
    n = ResetTermLeaky(0.9)
    assert n.spike_grad == surrogate.Sigmoid(temperature=0.3)
    assert type(n.spike_grad) is surrogate.Sigmoid
    # and it is what the paper uses: H'(0) = 1 / (4 T)
    x = torch.zeros(3, requires_grad=True)
    n.spike_grad(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 1 / (4 * 0.3)))


BETA_CASES = [
    pytest.param(0.85, False, False, id="fixed"),
    pytest.param(0.85, True, False, id="learn_beta"),
    pytest.param(0.85, False, True, id="learn_threshold"),
    pytest.param(0.85, True, True, id="learn_both"),
    pytest.param("per_neuron", True, True, id="per_neuron_beta_learn_both"),
]


def _beta(value):
    if value == "per_neuron":
        return torch.linspace(0.6, 0.97, N)
    return value


def _clone(beta):
    return beta.clone() if isinstance(beta, torch.Tensor) else beta


@pytest.mark.parametrize("beta, learn_beta, learn_threshold", BETA_CASES)
def test_detach_equals_snntorch_leaky_zero(beta, learn_beta, learn_threshold):
    beta = _beta(beta)
    kw = dict(threshold=0.9, learn_beta=learn_beta, learn_threshold=learn_threshold)
    ours = ResetTermLeaky(_clone(beta), reset_grad="detach", **kw)
    host = snn.Leaky(_clone(beta), reset_mechanism="zero",
                     spike_grad=snn.surrogate.sigmoid(slope=SLOPE), **kw)
    x = currents(1)
    s_o, m_o = run(ours, x)
    s_h, m_h = run(host, x)
    assert_meaningful_spiking(s_h)
    assert torch.equal(s_o, s_h)
    torch.testing.assert_close(m_o, m_h)
    w = [upstream(s_h, 2), upstream(m_h, 3)]
    g_o = grads([s_o, m_o], w, [x, *learnables(ours, learn_beta, learn_threshold)])
    g_h = grads([s_h, m_h], w, [x, *learnables(host, learn_beta, learn_threshold)])
    assert_grads_close(g_o, g_h, rtol=1e-4, atol=1e-5)
    assert g_o[0].abs().sum() > 0


@pytest.mark.parametrize("beta, learn_beta, learn_threshold", BETA_CASES)
def test_full_equals_snntorch_no_reset_delay_for_spike_losses(beta, learn_beta, learn_threshold):
    beta = _beta(beta)
    kw = dict(threshold=0.9, learn_beta=learn_beta, learn_threshold=learn_threshold)
    ours = ResetTermLeaky(_clone(beta), reset_grad="full", **kw)
    host = snn.Leaky(_clone(beta), reset_mechanism="zero", reset_delay=False,
                     spike_grad=snn.surrogate.sigmoid(slope=SLOPE), **kw)
    x = currents(4)
    s_o, m_o = run(ours, x)
    s_h, m_h = run(host, x)
    assert_meaningful_spiking(s_h)
    assert torch.equal(s_o, s_h)
    w = [upstream(s_h, 5)]
    g_o = grads([s_o], w, [x, *learnables(ours, learn_beta, learn_threshold)])
    g_h = grads([s_h], w, [x, *learnables(host, learn_beta, learn_threshold)])
    assert_grads_close(g_o, g_h, rtol=1e-4, atol=1e-5)

    # mem differs: ours is the pre-reset u[t], that host mode returns the post-reset u (1 - s).
    fired = s_o > 0
    assert torch.all(m_o[fired] > 0.9)
    assert torch.all(m_h[fired] == 0)
    torch.testing.assert_close(m_h, m_o * (1 - s_o))
    torch.testing.assert_close(m_o[~fired], m_h[~fired])
    assert not torch.allclose(m_o, m_h)


def test_reset_term_changes_gradients_but_not_forward():
    """A naive mapping (the detached host default) must NOT match the reset-term gradients."""
    x = currents(6)
    full, detach = ResetTermLeaky(0.85), ResetTermLeaky(0.85, reset_grad="detach")
    s_f, m_f = run(full, x)
    s_d, m_d = run(detach, x)
    assert torch.equal(s_f, s_d) and torch.equal(m_f, m_d)
    w = [upstream(s_f, 7)]
    (g_f,) = grads([s_f], w, [x])
    (g_d,) = grads([s_d], w, [x])
    assert (g_f - g_d).abs().max() > 1e-2


def test_reset_term_jacobian_golden_value():
    """RULES.md §2: β = 5/6, T = 0.3, θ = 1, U = 1.2 -> ∂U[t+1]/∂U[t] = -0.7472 (full),
    0 (detach)."""
    for reset_grad, expected in (("full", -0.7472), ("detach", 0.0)):
        n = ResetTermLeaky(5 / 6, reset_grad=reset_grad)
        u0 = torch.tensor([1.2], dtype=torch.float64, requires_grad=True)
        _, u1 = n(torch.zeros(1, dtype=torch.float64), u0)
        (du,) = torch.autograd.grad(u1.sum(), u0)
        assert du.item() == pytest.approx(expected, abs=1e-4)


def test_subtract_detach_equals_snntorch_leaky_subtract_without_leak():
    kw = dict(threshold=0.9, learn_threshold=True)
    ours = ResetTermLeaky(1.0, reset_mechanism="subtract", reset_grad="detach", **kw)
    host = snn.Leaky(1.0, reset_mechanism="subtract",
                     spike_grad=snn.surrogate.sigmoid(slope=SLOPE), **kw)
    x = currents(8, mean=0.2)
    s_o, m_o = run(ours, x)
    s_h, m_h = run(host, x)
    assert_meaningful_spiking(s_h)
    assert torch.equal(s_o, s_h)
    torch.testing.assert_close(m_o, m_h)
    w = [upstream(s_h, 9), upstream(m_h, 10)]
    assert_grads_close(grads([s_o, m_o], w, [x, ours.threshold]),
                       grads([s_h, m_h], w, [x, host.threshold]), rtol=1e-4, atol=1e-5)


def test_subtract_leaks_the_post_reset_state():
    """With β < 1 the rule leaks the post-reset state, u[t] = β (u[t-1] - θ s[t-1]) + c[t]
    (reset_term's documented forward, spikingjelly's soft reset); snntorch's default Leaky
    subtracts θ after the leak, u[t] = β u[t-1] + c[t] - θ s[t-1]. Both are checked by hand, so
    the difference between the two is explicit."""
    beta, theta = 0.8, 0.9
    x = currents(11).detach().double()
    s_o, m_o = run(ResetTermLeaky(beta, threshold=theta, reset_mechanism="subtract",
                                  reset_grad="detach"), x)
    s_h, m_h = run(snn.Leaky(beta, threshold=theta, reset_mechanism="subtract"), x)
    beta, theta = float(torch.tensor(beta)), float(torch.tensor(theta))  # host buffers: float32
    u_rule, u_host = torch.zeros_like(x[0]), torch.zeros_like(x[0])
    s_rule, s_host = torch.zeros_like(x[0]), torch.zeros_like(x[0])
    rule_mem, host_mem = [], []
    for t in range(T):
        u_rule = beta * (u_rule - theta * s_rule) + x[t]
        u_host = beta * u_host + x[t] - theta * s_host
        s_rule, s_host = (u_rule > theta).double(), (u_host > theta).double()
        rule_mem.append(u_rule)
        host_mem.append(u_host)
    torch.testing.assert_close(m_o, torch.stack(rule_mem))
    torch.testing.assert_close(m_h, torch.stack(host_mem))
    assert not torch.allclose(m_o, m_h)


SNN_SURROGATES = [
    pytest.param(lambda: snn.surrogate.atan(), id="atan"),
    pytest.param(lambda: snn.surrogate.fast_sigmoid(slope=10), id="fast_sigmoid"),
    pytest.param(lambda: snn.surrogate.sigmoid(slope=5), id="sigmoid5"),
    pytest.param(lambda: snn.surrogate.spike_rate_escape(beta=1, slope=5), id="spike_rate_escape"),
]


@pytest.mark.parametrize("make_sg", SNN_SURROGATES)
def test_any_snntorch_surrogate_detach_equals_snntorch_leaky(make_sg):
    ours = ResetTermLeaky(0.9, reset_grad="detach", spike_grad=make_sg())
    host = snn.Leaky(0.9, reset_mechanism="zero", spike_grad=make_sg())
    x = currents(12)
    s_o, m_o = run(ours, x)
    s_h, m_h = run(host, x)
    assert_meaningful_spiking(s_h)
    assert torch.equal(s_o, s_h)
    torch.testing.assert_close(m_o, m_h)
    w = [upstream(s_h, 13), upstream(m_h, 14)]
    assert_grads_close(grads([s_o, m_o], w, [x]), grads([s_h, m_h], w, [x]),
                       rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make_sg", SNN_SURROGATES)
def test_any_snntorch_surrogate_full_equals_no_reset_delay(make_sg):
    ours = ResetTermLeaky(0.9, spike_grad=make_sg())
    host = snn.Leaky(0.9, reset_mechanism="zero", reset_delay=False, spike_grad=make_sg())
    x = currents(15)
    s_o, _ = run(ours, x)
    s_h, _ = run(host, x)
    assert torch.equal(s_o, s_h)
    w = [upstream(s_h, 16)]
    assert_grads_close(grads([s_o], w, [x]), grads([s_h], w, [x]), rtol=1e-4, atol=1e-5)


def test_spikegrad_atan_equals_snntorch_atan():
    ours = ResetTermLeaky(0.9, reset_grad="detach", spike_grad=surrogate.ATan(alpha=2.0))
    host = snn.Leaky(0.9, reset_mechanism="zero")  # the host's default: atan(alpha=2)
    x = currents(17)
    s_o, m_o = run(ours, x)
    s_h, m_h = run(host, x)
    assert torch.equal(s_o, s_h)
    torch.testing.assert_close(m_o, m_h)
    w = [upstream(s_h, 18), upstream(m_h, 19)]
    assert_grads_close(grads([s_o, m_o], w, [x]), grads([s_h, m_h], w, [x]),
                       rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reset_grad", ["full", "detach"])
def test_trace_output_is_reset_term_trace_of_the_spikes(reset_grad):
    tau_s = 2.0
    x = currents(20)
    a, m_a = run(ResetTermLeaky(0.85, reset_grad=reset_grad, tau_s=tau_s), x)
    s, m_s = run(ResetTermLeaky(0.85, reset_grad=reset_grad), x)
    assert_meaningful_spiking(s)
    torch.testing.assert_close(m_a, m_s)
    torch.testing.assert_close(a, reset_term.trace(s, tau_s))
    # by hand: a[t] = (1 - 1/τs) a[t-1] + s[t]/τs
    hand, prev = [], torch.zeros_like(s[0])
    for t in range(T):
        prev = 0.5 * prev + 0.5 * s[t]
        hand.append(prev)
    torch.testing.assert_close(a, torch.stack(hand))
    w = [upstream(a, 21)]
    assert_grads_close(grads([a], w, [x]), grads([reset_term.trace(s, tau_s)], w, [x]))


# =================================================================================================
# 2. HTDGLIFLeaky
# =================================================================================================
HTDGLIF_CASES = [
    pytest.param({}, id="paper-defaults"),
    pytest.param(dict(beta=0.7, threshold=0.4, alpha=0.5), id="paper-custom"),
    pytest.param(dict(mode="braincog"), id="braincog-defaults"),
    pytest.param(dict(mode="braincog", threshold=0.6, alpha=0.3, dt=0.5), id="braincog-dt"),
]


@pytest.mark.parametrize("kw", HTDGLIF_CASES)
def test_htdglif_equals_bpsta_forward(kw):
    neuron = HTDGLIFLeaky(**kw)
    cfg = bpsta.HTDGLIF(mode=kw.get("mode", "paper"), threshold=kw.get("threshold", 0.5),
                        decay=kw.get("beta"), alpha=kw.get("alpha", 0.2), dt=kw.get("dt"))
    x = currents(30, mean=0.3, std=0.5)
    o_n, h_n = run(neuron, x)
    o_r, h_r = bpsta.forward(x, cfg)
    assert_meaningful_spiking(o_r)
    if cfg.mode == "paper":
        assert torch.equal(o_n, o_r)
        assert set(o_n.unique().tolist()) <= {0.0, 1.0}
    else:
        torch.testing.assert_close(o_n, o_r)
    torch.testing.assert_close(h_n, h_r)
    w = [upstream(o_r, 31), upstream(h_r, 32)]
    g_n = grads([o_n, h_n], w, [x])
    g_r = grads([o_r, h_r], w, [x])
    assert_grads_close(g_n, g_r)
    assert g_n[0].abs().sum() > 0


def test_htdglif_paper_golden_values():
    """RULES.md §4, paper mode, one step, θ = 0.5, λ = 0.9."""
    x = torch.tensor([[0.2, 0.5, 0.8, 1.6, 2.5]], requires_grad=True)
    n = HTDGLIFLeaky()
    o, h = n(x, n.init_leaky())
    assert torch.equal(o, torch.tensor([[0.0, 1, 1, 1, 1]]))
    torch.testing.assert_close(h, x.detach())
    (do,) = torch.autograd.grad(o.sum(), x, retain_graph=True)
    torch.testing.assert_close(do, torch.tensor([[0.0, 2, 1.25, 0.625, 0.4]]))
    # λ v reaches the next step's mem: with zero input, h[1] = λ v[0]
    _, h1 = n(torch.zeros_like(x), h)
    torch.testing.assert_close(h1, torch.tensor([[0.18, 0, 0, 0, 0]]))
    (dv,) = torch.autograd.grad(h1.sum(), x)
    torch.testing.assert_close(dv, torch.tensor([[0.9, 0.36, 0.225, 0.1125, 0.072]]))


def test_htdglif_braincog_golden_values():
    """RULES.md §4, braincog mode, one step, θ = 0.5 (no leak, dt = 1)."""
    x = torch.tensor([[-1.0, 0.2, 0.5, 0.7, 1.3, 2.5]], requires_grad=True)
    n = HTDGLIFLeaky(mode="braincog")
    o, _ = n(x, n.init_leaky())
    torch.testing.assert_close(o, torch.tensor([[0.0, 0, 0.5, 0.7, 1.3, 2.5]]))
    (do,) = torch.autograd.grad(o.sum(), x, retain_graph=True)
    torch.testing.assert_close(do, torch.tensor([[0.0, 0, 1, 1, 1, 1]]))
    _, v = n(torch.zeros_like(x), n.mem)  # no leak: the next h is the post-reset state v
    torch.testing.assert_close(v, torch.tensor([[0.0, 0.2, 0, 0, 0, 0]]))
    (dv,) = torch.autograd.grad(v.sum(), x)
    torch.testing.assert_close(dv, torch.tensor([[0.0, 1, 0.2, 0.2, 0.2, 0.2]]))


@pytest.mark.parametrize("init_hidden", [False, True])
def test_htdglif_warm_up_returns_relu_and_keeps_state(init_hidden):
    x = currents(33, shape=(6, B, N))
    live = HTDGLIFLeaky(init_hidden=init_hidden)
    ref = HTDGLIFLeaky(init_hidden=init_hidden)

    def step(n, cur, mem):
        if init_hidden:
            return n(cur), n.mem
        return n(cur, mem)

    m_live, m_ref = live.init_leaky(), ref.init_leaky()
    for t in range(3):
        _, m_live = step(live, x[t], m_live)
        _, m_ref = step(ref, x[t], m_ref)
    before = live.mem.clone()
    live.warm_up = True
    out, m_live = step(live, x[3], m_live)
    assert torch.equal(out, torch.relu(x[3]))
    assert torch.equal(live.mem, before) and torch.equal(m_live, before)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g[3], (x[3] > 0).float()) and g[:3].abs().sum() == 0
    live.warm_up = False
    for t in range(4, 6):  # continues exactly as if the warm-up step had not happened
        o_l, m_live = step(live, x[t], m_live)
        o_r, m_ref = step(ref, x[t], m_ref)
        assert torch.equal(o_l, o_r)
        torch.testing.assert_close(m_live, m_ref)


def test_htdglif_warm_up_flag_in_constructor():
    n = HTDGLIFLeaky(warm_up=True)
    x = torch.randn(B, N)
    mem = torch.rand(B, N)
    out, new_mem = n(x, mem)
    assert torch.equal(out, torch.relu(x))
    assert torch.equal(new_mem, mem)


def test_htdglif_defaults():
    n = HTDGLIFLeaky()
    assert n.rule.mode == "paper" and n.rule.decay == 0.9 and n.rule.threshold == 0.5
    assert n.rule.alpha == 0.2 and n.rule.dt is None
    assert float(n.beta) == 0.9 and float(n.threshold) == 0.5
    # behaviourally: spike iff h >= 0.5 (inclusive), decay 0.9 on the post-reset state
    x = torch.tensor([[0.49, 0.5, 0.3]])
    o, h = n(x, n.init_leaky())
    assert torch.equal(o, torch.tensor([[0.0, 1, 0]]))
    _, h1 = n(torch.zeros_like(x), h)
    torch.testing.assert_close(h1, torch.tensor([[0.9 * 0.49, 0.0, 0.9 * 0.3]]))


@pytest.mark.parametrize("kwargs, flag", [
    (dict(mode="braincog", beta=0.9), "beta"),
    (dict(mode="paper", dt=1.0), "dt"),
    (dict(spike_grad=snn.surrogate.atan()), "spike_grad"),
    (dict(spike_grad=surrogate.Sigmoid()), "spike_grad"),
    (dict(reset_mechanism="subtract"), "reset_mechanism"),
    (dict(learn_beta=True), "learn_beta"),
    (dict(learn_threshold=True), "learn_threshold"),
])
def test_htdglif_refuses(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        HTDGLIFLeaky(**kwargs)


# =================================================================================================
# 3. MultiStrengthLeaky
# =================================================================================================
def test_multistrength_rules_example():
    """RULES.md §6: τ = 1, z = 2.5 -> strength 2, remainder 0.5; negative potentials kept."""
    n = MultiStrengthLeaky()
    theta, v = n(torch.tensor([[2.5, -0.5, 0.99, 1.0]]), n.init_leaky())
    assert torch.equal(theta, torch.tensor([[2.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(v, torch.tensor([[0.5, -0.5, 0.99, 0.0]]))


def test_multistrength_mem_is_the_remainder():
    tau, beta = 0.7, 0.9
    n = MultiStrengthLeaky(beta=beta, threshold=tau)
    x = currents(40, mean=0.4, std=0.8).detach().double()
    mem, v_prev = n.init_leaky(), torch.zeros_like(x[0])
    emitted = 0
    for t in range(T):
        theta, mem = n(x[t], mem)
        h = beta * v_prev + x[t]  # by hand
        assert torch.equal(theta, torch.floor(torch.clamp(h, min=0) / tau))
        torch.testing.assert_close(mem, h - tau * theta)
        ok = h >= 0
        assert torch.all((mem[ok] >= -1e-12) & (mem[ok] < tau))
        assert torch.equal(mem[~ok], h[~ok])
        emitted += int((theta > 1).sum())
        v_prev = mem
    assert emitted > 0  # strengths above 1 were exercised


MS_CASES = [
    pytest.param(dict(), id="defaults"),
    pytest.param(dict(threshold=0.7, beta=0.9, max_strength=2), id="leak-cap"),
    pytest.param(dict(threshold=0.5, detach_reset=False), id="live-reset"),
]


@pytest.mark.parametrize("kw", MS_CASES)
def test_multistrength_equals_rule_forward(kw):
    neuron = MultiStrengthLeaky(**kw)
    cfg = multistrength.MultiStrength(**kw)
    x = currents(41, mean=0.5, std=1.0)
    th_n, v_n = run(neuron, x)
    th_r, v_r = multistrength.forward(x, cfg)
    assert th_r.max() >= 2 and (th_r == 0).any()
    assert torch.equal(th_n, th_r)
    torch.testing.assert_close(v_n, v_r)
    w = [upstream(th_r, 42), upstream(v_r, 43)]
    g_n = grads([th_n, v_n], w, [x])
    g_r = grads([th_r, v_r], w, [x])
    assert_grads_close(g_n, g_r)
    assert g_n[0].abs().sum() > 0


def test_multistrength_conserves_charge():
    tau = 0.7
    n = MultiStrengthLeaky(threshold=tau)
    z = currents(44, mean=0.3, std=1.0).detach().double()
    theta, v = run(n, z)
    torch.testing.assert_close(tau * theta.sum(0) + v[-1], z.sum(0))
    # constant input: total strength after T steps is floor(T z / τ)
    c = torch.tensor([[0.3, 0.55, 1.9]], dtype=torch.float64)
    theta, _ = run(MultiStrengthLeaky(threshold=tau), c.expand(T, 1, 3))
    torch.testing.assert_close(theta.sum(0), torch.floor(T * c / tau))


@pytest.mark.parametrize("kwargs, flag", [
    (dict(spike_grad=snn.surrogate.atan()), "spike_grad"),
    (dict(reset_mechanism="zero"), "reset_mechanism"),
    (dict(learn_beta=True), "learn_beta"),
])
def test_multistrength_refuses(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        MultiStrengthLeaky(**kwargs)


# =================================================================================================
# 6. Drop-in swap into the seed-002 tutorial network
# =================================================================================================
from tests.neurons.tutorial_net import TutorialNet  # noqa: E402


@pytest.mark.parametrize("make_neuron", [
    pytest.param(lambda: ResetTermLeaky(beta=0.95), id="ResetTermLeaky"),
    pytest.param(lambda: HTDGLIFLeaky(), id="HTDGLIFLeaky"),
    pytest.param(lambda: MultiStrengthLeaky(), id="MultiStrengthLeaky"),
])
def test_drop_in_tutorial_network_trains(make_neuron):
    torch.manual_seed(0)
    net = TutorialNet(make_neuron)
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


@pytest.mark.parametrize("kwargs, name", [
    (dict(beta=0.9, threshold=float("nan")), "threshold"),
    (dict(beta=0.9, threshold=-1.0), "threshold"),
    (dict(beta=1.5), "beta"),
    (dict(beta=-0.5), "beta"),
    (dict(beta=torch.tensor([0.5, 1.2]), learn_beta=True), "beta"),
])
def test_reset_term_leaky_checks_its_parameters(kwargs, name):
    """Like the other neurons (review finding): no silent clamping, no NaN thresholds."""
    with pytest.raises(ValueError, match=name):
        ResetTermLeaky(**kwargs)


def test_na_leaky_mem_of_another_dtype_promotes_like_the_other_neurons():
    from spikegrad.neurons import NALeaky

    out, mem = NALeaky(beta=0.8)(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.float64))
    assert mem.dtype == torch.float64 and out.shape == (2, 3)
