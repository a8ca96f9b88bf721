"""Contract tests for ``spikegrad.rules.multistrength`` (RULES.md §6; API.md MultiStrengthLeaky).

Expectations: the facts of RULES.md §6 (example, T = 1 floor, constant-input total, charge
conservation, remainder range, cap), the straight-through window of API.md, and a plain-autograd
straight-through construction written here.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spikegrad.rules import multistrength as ms


def _cfg(**kw: object) -> ms.MultiStrength:
    return ms.MultiStrength(**kw)  # type: ignore[arg-type]


def _ref(
    z: torch.Tensor, *, tau: float = 1.0, beta: float = 1.0, cap: int | None = None,
    detach_reset: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-autograd straight-through construction of RULES.md §6 (independent of the module)."""
    v = torch.zeros_like(z[0])
    thetas, rems = [], []
    for t in range(z.shape[0]):
        h = beta * v + z[t]
        hd = h.detach()
        value = torch.floor(torch.clamp(hd, min=0) / tau)
        window = hd >= 0
        if cap is not None:
            value = torch.clamp(value, max=cap)
            window = window & (hd < tau * (cap + 1))
        theta = value + (h - hd) / tau * window.to(h.dtype)
        v = h - tau * (theta.detach() if detach_reset else theta)
        thetas.append(theta)
        rems.append(v)
    return torch.stack(thetas), torch.stack(rems)


def _grads(fn, z: torch.Tensor, g_th: torch.Tensor, g_v: torch.Tensor | None = None):
    z = z.detach().clone().requires_grad_(True)
    th, v = fn(z)
    loss = (g_th * th).sum() + (0 if g_v is None else (g_v * v).sum())
    (grad,) = torch.autograd.grad(loss, z)
    return th.detach(), v.detach(), grad


# --- the facts of RULES.md §6 ---------------------------------------------------------------


def test_example_tau1_z2_5() -> None:
    theta, v = ms.forward(torch.tensor([[2.5]], dtype=torch.float64), _cfg(threshold=1.0))
    assert theta.item() == 2.0 and v.item() == 0.5
    theta, v = ms.step(torch.tensor([2.5]), torch.zeros(1), _cfg())
    assert theta.item() == 2.0 and v.item() == 0.5


@pytest.mark.parametrize("tau", [1.0, 0.3, 2.5, 0.05])
def test_single_step_is_floor_of_relu(tau: float, gen: torch.Generator) -> None:
    z = (torch.rand(1, 200, generator=gen, dtype=torch.float64) - 0.3) * 10
    theta, v = ms.forward(z, _cfg(threshold=tau))
    expected = torch.tensor([math.floor(max(x, 0.0) / tau) for x in z.flatten().tolist()],
                            dtype=torch.float64).reshape(z.shape)
    assert torch.equal(theta, expected)
    torch.testing.assert_close(v, z - tau * expected, rtol=0, atol=0)
    assert (theta >= 0).all() and torch.equal(theta, theta.round())


def test_constant_input_total_strength(gen: torch.Generator) -> None:
    checked = 0
    for _ in range(300):
        z = float(torch.rand((), generator=gen, dtype=torch.float64)) * 5
        tau = 0.05 + float(torch.rand((), generator=gen, dtype=torch.float64)) * 3
        n = int(torch.randint(1, 40, (), generator=gen))
        total = n * z / tau
        if abs(total - round(total)) < 1e-6:  # avoid exact boundary cases
            continue
        theta, _ = ms.forward(torch.full((n, 1), z, dtype=torch.float64), _cfg(threshold=tau))
        assert theta.sum().item() == math.floor(total), (z, tau, n)
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("tau", [1.0, 0.37, 3.0])
def test_charge_conservation(tau: float, gen: torch.Generator) -> None:
    z = (torch.rand(50, 4, 6, generator=gen, dtype=torch.float64) - 0.35) * 3  # incl. negatives
    theta, v = ms.forward(z, _cfg(threshold=tau))
    assert (z < 0).any() and theta.sum() > 0
    torch.testing.assert_close(tau * theta.sum(0) + v[-1], z.sum(0), rtol=1e-12, atol=1e-12)
    # and step by step: v[t] = v[t-1] + z[t] - tau theta[t]
    v_prev = torch.cat([torch.zeros_like(v[:1]), v[:-1]])
    torch.testing.assert_close(v, v_prev + z - tau * theta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tau", [1.0, 0.3, 2.0, 0.7])
def test_remainder_range_and_negative_potentials_kept(tau: float, gen: torch.Generator) -> None:
    z = (torch.rand(60, 5, 7, generator=gen, dtype=torch.float64) - 0.4) * 2.5
    theta, v = ms.forward(z, _cfg(threshold=tau))
    h = torch.cat([torch.zeros_like(v[:1]), v[:-1]]) + z
    pos = h >= 0
    assert pos.sum() > 100 and (~pos).sum() > 10
    eps = 1e-12 * max(1.0, tau)  # floor(h/tau) may round at the last bit
    assert (v[pos] >= -eps).all() and (v[pos] < tau + eps).all()
    assert torch.equal(theta[~pos], torch.zeros_like(theta[~pos]))
    assert torch.equal(v[~pos], h[~pos])  # negative potentials are kept, nothing emitted


@pytest.mark.parametrize("cap", [1, 2, 5])
def test_cap_limits_strength_and_keeps_the_excess(cap: int, gen: torch.Generator) -> None:
    tau = 0.5
    z = torch.rand(30, 4, 5, generator=gen, dtype=torch.float64) * 4
    theta, v = ms.forward(z, _cfg(threshold=tau, max_strength=cap))
    assert theta.max() == cap and (theta >= 0).all()
    h = torch.cat([torch.zeros_like(v[:1]), v[:-1]]) + z
    expected = torch.clamp(torch.floor(h / tau), 0, cap)
    assert torch.equal(theta, expected)
    torch.testing.assert_close(v, h - tau * expected, rtol=0, atol=0)
    assert (v > tau).any()  # the excess stays in v
    torch.testing.assert_close(tau * theta.sum(0) + v[-1], z.sum(0))  # still conserved


def test_cap_single_step_values() -> None:
    h = torch.tensor([[0.4, 1.0, 2.6, 7.9, 30.0]], dtype=torch.float64)
    theta, v = ms.forward(h, _cfg(threshold=1.0, max_strength=3))
    assert torch.equal(theta[0], torch.tensor([0.0, 1, 2, 3, 3], dtype=torch.float64))
    torch.testing.assert_close(v[0], torch.tensor([0.4, 0.0, 0.6, 4.9, 27.0], dtype=torch.float64))


# --- the straight-through gradient -----------------------------------------------------------


@pytest.mark.parametrize(("tau", "cap"), [(1.0, None), (0.5, 3), (2.0, 1), (0.3, None)])
def test_ste_window(tau: float, cap: int | None, gen: torch.Generator) -> None:
    upper = tau * (cap + 1) if cap is not None else None
    pts = [-5.0, -1e-9, 0.0, 1e-9, tau / 2, tau, 3.3 * tau, 100.0]
    if upper is not None:
        pts += [upper - 1e-9, upper, upper + 1e-9, upper * 2]
    h = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    g = torch.randn(len(pts), generator=gen, dtype=torch.float64)
    theta = ms.strength(h, _cfg(threshold=tau, max_strength=cap))
    (grad,) = torch.autograd.grad(theta, h, g)
    inside = torch.tensor(
        [p >= 0 and (upper is None or p < upper) for p in pts], dtype=torch.float64
    )
    torch.testing.assert_close(grad, g * inside / tau, rtol=0, atol=0)
    # at exactly h = 0 and just below the cap: in the window; at exactly tau (D+1): out of it
    assert grad[2] == g[2] / tau
    if upper is not None:
        assert grad[pts.index(upper)] == 0


@pytest.mark.parametrize(("tau", "cap"), [(1.0, None), (0.3, 2), (2.0, None)])
def test_detach_reset_true_dv_dh_is_one(tau: float, cap: int | None) -> None:
    v_prev = torch.tensor([-1.0, 0.0, 0.2, 1.7, 5.0, 50.0], dtype=torch.float64,
                          requires_grad=True)
    z = torch.zeros(6, dtype=torch.float64)
    _, v = ms.step(z, v_prev, _cfg(threshold=tau, max_strength=cap))
    (dv,) = torch.autograd.grad(v.sum(), v_prev)  # h = v_prev + z, so dv/dv_prev = dv/dh
    assert torch.equal(dv, torch.ones_like(dv))


@pytest.mark.parametrize(("tau", "cap"), [(1.0, None), (0.3, 2), (2.0, None), (0.5, 1)])
def test_detach_reset_false_dv_dh_in_window(tau: float, cap: int | None) -> None:
    vals = [-1.0, -1e-3, 0.0, 0.2 * tau, 1.7 * tau, 5.0 * tau, 50.0 * tau]
    v_prev = torch.tensor(vals, dtype=torch.float64, requires_grad=True)
    z = torch.zeros(len(vals), dtype=torch.float64)
    _, v = ms.step(z, v_prev, _cfg(threshold=tau, max_strength=cap, detach_reset=False))
    (dv,) = torch.autograd.grad(v.sum(), v_prev)
    upper = math.inf if cap is None else tau * (cap + 1)
    expected = torch.tensor([1 - tau * (1 / tau) if 0 <= x < upper else 1.0 for x in vals],
                            dtype=torch.float64)
    torch.testing.assert_close(dv, expected, rtol=0, atol=1e-15)
    assert dv[2].abs() < 1e-15 and dv[0] == 1.0  # 0 in the window, 1 outside


@pytest.mark.parametrize(
    "kw",
    [{}, {"tau": 0.4}, {"tau": 0.6, "cap": 2}, {"beta": 0.8}, {"detach_reset": False},
     {"tau": 0.7, "beta": 0.9, "cap": 3, "detach_reset": False}],
    ids=["defaults", "tau", "cap", "leak", "attached", "all"],
)
def test_matches_plain_autograd_construction(
    kw: dict, dtype: torch.dtype, tol: dict, gen: torch.Generator
) -> None:
    cfg = _cfg(threshold=kw.get("tau", 1.0), beta=kw.get("beta", 1.0),
               max_strength=kw.get("cap"), detach_reset=kw.get("detach_reset", True))
    shape = (40, 3, 5)
    z = ((torch.rand(shape, generator=gen) - 0.3) * 2).to(dtype)
    g_th = torch.randn(shape, generator=gen).to(dtype)
    g_v = torch.randn(shape, generator=gen).to(dtype)
    th, v, grad = _grads(lambda x: ms.forward(x, cfg), z, g_th, g_v)
    rth, rv, rgrad = _grads(lambda x: _ref(x, **kw), z, g_th, g_v)
    assert th.sum() > 10
    assert torch.equal(th, rth)
    torch.testing.assert_close(v, rv, **tol)
    torch.testing.assert_close(grad, rgrad, **tol)


def test_step_chained_equals_forward_and_v0(gen: torch.Generator) -> None:
    cfg = _cfg(threshold=0.6, beta=0.9, max_strength=4)
    z = torch.rand(20, 3, 4, generator=gen, dtype=torch.float64) * 2
    v0 = torch.rand(3, 4, generator=gen, dtype=torch.float64)
    th, v = ms.forward(z, cfg, v0=v0)
    vv = v0
    for t in range(z.shape[0]):
        tht, vv = ms.step(z[t], vv, cfg)
        assert torch.equal(tht, th[t]) and torch.equal(vv, v[t])
    h0 = 0.9 * v0 + z[0]
    assert torch.equal(th[0], torch.clamp(torch.floor(h0 / 0.6), 0, 4))


# --- configuration -----------------------------------------------------------------------


def test_defaults_and_frozen() -> None:
    cfg = ms.MultiStrength()
    assert (cfg.threshold, cfg.beta, cfg.max_strength, cfg.detach_reset) == (1.0, 1.0, None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.threshold = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"beta": -0.1}, "beta"),
        ({"beta": 1.01}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"max_strength": 0}, "max_strength"),
        ({"max_strength": -2}, "max_strength"),
        ({"max_strength": 1.5}, "max_strength"),
        ({"max_strength": 2.0}, "max_strength"),
        ({"max_strength": True}, "max_strength"),
    ],
)
def test_invalid_config_names_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        ms.MultiStrength(**kwargs)  # type: ignore[arg-type]


def test_invalid_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="threshold"):
        ms.MultiStrength(threshold="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="detach_reset"):
        ms.MultiStrength(detach_reset=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("int_dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_input_raises_type_error(int_dtype: torch.dtype) -> None:
    with pytest.raises(TypeError):
        ms.forward(torch.ones(3, 2, dtype=int_dtype), ms.MultiStrength())
    with pytest.raises(TypeError):
        ms.step(torch.ones(2, dtype=int_dtype), torch.zeros(2), ms.MultiStrength())


# --- shapes, dtypes, devices -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(10, 6), (5, 2, 3, 4, 4)])
@pytest.mark.parametrize("cap", [None, 2])
def test_trailing_shapes_dtypes_devices(
    shape: tuple, cap: int | None, dtype: torch.dtype, device: str, gen: torch.Generator
) -> None:
    cfg = _cfg(threshold=0.5, max_strength=cap)
    z = ((torch.rand(shape, generator=gen) - 0.2) * 1.5).to(dtype=dtype, device=device)
    g = torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
    th, v, grad = _grads(lambda x: ms.forward(x, cfg), z, g, g)
    assert th.shape == v.shape == grad.shape == shape
    assert th.dtype == v.dtype == grad.dtype == dtype and th.device == z.device
    rth, rv, rgrad = _grads(lambda x: _ref(x, tau=0.5, cap=cap), z.cpu(), g.cpu(), g.cpu())
    assert torch.equal(th.cpu(), rth)
    torch.testing.assert_close(v.cpu(), rv)
    torch.testing.assert_close(grad.cpu(), rgrad)
