"""Contract tests for ``spikegrad.rules.bpsta`` (RULES.md §4, API.md ``HTDGLIFLeaky``).

Expectations: the golden values of RULES.md §4 and the paper's plain-autograd construction
(``o = H(h-θ)·h/h.detach()``, ``v = where(h≥θ, 0, h) + α(o - o.detach())``), written here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from spikegrad.rules import bpsta

PAPER = bpsta.HTDGLIF()
BRAINCOG = bpsta.HTDGLIF(mode="braincog")


# --- independent references ------------------------------------------------------------------


def _ref_paper(
    x: torch.Tensor, *, decay: float = 0.9, theta: float = 0.5, alpha: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's plain-autograd construction (RULES.md §4)."""
    v = torch.zeros_like(x[0])
    outs, pots = [], []
    for t in range(x.shape[0]):
        h = decay * v + F.relu(x[t])
        hd = h.detach()
        fired = (h >= theta).to(h.dtype)
        o = fired * h / torch.where(hd > 0, hd, torch.ones_like(hd))
        v = torch.where(h >= theta, torch.zeros_like(h), h) + alpha * (o - o.detach())
        outs.append(o)
        pots.append(h)
    return torch.stack(outs), torch.stack(pots)


def _ref_braincog(
    x: torch.Tensor, *, theta: float = 0.5, alpha: float = 0.2, dt: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """BrainCog's HTDGLIFNode as RULES.md §4 describes it (graded output, no leak, dt)."""
    v = torch.zeros_like(x[0])
    outs, pots = [], []
    for t in range(x.shape[0]):
        h = v + dt * F.relu(x[t])
        fired = (h >= theta).to(h.dtype)
        o = h * fired
        v = dt * (h * (1 - fired) + alpha * (o - o.detach()))
        outs.append(o)
        pots.append(h)
    return torch.stack(outs), torch.stack(pots)


def _grads(fn, x: torch.Tensor, g_o: torch.Tensor, g_h: torch.Tensor | None = None):
    x = x.detach().clone().requires_grad_(True)
    o, h = fn(x)
    loss = (g_o * o).sum() + (0 if g_h is None else (g_h * h).sum())
    (grad,) = torch.autograd.grad(loss, x)
    return o.detach(), h.detach(), grad


def _inputs(gen: torch.Generator, shape: tuple, dtype: torch.dtype = torch.float64,
            low: float = -0.3, high: float = 0.8) -> torch.Tensor:
    return (low + (high - low) * torch.rand(shape, generator=gen)).to(dtype)


def _d(*vals: float) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.float64)


# --- golden values (RULES.md §4), single step from zero state ------------------------------


def test_paper_golden_values() -> None:
    x = _d(0.2, 0.5, 0.8, 1.6, 2.5)
    # o and do/dx through forward (T = 1)
    xr = x[None].clone().requires_grad_(True)
    o, h = bpsta.forward(xr, PAPER)
    assert torch.equal(o[0].detach(), _d(0, 1, 1, 1, 1))
    torch.testing.assert_close(h[0].detach(), x)
    (do_dx,) = torch.autograd.grad(o.sum(), xr)
    torch.testing.assert_close(do_dx[0], _d(0, 2, 1.25, 0.625, 0.4))
    # d(lambda v)/dx: a second step with zero input gives h[1] = lambda v[0]
    x2 = torch.stack([x, torch.zeros_like(x)]).requires_grad_(True)
    o2, h2 = bpsta.forward(x2, PAPER)
    torch.testing.assert_close(h2[1].detach(), 0.9 * x * (x < 0.5))
    (dlv_dx,) = torch.autograd.grad(h2[1].sum(), x2)
    torch.testing.assert_close(dlv_dx[0], _d(0.9, 0.36, 0.225, 0.1125, 0.072))
    torch.testing.assert_close(dlv_dx[1], torch.zeros(5, dtype=torch.float64))  # relu'(0) = 0


def test_paper_golden_values_through_step_and_parts() -> None:
    x = _d(0.2, 0.5, 0.8, 1.6, 2.5).requires_grad_(True)
    o, h = bpsta.step(x, torch.zeros(5, dtype=torch.float64), PAPER)
    assert torch.equal(o.detach(), _d(0, 1, 1, 1, 1))
    (do_dx,) = torch.autograd.grad(o.sum(), x, retain_graph=True)
    torch.testing.assert_close(do_dx, _d(0, 2, 1.25, 0.625, 0.4))
    _, h1 = bpsta.step(torch.zeros(5, dtype=torch.float64), h, PAPER)
    (dlv_dx,) = torch.autograd.grad(h1.sum(), x, retain_graph=True)
    torch.testing.assert_close(dlv_dx, _d(0.9, 0.36, 0.225, 0.1125, 0.072))
    # the post-reset state itself
    (dv_dx,) = torch.autograd.grad(bpsta.reset(h, PAPER).sum(), x)
    torch.testing.assert_close(dv_dx, _d(1, 0.4, 0.25, 0.125, 0.08))


def test_braincog_golden_values() -> None:
    x = _d(-1, 0.2, 0.5, 0.7, 1.3, 2.5)
    xr = x[None].clone().requires_grad_(True)
    out, h = bpsta.forward(xr, BRAINCOG)
    torch.testing.assert_close(out[0].detach(), _d(0, 0, 0.5, 0.7, 1.3, 2.5), rtol=0, atol=0)
    (dout_dx,) = torch.autograd.grad(out.sum(), xr)
    torch.testing.assert_close(dout_dx[0], _d(0, 0, 1, 1, 1, 1))
    # mem = post-reset state; with no leak and zero input, h[1] = v[0]
    x2 = torch.stack([x, torch.zeros_like(x)]).requires_grad_(True)
    _, h2 = bpsta.forward(x2, BRAINCOG)
    torch.testing.assert_close(h2[1].detach(), _d(0, 0.2, 0, 0, 0, 0))
    (dmem_dx,) = torch.autograd.grad(h2[1].sum(), x2)
    torch.testing.assert_close(dmem_dx[0], _d(0, 1, 0.2, 0.2, 0.2, 0.2))
    # and through the parts
    xs = x.clone().requires_grad_(True)
    hs = bpsta.integrate(torch.zeros_like(x), xs, BRAINCOG)
    (dmem,) = torch.autograd.grad(bpsta.reset(hs, BRAINCOG).sum(), xs)
    torch.testing.assert_close(dmem, _d(0, 1, 0.2, 0.2, 0.2, 0.2))


# --- the plain-autograd construction over many steps -------------------------------------


@pytest.mark.parametrize(
    "kw", [{}, {"decay": 0.7, "theta": 0.8, "alpha": 0.5}, {"alpha": 0.0}, {"decay": 1.0}],
    ids=["defaults", "custom", "alpha0", "no-leak"],
)
def test_paper_matches_plain_autograd_construction(
    kw: dict, dtype: torch.dtype, tol: dict, gen: torch.Generator
) -> None:
    cfg = bpsta.HTDGLIF(threshold=kw.get("theta", 0.5), decay=kw.get("decay"),
                        alpha=kw.get("alpha", 0.2))
    shape = (40, 4, 6)
    x = _inputs(gen, shape, dtype)
    x[0, 0] = kw.get("theta", 0.5)  # h == theta exactly at t = 0: spikes (h >= theta)
    g_o = torch.randn(shape, generator=gen).to(dtype)
    g_h = torch.randn(shape, generator=gen).to(dtype)
    o, h, grad = _grads(lambda z: bpsta.forward(z, cfg), x, g_o, g_h)
    ro, rh, rgrad = _grads(lambda z: _ref_paper(z, **kw), x, g_o, g_h)
    assert 10 < o.sum() < o.numel() - 10, "the test needs spikes and silences"
    assert o[0, 0].bool().all()
    assert torch.equal(o, ro)
    torch.testing.assert_close(h, rh, **tol)
    torch.testing.assert_close(grad, rgrad, **tol)


@pytest.mark.parametrize("dt", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.2, 0.7])
def test_braincog_matches_reference(
    dt: float, alpha: float, dtype: torch.dtype, tol: dict, gen: torch.Generator
) -> None:
    cfg = bpsta.HTDGLIF(mode="braincog", alpha=alpha, dt=dt)
    shape = (30, 3, 5)
    x = _inputs(gen, shape, dtype, low=-0.5, high=1.0)
    g_o = torch.randn(shape, generator=gen).to(dtype)
    g_h = torch.randn(shape, generator=gen).to(dtype)
    o, h, grad = _grads(lambda z: bpsta.forward(z, cfg), x, g_o, g_h)
    ro, rh, rgrad = _grads(lambda z: _ref_braincog(z, alpha=alpha, dt=dt), x, g_o, g_h)
    assert (o > 0).sum() > 10
    torch.testing.assert_close(o, ro, **tol)
    torch.testing.assert_close(h, rh, **tol)
    torch.testing.assert_close(grad, rgrad, **tol)


def test_braincog_dt_scales_input_and_post_reset_state() -> None:
    x = _d(0.1, 0.3, -0.2, 0.05)
    for dt in (0.5, 1.0, 3.0):
        cfg = bpsta.HTDGLIF(mode="braincog", threshold=10.0, dt=dt)  # never fires
        xs = torch.stack([x, x])
        _, h = bpsta.forward(xs, cfg)
        torch.testing.assert_close(h[0], dt * F.relu(x))
        torch.testing.assert_close(h[1], dt * (dt * F.relu(x)) + dt * F.relu(x))
        # residual is scaled too: dv/dh = dt * alpha where it fires
        cfg_fire = bpsta.HTDGLIF(mode="braincog", threshold=0.1, alpha=0.3, dt=dt)
        hh = _d(0.05, 0.2).requires_grad_(True)
        v = bpsta.reset(hh, cfg_fire)
        torch.testing.assert_close(v.detach(), _d(dt * 0.05, 0.0))
        (dv,) = torch.autograd.grad(v.sum(), hh)
        torch.testing.assert_close(dv, _d(dt, dt * 0.3))


@pytest.mark.parametrize("cfg", [PAPER, BRAINCOG, bpsta.HTDGLIF(decay=0.6, alpha=0.4)],
                         ids=["paper", "braincog", "paper-custom"])
def test_step_chained_equals_forward(cfg: bpsta.HTDGLIF, gen: torch.Generator) -> None:
    shape = (25, 3, 4)
    x = _inputs(gen, shape)
    g_o = torch.randn(shape, generator=gen, dtype=torch.float64)
    g_h = torch.randn(shape, generator=gen, dtype=torch.float64)

    def chained(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.zeros_like(z[0])
        outs, pots = [], []
        for t in range(z.shape[0]):
            o, h = bpsta.step(z[t], h, cfg)
            outs.append(o)
            pots.append(h)
        return torch.stack(outs), torch.stack(pots)

    o1, h1, g1 = _grads(chained, x, g_o, g_h)
    o2, h2, g2 = _grads(lambda z: bpsta.forward(z, cfg), x, g_o, g_h)
    assert torch.equal(o1, o2) and torch.equal(h1, h2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)


# --- alpha is backward-only; silent neurons pass nothing -----------------------------------


@pytest.mark.parametrize("mode", ["paper", "braincog"])
def test_alpha_never_changes_the_forward(mode: str, gen: torch.Generator) -> None:
    x = _inputs(gen, (30, 4, 5))
    base_o, base_h = bpsta.forward(x, bpsta.HTDGLIF(mode=mode, alpha=0.0))
    grads = []
    for alpha in (0.2, 0.5, 1.0, -0.3, 3.0):
        xr = x.clone().requires_grad_(True)
        o, h = bpsta.forward(xr, bpsta.HTDGLIF(mode=mode, alpha=alpha))
        assert torch.equal(o.detach(), base_o) and torch.equal(h.detach(), base_h)
        grads.append(torch.autograd.grad(o.sum(), xr)[0])
    assert (grads[0] - grads[1]).abs().max() > 1e-3  # ... but it does change the backward


@pytest.mark.parametrize("cfg", [PAPER, BRAINCOG], ids=["paper", "braincog"])
def test_silent_neuron_passes_no_gradient(cfg: bpsta.HTDGLIF, gen: torch.Generator) -> None:
    shape = (20, 3, 6)
    x = _inputs(gen, shape, low=-1.0, high=0.02)  # h stays below 0.5 in both modes
    g_o = torch.randn(shape, generator=gen, dtype=torch.float64)
    o, h, grad = _grads(lambda z: bpsta.forward(z, cfg), x, g_o)
    assert o.abs().sum() == 0 and h.max() < 0.5 and h.max() > 0
    assert torch.equal(grad, torch.zeros_like(grad))
    # a neuron that does spike passes gradient
    x_on = x.clone()
    x_on[:, 0, 0] = 0.6
    _, _, grad_on = _grads(lambda z: bpsta.forward(z, cfg), x_on, g_o)
    assert grad_on[:, 0, 0].abs().sum() > 0
    assert torch.equal(grad_on[:, 1:], torch.zeros_like(grad_on[:, 1:]))


# --- configuration -----------------------------------------------------------------------


def test_defaults() -> None:
    assert (PAPER.mode, PAPER.threshold, PAPER.decay, PAPER.alpha, PAPER.dt) == (
        "paper", 0.5, 0.9, 0.2, None)
    assert (BRAINCOG.decay, BRAINCOG.dt) == (None, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER.alpha = 0.3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mode": "paper", "dt": 1.0}, "dt"),
        ({"mode": "braincog", "decay": 0.9}, "decay"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": -0.5}, "threshold"),
        ({"mode": "braincog", "threshold": 0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"mode": "Paper"}, "mode"),
        ({"mode": "spikingjelly"}, "mode"),
        ({"decay": 1.5}, "decay"),
        ({"decay": -0.1}, "decay"),
        ({"mode": "braincog", "dt": 0.0}, "dt"),
        ({"mode": "braincog", "dt": -1.0}, "dt"),
        ({"alpha": float("inf")}, "alpha"),
    ],
)
def test_invalid_config_names_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        bpsta.HTDGLIF(**kwargs)


@pytest.mark.parametrize(("kwargs", "name"), [({"alpha": "0.2"}, "alpha"),
                                              ({"threshold": None}, "threshold")])
def test_wrong_type_config_names_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(TypeError, match=name):
        bpsta.HTDGLIF(**kwargs)


@pytest.mark.parametrize("int_dtype", [torch.int64, torch.bool])
def test_integer_input_raises(int_dtype: torch.dtype) -> None:
    with pytest.raises(TypeError):
        bpsta.forward(torch.ones(3, 2, dtype=int_dtype), PAPER)
    with pytest.raises(TypeError):
        bpsta.step(torch.ones(2, dtype=int_dtype), torch.zeros(2), PAPER)


# --- shapes, dtypes, devices -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 5), (6, 2, 3, 4, 4)])
@pytest.mark.parametrize("mode", ["paper", "braincog"])
def test_trailing_shapes_dtypes_devices(
    shape: tuple, mode: str, dtype: torch.dtype, device: str, gen: torch.Generator
) -> None:
    cfg = bpsta.HTDGLIF(mode=mode)
    x = _inputs(gen, shape, dtype).to(device)
    g = torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
    o, h, grad = _grads(lambda z: bpsta.forward(z, cfg), x, g, g)
    assert o.shape == h.shape == grad.shape == shape
    assert o.dtype == h.dtype == grad.dtype == dtype and o.device == x.device
    ref = _ref_paper if mode == "paper" else _ref_braincog
    xd, gd = x.cpu().double(), g.cpu().double()
    ro, _, rgrad = _grads(ref, xd, gd, gd)
    torch.testing.assert_close(o.cpu().double(), ro, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.cpu().double(), rgrad, rtol=1e-4, atol=1e-4)
