"""Contract tests for ``spikegrad.rules.reset_term`` (RULES.md §2, API.md).

Every expectation is computed independently of the module under test: the paper's golden
Jacobian, plain autograd through a reset written here, a hand-written backward recursion, and
snntorch's own ``Leaky`` run step by step. (spikingjelly is not installed: no parity with it here.)
"""

from __future__ import annotations

from typing import Any

import pytest
import snntorch as snn
import torch
from snntorch import surrogate as snn_surrogate

from spikegrad.rules import reset_term, surrogate

T_SIG = 0.3  # the paper's sigmoid temperature
BETA = 5 / 6  # 1 - 1/tau_m with tau_m = 6
THETA = 1.0


# --- an independent reference: a tiny LIF with plain autograd ----------------------------


class _SigSpike(torch.autograd.Function):
    """Strict Heaviside forward, sigmoid(x/T) derivative backward; written for the tests only."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, temp: float, inclusive: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.temp = temp
        return (x >= 0 if inclusive else x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(x / ctx.temp)
        return g * sig * (1 - sig) / ctx.temp, None, None


def _ref_spike(x: torch.Tensor, temp: float = T_SIG, inclusive: bool = False) -> torch.Tensor:
    return _SigSpike.apply(x, temp, inclusive)


def _hprime(x: torch.Tensor, temp: float = T_SIG) -> torch.Tensor:
    sig = torch.sigmoid(x / temp)
    return sig * (1 - sig) / temp


def _ref_lif(
    c: torch.Tensor, *, beta: float, theta: float, mechanism: str, detach: bool,
    inclusive: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LIF of RULES.md §2 with an undetached (``detach=False``) or detached reset."""
    v = torch.zeros_like(c[0])
    ss, us = [], []
    for t in range(c.shape[0]):
        u = beta * v + c[t]
        s = _ref_spike(u - theta, inclusive=inclusive)
        s_r = s.detach() if detach else s
        v = u * (1 - s_r) if mechanism == "zero" else u - theta * s_r
        ss.append(s)
        us.append(u)
    return torch.stack(ss), torch.stack(us)


def _ref_grad_c(
    u: torch.Tensor, s: torch.Tensor, g_s: torch.Tensor, g_u: torch.Tensor, *, beta: float,
    theta: float, mechanism: str, k: float,
) -> torch.Tensor:
    """Hand-written BPTT with the reset term scaled by ``k`` (RULES.md §2 Jacobian)."""
    n = u.shape[0]
    hp = _hprime(u - theta)
    if mechanism == "zero":
        jac = beta * ((1 - s) - k * u * hp)  # du[t+1]/du[t]
    else:
        jac = beta * (1 - k * theta * hp)
    grad = torch.zeros_like(u)
    delta_next = torch.zeros_like(u[0])  # dL/du[t+1]
    for t in reversed(range(n)):
        carry = jac[t] * delta_next if t + 1 < n else 0.0
        delta_next = g_u[t] + g_s[t] * hp[t] + carry
        grad[t] = delta_next  # du[t]/dc[t] = 1
    return grad


def _inputs(gen: torch.Generator, shape: tuple, dtype: torch.dtype = torch.float64,
            scale: float = 0.8) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * scale).to(dtype)


def _grads(fn, c: torch.Tensor, g_s: torch.Tensor, g_u: torch.Tensor | None = None):
    """Run ``fn(c) -> (s, u)`` and return (s, u, dL/dc) for L = <g_s, s> + <g_u, u>."""
    c = c.detach().clone().requires_grad_(True)
    s, u = fn(c)
    loss = (g_s * s).sum() + (0 if g_u is None else (g_u * u).sum())
    (grad,) = torch.autograd.grad(loss, c)
    return s.detach(), u.detach(), grad


def _rt(c: torch.Tensor, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    kw.setdefault("beta", BETA)
    kw.setdefault("threshold", THETA)
    kw.setdefault("spike_fn", surrogate.Sigmoid(T_SIG))
    return reset_term.forward(c, **kw)


# --- golden value (RULES.md §2) ------------------------------------------------------------


def test_golden_jacobian_closed_form() -> None:
    u = torch.tensor([1.2], dtype=torch.float64)
    deriv = surrogate.Sigmoid(T_SIG).derivative
    with_term = reset_term.jacobian(u, beta=BETA, threshold=THETA, surrogate_derivative=deriv)
    without = reset_term.jacobian(u, beta=BETA, threshold=THETA, surrogate_derivative=deriv,
                                  reset_grad_scale=0.0)
    assert with_term.item() == pytest.approx(-0.7472, abs=5e-5)
    assert without.item() == 0.0


@pytest.mark.parametrize(("scale", "expected"), [(1.0, -0.7472), (0.0, 0.0)])
def test_golden_jacobian_measured_through_forward(scale: float, expected: float) -> None:
    # u[0] = c[0] = 1.2 (spikes), u[1] = beta * v[0] + c[1]; du[1]/du[0] = du[1]/dc[0]
    c = torch.tensor([[1.2], [0.1]], dtype=torch.float64, requires_grad=True)
    s, u = _rt(c, reset_grad_scale=scale)
    assert s[0].item() == 1.0
    (grad,) = torch.autograd.grad(u[1].sum(), c)
    assert grad[0].item() == pytest.approx(expected, abs=5e-5)
    assert grad[1].item() == 1.0


@pytest.mark.parametrize(("scale", "expected"), [(1.0, -0.7472), (0.0, 0.0)])
def test_golden_jacobian_measured_through_step(scale: float, expected: float) -> None:
    u_prev = torch.tensor([1.2], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.1], dtype=torch.float64)
    _, u = reset_term.step(c, u_prev, beta=BETA, threshold=THETA,
                           spike_fn=surrogate.Sigmoid(T_SIG), reset_grad_scale=scale)
    (grad,) = torch.autograd.grad(u.sum(), u_prev)
    assert grad.item() == pytest.approx(expected, abs=5e-5)
    assert u.item() == pytest.approx(0.1)  # reset to zero, then + c


def test_jacobian_closed_form_below_threshold_and_subtract() -> None:
    u = torch.linspace(-1, 3, 81, dtype=torch.float64)
    d = surrogate.Sigmoid(T_SIG).derivative
    hp = _hprime(u - THETA)
    s = (u > THETA).double()
    for k in (0.0, 0.5, 1.0, T_SIG):
        zero = reset_term.jacobian(u, beta=BETA, threshold=THETA, surrogate_derivative=d,
                                   reset_grad_scale=k)
        torch.testing.assert_close(zero, BETA * ((1 - s) - k * u * hp))
        sub = reset_term.jacobian(u, beta=BETA, threshold=THETA, surrogate_derivative=d,
                                  mechanism="subtract", reset_grad_scale=k)
        torch.testing.assert_close(sub, BETA * (1 - k * THETA * hp))


def test_scale_T_reproduces_the_authors_code_variant() -> None:
    """The author's code drops 1/T on the reset path: reset_grad_scale = T reproduces it."""
    u = torch.linspace(0, 2.5, 26, dtype=torch.float64)
    sig = torch.sigmoid((u - THETA) / T_SIG)
    expected = BETA * ((1 - (u > THETA).double()) - u * sig * (1 - sig))
    got = reset_term.jacobian(u, beta=BETA, threshold=THETA,
                              surrogate_derivative=surrogate.Sigmoid(T_SIG).derivative,
                              reset_grad_scale=T_SIG)
    torch.testing.assert_close(got, expected)


# --- full / detach against plain autograd -------------------------------------------------


@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
@pytest.mark.parametrize(("scale", "detach"), [(1.0, False), (0.0, True)])
def test_full_and_detach_equal_plain_autograd(
    mechanism: str, scale: float, detach: bool, dtype: torch.dtype, tol: dict,
    gen: torch.Generator,
) -> None:
    shape = (30, 4, 6)
    c = _inputs(gen, shape, dtype)
    g_s = torch.randn(shape, generator=gen).to(dtype)
    g_u = torch.randn(shape, generator=gen).to(dtype)
    s, u, grad = _grads(lambda x: _rt(x, mechanism=mechanism, reset_grad_scale=scale), c, g_s, g_u)
    rs, ru, rgrad = _grads(
        lambda x: _ref_lif(x, beta=BETA, theta=THETA, mechanism=mechanism, detach=detach),
        c, g_s, g_u,
    )
    assert s.sum() > 10, "the test needs spikes"
    assert torch.equal(s, rs)
    torch.testing.assert_close(u, ru, **tol)
    torch.testing.assert_close(grad, rgrad, **tol)


@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
def test_full_and_detach_differ(mechanism: str, gen: torch.Generator) -> None:
    """Regression: the reset term is not a no-op (a naive detached mapping does NOT match)."""
    c = _inputs(gen, (25, 3, 5))
    g_s = torch.randn(25, 3, 5, generator=gen, dtype=torch.float64)
    _, _, full = _grads(lambda x: _rt(x, mechanism=mechanism), c, g_s)
    _, _, det = _grads(lambda x: _rt(x, mechanism=mechanism, reset_grad_scale=0.0), c, g_s)
    assert (full - det).abs().max() > 1e-3


@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
@pytest.mark.parametrize("k", [0.0, 1.0, 0.3, 2.5, -0.7])
def test_any_scale_equals_hand_written_bptt(
    mechanism: str, k: float, gen: torch.Generator
) -> None:
    shape = (40, 3, 5)
    c = _inputs(gen, shape)
    g_s = torch.randn(shape, generator=gen, dtype=torch.float64)
    g_u = torch.randn(shape, generator=gen, dtype=torch.float64)
    s, u, grad = _grads(lambda x: _rt(x, mechanism=mechanism, reset_grad_scale=k), c, g_s, g_u)
    expected = _ref_grad_c(u, s, g_s, g_u, beta=BETA, theta=THETA, mechanism=mechanism, k=k)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
def test_gradient_is_linear_in_scale(mechanism: str, gen: torch.Generator) -> None:
    """grad(k) = grad(0) + k (grad(1) - grad(0)) wherever one reset lies on each path.

    With two steps every path from c[0] crosses exactly one reset. (Over longer sequences the
    gradient is a polynomial in k, products of one Jacobian per step; that case is covered by
    ``test_any_scale_equals_hand_written_bptt``.)
    """
    shape = (2, 64, 3)
    c = _inputs(gen, shape, scale=2.0)
    g_s = torch.randn(shape, generator=gen, dtype=torch.float64)
    g_u = torch.randn(shape, generator=gen, dtype=torch.float64)

    def grad_at(k: float) -> torch.Tensor:
        return _grads(lambda x: _rt(x, mechanism=mechanism, reset_grad_scale=k), c, g_s, g_u)[2]

    g0, g1 = grad_at(0.0), grad_at(1.0)
    assert (g1 - g0).abs().max() > 1e-3
    for k in (0.25, 0.3, 2.0, -1.5):
        torch.testing.assert_close(grad_at(k), g0 + k * (g1 - g0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [0.0, 0.5, 1.0, 3.0])
def test_scale_never_changes_the_forward(k: float, gen: torch.Generator) -> None:
    c = _inputs(gen, (30, 2, 7))
    s0, u0 = _rt(c, reset_grad_scale=1.0)
    s, u = _rt(c, reset_grad_scale=k)
    assert torch.equal(s, s0) and torch.equal(u, u0)


def test_subtract_reset_term_is_minus_theta_hprime() -> None:
    """Subtract: du[t+1]/du[t] = beta (1 - theta H'(u - theta)) with the term, beta without."""
    theta = 0.7
    u0 = torch.tensor([0.2, 0.65, 0.7, 0.8, 1.5], dtype=torch.float64)
    for k, expected in ((1.0, BETA * (1 - theta * _hprime(u0 - theta))),
                        (0.0, torch.full_like(u0, BETA))):
        c = torch.stack([u0, torch.zeros_like(u0)]).requires_grad_(True)
        _, u = _rt(c, threshold=theta, mechanism="subtract", reset_grad_scale=k)
        (grad,) = torch.autograd.grad(u[1].sum(), c)
        torch.testing.assert_close(grad[0], expected)
        # the forward subtracts theta where it spiked
        torch.testing.assert_close(u[1], BETA * (u0 - theta * (u0 > theta).double()))


# --- step chains to forward --------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
@pytest.mark.parametrize("k", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("inclusive", [False, True])
def test_step_chained_equals_forward(
    mechanism: str, k: float, inclusive: bool, gen: torch.Generator
) -> None:
    shape = (25, 3, 4)
    c = _inputs(gen, shape)
    # potentials exactly at the threshold (u[0] = c[0] = theta), where inclusive matters
    c[0, 0] = THETA
    c[5] = 0.0
    c[6, 1] = THETA
    fn = surrogate.Sigmoid(T_SIG, inclusive=inclusive)
    g_s = torch.randn(shape, generator=gen, dtype=torch.float64)
    g_u = torch.randn(shape, generator=gen, dtype=torch.float64)

    def chained(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.zeros_like(x[0])
        ss, us = [], []
        for t in range(x.shape[0]):
            s, u = reset_term.step(x[t], u, beta=BETA, threshold=THETA, spike_fn=fn,
                                   mechanism=mechanism, reset_grad_scale=k)
            ss.append(s)
            us.append(u)
        return torch.stack(ss), torch.stack(us)

    s1, u1, g1 = _grads(chained, c, g_s, g_u)
    s2, u2, g2 = _grads(lambda x: _rt(x, spike_fn=fn, mechanism=mechanism, reset_grad_scale=k),
                        c, g_s, g_u)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(u1, u2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    # and the independent reference agrees on the forward (inclusive spikes at u == theta)
    rs, _ = _ref_lif(c, beta=BETA, theta=THETA, mechanism=mechanism, detach=True,
                     inclusive=inclusive)
    assert torch.equal(s2, rs)
    assert s2[0, 0].bool().all() == inclusive


# --- snntorch parity -----------------------------------------------------------------------


def _run_leaky(lif: snn.Leaky, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mem = lif.init_leaky()
    ss, ms = [], []
    for t in range(c.shape[0]):
        s, mem = lif(c[t], mem)
        ss.append(s)
        ms.append(mem)
    return torch.stack(ss).to(c.dtype), torch.stack(ms)


def _snn_tol(dtype: torch.dtype) -> dict:
    # snntorch's spikes are float32 whatever the input, so its gradients carry float32 rounding
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-6, "atol": 1e-6}


@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
def test_snntorch_reset_delay_false_equals_scale_one(
    mechanism: str, dtype: torch.dtype, gen: torch.Generator
) -> None:
    shape = (30, 4, 8)
    c = _inputs(gen, shape, dtype)
    w = torch.randn(shape, generator=gen).to(dtype)  # random weights of a spike-based loss
    beta = torch.tensor(BETA, dtype=dtype)

    lif = snn.Leaky(beta=beta, threshold=THETA, reset_mechanism=mechanism, reset_delay=False,
                    spike_grad=snn_surrogate.sigmoid(slope=1 / T_SIG))
    s_ref, _, g_ref = _grads(lambda x: _run_leaky(lif, x), c, w)
    s, _, g = _grads(lambda x: _rt(x, beta=beta, mechanism=mechanism, reset_grad_scale=1.0), c, w)
    assert s.sum() > 10
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(g, g_ref, **_snn_tol(dtype))
    # and it is not the detached gradient
    _, _, g_det = _grads(lambda x: _rt(x, beta=beta, mechanism=mechanism, reset_grad_scale=0.0),
                         c, w)
    assert (g_det - g_ref).abs().max() > 1e-3


def test_snntorch_default_leaky_equals_scale_zero(dtype: torch.dtype, gen: torch.Generator) -> None:
    mechanism = "zero"
    shape = (30, 4, 8)
    c = _inputs(gen, shape, dtype)
    w_s = torch.randn(shape, generator=gen).to(dtype)
    w_u = torch.randn(shape, generator=gen).to(dtype)
    beta = torch.tensor(BETA, dtype=dtype)

    lif = snn.Leaky(beta=beta, threshold=THETA, reset_mechanism=mechanism,
                    spike_grad=snn_surrogate.sigmoid(slope=1 / T_SIG))
    s_ref, m_ref, g_ref = _grads(lambda x: _run_leaky(lif, x), c, w_s, w_u)
    s, u, g = _grads(lambda x: _rt(x, beta=beta, mechanism=mechanism, reset_grad_scale=0.0),
                     c, w_s, w_u)
    assert s.sum() > 10
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(u, m_ref, **_snn_tol(dtype))  # pre-reset potential
    torch.testing.assert_close(g, g_ref, **_snn_tol(dtype))


def test_snntorch_delayed_subtract_is_a_different_forward(gen: torch.Generator) -> None:
    """Regression: snntorch's default (delayed) subtract does not decay the subtracted threshold.

    Host: ``u[t] = beta u[t-1] + c[t] - theta s[t-1]``; the rule (RULES.md §1):
    ``u[t] = beta (u[t-1] - theta s[t-1]) + c[t]``. So ``reset_grad_scale=0`` with "subtract" is
    not snntorch's default subtract Leaky; only the "zero" mechanism maps one to one.
    """
    c = _inputs(gen, (20, 3, 6), scale=1.0)
    lif = snn.Leaky(beta=torch.tensor(BETA, dtype=torch.float64), threshold=THETA,
                    reset_mechanism="subtract", spike_grad=snn_surrogate.sigmoid(slope=1 / T_SIG))
    with torch.no_grad():
        _, m_host = _run_leaky(lif, c)
        _, u = _rt(c, mechanism="subtract", reset_grad_scale=0.0)
    s_host = (m_host > THETA).double()
    prev = torch.cat([torch.zeros_like(m_host[:1]), m_host[:-1]])
    s_prev = torch.cat([torch.zeros_like(s_host[:1]), s_host[:-1]])
    torch.testing.assert_close(m_host, BETA * prev + c - THETA * s_prev, rtol=1e-6, atol=1e-6)
    s_rule = (u > THETA).double()
    u_prev = torch.cat([torch.zeros_like(u[:1]), u[:-1]])
    sr_prev = torch.cat([torch.zeros_like(s_rule[:1]), s_rule[:-1]])
    torch.testing.assert_close(u, BETA * (u_prev - THETA * sr_prev) + c)
    assert (u - m_host).abs().max() > 1e-2


# --- trace and van Rossum loss -------------------------------------------------------------


@pytest.mark.parametrize("tau_s", [1.0, 2.0, 3.5, 10.0])
@pytest.mark.parametrize("t0", [0, 4])
def test_trace_of_single_spike_closed_form(tau_s: float, t0: int) -> None:
    n = 12
    s = torch.zeros(n, 1, dtype=torch.float64)
    s[t0] = 1.0
    a = reset_term.trace(s, tau_s)
    t = torch.arange(n, dtype=torch.float64)
    expected = torch.where(t >= t0, (1 / tau_s) * (1 - 1 / tau_s) ** (t - t0).clamp(min=0), 0.0)
    torch.testing.assert_close(a[:, 0], expected, rtol=1e-13, atol=0)


def test_trace_is_the_kernel_convolution(gen: torch.Generator) -> None:
    tau_s = 2.7
    s = (torch.rand(20, 3, 4, generator=gen) < 0.3).double()
    t = torch.arange(20, dtype=torch.float64)
    lag = t[:, None] - t[None, :]
    kernel = torch.where(lag >= 0, (1 / tau_s) * (1 - 1 / tau_s) ** lag.clamp(min=0), 0.0)
    expected = torch.einsum("tk,kbn->tbn", kernel, s)
    torch.testing.assert_close(reset_term.trace(s, tau_s), expected, rtol=1e-12, atol=1e-14)
    # trace_step is the recursion itself
    a_prev = torch.rand(3, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(reset_term.trace_step(a_prev, s[0], tau_s),
                               (1 - 1 / tau_s) * a_prev + s[0] / tau_s)


def _vr_example() -> tuple[torch.Tensor, torch.Tensor]:
    # [T=3, B=2, N=1]; tau_s = 2 so the kernel is 1/2, 1/4, 1/8 (exact in binary)
    s = torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]], [[0.0], [0.0]]], dtype=torch.float64)
    d = torch.tensor([[[0.0], [1.0]], [[1.0], [1.0]], [[0.0], [0.0]]], dtype=torch.float64)
    return s, d


def test_van_rossum_hand_computation() -> None:
    # sample 0: eps*s = [1/2, 1/4, 1/8], eps*d = [0, 1/2, 1/4] -> diff^2 = 1/4, 1/16, 1/64
    #           L0 = 1/2 * 21/64 = 0.1640625
    # sample 1: eps*s = 0, eps*d = [1/2, 3/4, 3/8] -> 1/4 + 9/16 + 9/64 = 61/64, L1 = 0.4765625
    s, d = _vr_example()
    none = reset_term.van_rossum_loss(s, d, tau_s=2.0, reduction="none")
    assert none.shape == (2,)
    torch.testing.assert_close(none, torch.tensor([0.1640625, 0.4765625], dtype=torch.float64),
                               rtol=0, atol=0)
    assert reset_term.van_rossum_loss(s, d, tau_s=2.0, reduction="sum").item() == 0.640625
    assert reset_term.van_rossum_loss(s, d, tau_s=2.0, reduction="mean").item() == 0.3203125
    assert reset_term.van_rossum_loss(s, d).item() == 0.3203125  # defaults: tau_s=2, mean
    assert reset_term.van_rossum_loss(d, d).item() == 0.0


def test_van_rossum_sums_over_neurons_and_trailing_dims(
    dtype: torch.dtype, device: str, gen: torch.Generator
) -> None:
    s, d = _vr_example()
    s2, d2 = torch.cat([s, s], dim=2).to(dtype), torch.cat([d, d], dim=2).to(dtype)
    got = reset_term.van_rossum_loss(s2.to(device), d2.to(device), reduction="none")
    assert got.dtype == dtype and got.device == s2.to(device).device
    torch.testing.assert_close(got.cpu(),
                               torch.tensor([2 * 0.1640625, 2 * 0.4765625], dtype=dtype))
    a = (torch.rand(6, 2, 3, 4, 5, generator=gen) < 0.4).to(dtype=dtype, device=device)
    b = (torch.rand(6, 2, 3, 4, 5, generator=gen) < 0.4).to(dtype=dtype, device=device)
    flat = reset_term.van_rossum_loss(a.reshape(6, 2, -1), b.reshape(6, 2, -1), tau_s=3.0,
                                      reduction="none")
    full = reset_term.van_rossum_loss(a, b, tau_s=3.0, reduction="none")
    torch.testing.assert_close(full, flat)
    # and against the kernel convolution, computed here
    diff = reset_term.trace(b, 3.0) - reset_term.trace(a, 3.0)
    torch.testing.assert_close(full, 0.5 * (diff**2).sum(dim=(0, 2, 3, 4)))


def test_van_rossum_is_smooth_gradcheck(gen: torch.Generator) -> None:
    s = torch.rand(5, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    d = (torch.rand(5, 2, 3, generator=gen) < 0.5).double()
    assert torch.autograd.gradcheck(
        lambda x: reset_term.van_rossum_loss(x, d, tau_s=2.5, reduction="none"), (s,)
    )


def test_van_rossum_and_trace_errors() -> None:
    s, d = _vr_example()
    with pytest.raises(ValueError, match="target_spikes"):
        reset_term.van_rossum_loss(s, d[:2])
    with pytest.raises(ValueError, match="reduction"):
        reset_term.van_rossum_loss(s, d, reduction="avg")
    for bad in (0.5, 0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="tau_s"):
            reset_term.van_rossum_loss(s, d, tau_s=bad)
        with pytest.raises(ValueError, match="tau_s"):
            reset_term.trace(s, bad)
    with pytest.raises(TypeError, match="spikes"):
        reset_term.van_rossum_loss(s.long(), d)
    with pytest.raises(TypeError, match="s must"):
        reset_term.trace(s.long())
    with pytest.raises(TypeError, match="c must"):
        reset_term.step(torch.ones(2, dtype=torch.int64), torch.zeros(2), beta=BETA,
                        threshold=THETA, spike_fn=surrogate.Sigmoid())


# --- validation, shapes, dtypes, devices --------------------------------------------------


def test_unknown_mechanism_raises() -> None:
    c = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="mechanism"):
        _rt(c, mechanism="hard")
    with pytest.raises(ValueError, match="mechanism"):
        reset_term.jacobian(c, beta=BETA, threshold=THETA,
                            surrogate_derivative=surrogate.Sigmoid().derivative, mechanism="x")
    with pytest.raises(ValueError, match="mechanism"):
        reset_term.step(c[0], c[0], beta=BETA, threshold=THETA, spike_fn=surrogate.Sigmoid(),
                        mechanism="zeros")


def test_integer_input_raises() -> None:
    with pytest.raises(TypeError):
        _rt(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(TypeError):
        _rt(torch.zeros(3, 2, dtype=torch.bool))


@pytest.mark.parametrize("shape", [(9, 4), (6, 2, 3, 4, 4)])
@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
def test_trailing_shapes_dtypes_devices(
    shape: tuple, mechanism: str, dtype: torch.dtype, device: str, tol: dict,
    gen: torch.Generator,
) -> None:
    c = _inputs(gen, shape, dtype).to(device)
    g = torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
    s, u, grad = _grads(lambda x: _rt(x, mechanism=mechanism), c, g, g)
    assert s.shape == u.shape == grad.shape == shape
    assert s.dtype == u.dtype == grad.dtype == dtype
    assert s.device == c.device
    # elementwise in the trailing dims: equal to the flattened run
    flat = (shape[0], -1)
    s2, u2, grad2 = _grads(lambda x: _rt(x, mechanism=mechanism), c.reshape(flat),
                           g.reshape(flat), g.reshape(flat))
    assert torch.equal(s.reshape(flat), s2)
    torch.testing.assert_close(grad.reshape(flat), grad2, **tol)
    # and equal to the CPU float64 reference
    rs, ru, rgrad = _grads(
        lambda x: _ref_lif(x, beta=BETA, theta=THETA, mechanism=mechanism, detach=False),
        c.cpu().double(), g.cpu().double(), g.cpu().double(),
    )
    assert torch.equal(s.cpu().double(), rs)
    torch.testing.assert_close(grad.cpu().double(), rgrad, rtol=1e-4, atol=1e-4)


def test_v0_is_the_initial_post_reset_state(gen: torch.Generator) -> None:
    c = _inputs(gen, (5, 3))
    v0 = torch.rand(3, generator=gen, dtype=torch.float64)
    _, u = _rt(c, v0=v0)
    torch.testing.assert_close(u[0], BETA * v0 + c[0])
