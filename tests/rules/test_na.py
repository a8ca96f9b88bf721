"""Neighborhood Aggregation (RULES.md §3): golden values, an independent reference, properties.

* regression against the authors' own code (``superrrpotato/Neighbors`` at ``bf8b564``, run on
  CPU in float64; ``data/na_golden_bf8b564.json`` and ``data/na_golden_rescale_bf8b564.json``);
* an independent reference written here from RULES.md §3 alone (Python floats, explicit loops
  over the neighbor ``k`` and the step ``t``, one neuron at a time; no spikegrad code), compared
  with ``na.backward`` over distances, errors, trace/spike outputs, resets, ``T`` and shapes;
* the properties RULES.md states (causality, linearity, batch independence, one-hot neighbor
  directions, a finite weight at ``u = ϑ``, the closed form of a silent neuron, the clamp),
  the least-squares form, configuration and input validation, and ``NAFunction``.

The reference is imported by ``tests/neurons/test_na_leaky.py``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spikegrad.rules import na

DATA = Path(__file__).parent / "data"
GOLDEN = json.loads((DATA / "na_golden_bf8b564.json").read_text())
GOLDEN_RESCALE = json.loads((DATA / "na_golden_rescale_bf8b564.json").read_text())
F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}


# =================================================================================================
# The independent reference: RULES.md §3, one neuron at a time, Python floats
# =================================================================================================
@dataclasses.dataclass(frozen=True)
class P:
    """The reference's parameters (``tau_s=None``: the output is the spike train)."""

    beta: float = 0.8
    theta: float = 1.0
    tau_s: float | None = 2.0
    distance: str = "inverse_cube"
    clamp: float = 5.0
    error: str = "accumulated"
    reset: str = "zero"

    @property
    def lam_s(self) -> float:
        return 0.0 if self.tau_s is None else 1.0 - 1.0 / self.tau_s


def ref_post_reset(u: float, s: float, p: P) -> float:
    if p.reset == "zero":
        return 0.0 if s == 1.0 else u
    return u - p.theta * s


def ref_trace(a_prev: float, s: float, p: P) -> float:
    return s if p.tau_s is None else p.lam_s * a_prev + s / p.tau_s


def ref_forward_neuron(c, p: P, u_prev=None, a_prev=0.0):
    """``(u, s, a)`` lists of one neuron; ``u_prev``: the potential before the window."""
    v = 0.0 if u_prev is None else ref_post_reset(u_prev, 1.0 if u_prev > p.theta else 0.0, p)
    a = a_prev
    us, ss, as_ = [], [], []
    for ct in c:
        u = p.beta * v + ct
        s = 1.0 if u > p.theta else 0.0
        v = ref_post_reset(u, s, p)
        a = ref_trace(a, s, p)
        us.append(u)
        ss.append(s)
        as_.append(a)
    return us, ss, as_


def ref_neighbor(c, u, s, a, k, p: P, a_prev=0.0):
    """Neighbor ``k``: ``(u_k, s_k, a_k)`` over the whole window (RULES.md §3 step 2)."""
    T = len(c)
    u_k, s_k, a_k = list(u[:k]), list(s[:k]), list(a[:k])
    before = a[k - 1] if k > 0 else a_prev
    flipped = 1.0 - s[k]
    u_k.append(p.theta)  # the smallest change of u[k] that flips the spike
    s_k.append(flipped)
    a_k.append(ref_trace(before, flipped, p))
    v = p.theta if s[k] == 1.0 else 0.0  # removed: parked at exactly ϑ; added: reset to 0
    for t in range(k + 1, T):
        ut = p.beta * v + c[t]
        st = 1.0 if ut > p.theta else 0.0
        v = ref_post_reset(ut, st, p)
        u_k.append(ut)
        s_k.append(st)
        a_k.append(ref_trace(a_k[-1], st, p))
    return u_k, s_k, a_k


def ref_errors(g, p: P):
    if p.error == "local" or p.tau_s is None:
        return list(g)
    e = [0.0] * len(g)
    nxt = 0.0
    for t in range(len(g) - 1, -1, -1):
        e[t] = g[t] + p.lam_s * nxt
        nxt = e[t]
    return e


def ref_weight(u: float, p: P) -> float:
    gap = p.theta - u
    if gap == 0.0:
        return p.clamp  # ϑ - u = +0: (+0)^-n = +inf, clamped
    w = 1.0 / gap**3 if p.distance == "inverse_cube" else 1.0 / gap
    return min(p.clamp, max(-p.clamp, w))


def ref_loss_changes(c, g, p: P, u_prev=None, a_prev=0.0):
    u, s, a = ref_forward_neuron(c, p, u_prev, a_prev)
    e = ref_errors(g, p)
    out = []
    for k in range(len(c)):
        _, _, a_k = ref_neighbor(c, u, s, a, k, p, a_prev)
        d_l = 0.0
        for t in range(k, len(c)):
            d_l += e[t] * (a_k[t] - a[t])
        out.append(d_l)
    return out


def ref_delta_neuron(c, g, p: P, u_prev=None, a_prev=0.0):
    u, _, _ = ref_forward_neuron(c, p, u_prev, a_prev)
    d_l = ref_loss_changes(c, g, p, u_prev, a_prev)
    return [d * ref_weight(uk, p) for d, uk in zip(d_l, u, strict=True)]


def _columns(x: torch.Tensor) -> list[list[float]]:
    return x.detach().to(F64).reshape(x.shape[0], -1).T.tolist()


def _from_columns(cols, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(cols, dtype=F64).T.reshape(like.shape)


def ref_forward(c: torch.Tensor, p: P, u_prev=None, a_prev=None):
    """``(s, u, a)`` of a whole ``[T, B, *]`` window (float64)."""
    up = [None] * c[0].numel() if u_prev is None else u_prev.detach().double().flatten().tolist()
    ap = [0.0] * c[0].numel() if a_prev is None else a_prev.detach().double().flatten().tolist()
    res = [ref_forward_neuron(col, p, up[i], ap[i]) for i, col in enumerate(_columns(c))]
    u, s, a = ([r[j] for r in res] for j in range(3))
    return _from_columns(s, c), _from_columns(u, c), _from_columns(a, c)


def ref_delta(c: torch.Tensor, g: torch.Tensor, p: P, u_prev=None, a_prev=None) -> torch.Tensor:
    """``δ = ∂L/∂c`` of a whole ``[T, B, *]`` window (float64)."""
    up = [None] * c[0].numel() if u_prev is None else u_prev.detach().double().flatten().tolist()
    ap = [0.0] * c[0].numel() if a_prev is None else a_prev.detach().double().flatten().tolist()
    cols = [ref_delta_neuron(cc, gg, p, up[i], ap[i])
            for i, (cc, gg) in enumerate(zip(_columns(c), _columns(g), strict=True))]
    return _from_columns(cols, c)


# =================================================================================================
# helpers
# =================================================================================================
_HAS_IMPL = "implementation" in {f.name for f in dataclasses.fields(na.NA)}


@pytest.fixture(params=["torch", "cpp"] if _HAS_IMPL else ["default"])
def impl(request) -> dict:
    """Every implementation of ``na`` that exists here (the reference torch code, the kernel)."""
    if request.param == "default":
        return {}
    if request.param == "cpp":
        if importlib.util.find_spec("spikegrad.rules.na.cpu") is None:
            pytest.skip("no compiled NA kernel in this tree")
        from spikegrad.rules.na import cpu as na_cpu

        status = na_cpu.status()
        if status != "available":
            pytest.skip(f"compiled NA kernel unavailable: {status}")
    return {"implementation": request.param}


def cfg_of(p: P, impl: dict | None = None) -> na.NA:
    return na.NA(beta=p.beta, threshold=p.theta, tau_s=p.tau_s, distance=p.distance,
                 clamp=p.clamp, error=p.error, reset=p.reset, **(impl or {}))


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def currents(shape, seed: int, mean: float = 0.45, std: float = 0.7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64) * std + mean


def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def na_delta(c: torch.Tensor, g: torch.Tensor, cfg: na.NA) -> torch.Tensor:
    s, u, a = na.forward(c, cfg)
    return na.backward(c, u, s, a, g, cfg)


def golden_case(name: str):
    case = GOLDEN["cases"][name]
    prm = case["params"]
    tau_s = None if prm["tau_s"] == 1 else float(prm["tau_s"])
    p = P(beta=1.0 - 1.0 / prm["tau_m"], theta=float(prm["threshold"]), tau_s=tau_s)
    return case, p


CASES = list(GOLDEN["cases"])


# =================================================================================================
# 1. Golden values from the authors' code
# =================================================================================================
def test_golden_file_structure():
    assert GOLDEN["dtype"] == "float64"
    assert set(CASES) == {"A", "B", "C", "D", "E_tau_s_1", "F_T20"}
    for name in CASES:
        case, _ = golden_case(name)
        for key in ("c", "g", "u", "s", "a", "e_accumulated", "delta",
                    "delta_rescaled_as_output_layer"):
            assert list(t64(case[key]).shape) == case["shape"], (name, key)
    c_case, _ = golden_case("C")
    assert t64(c_case["s"]).sum() == 0  # never spikes
    d_case, _ = golden_case("D")
    assert (t64(d_case["u"]) == 1.0).sum() == 3  # u == ϑ exactly at 3 points


@pytest.mark.parametrize("name", CASES)
def test_golden_forward(name, impl):
    case, p = golden_case(name)
    c = t64(case["c"])
    s, u, a = na.forward(c, cfg_of(p, impl))
    assert torch.equal(s, t64(case["s"]))
    torch.testing.assert_close(u, t64(case["u"]), **TIGHT)
    torch.testing.assert_close(a, t64(case["a"]), **TIGHT)
    # the reference agrees with the authors too
    s_r, u_r, a_r = ref_forward(c, p)
    assert torch.equal(s_r, t64(case["s"]))
    torch.testing.assert_close(u_r, t64(case["u"]), **TIGHT)
    torch.testing.assert_close(a_r, t64(case["a"]), **TIGHT)


@pytest.mark.parametrize("name", CASES)
def test_golden_errors(name):
    case, p = golden_case(name)
    e = na.errors(t64(case["g"]), cfg_of(p))
    torch.testing.assert_close(e, t64(case["e_accumulated"]), **TIGHT)
    cols = [ref_errors(col, p) for col in _columns(t64(case["g"]))]
    torch.testing.assert_close(_from_columns(cols, e), t64(case["e_accumulated"]), **TIGHT)


@pytest.mark.parametrize("name", CASES)
def test_golden_delta(name, impl):
    case, p = golden_case(name)
    c, g = t64(case["c"]), t64(case["g"])
    delta = na_delta(c, g, cfg_of(p, impl))
    torch.testing.assert_close(delta, t64(case["delta"]), **TIGHT)
    torch.testing.assert_close(ref_delta(c, g, p), t64(case["delta"]), **TIGHT)
    assert delta.abs().sum() > 0


def test_golden_tau_s_1_equals_spike_output():
    """``τs = 1`` (the authors' spike output) is spikegrad's ``tau_s=None``; both accepted."""
    case, p = golden_case("E_tau_s_1")
    assert p.tau_s is None
    c, g = t64(case["c"]), t64(case["g"])
    one = dataclasses.replace(p, tau_s=1.0)
    for cfg in (cfg_of(p), cfg_of(one)):
        s, _, a = na.forward(c, cfg)
        assert torch.equal(a, s)
        torch.testing.assert_close(na_delta(c, g, cfg), t64(case["delta"]), **TIGHT)


@pytest.mark.parametrize("name", CASES)
def test_golden_rescale_output_layer(name):
    case, p = golden_case(name)
    r = na.Rescale()
    out = r(t64(case["delta"]))
    torch.testing.assert_close(out, t64(case["delta_rescaled_as_output_layer"]), **TIGHT)
    assert r.ref == pytest.approx(case["grad_norm_dict_after"]["0"], abs=1e-12)
    # and through the autograd node, which starts a new reference at each forward
    c = t64(case["c"]).requires_grad_(True)
    a, _ = na.NAFunction.apply(c, cfg_of(p), r)
    (d,) = torch.autograd.grad((a * t64(case["g"])).sum(), c)
    torch.testing.assert_close(d, t64(case["delta_rescaled_as_output_layer"]), **TIGHT)


def test_golden_two_layer_rescale():
    """The output layer's backward runs first and sets the reference; the hidden layer is scaled
    by ``ln(ref / (mean|δ_hidden| + 1e-5) + 1.02) · 1.2`` with the output's rescaled, rounded
    mean as ``ref``."""
    gold = GOLDEN_RESCALE
    assert gold["output"]["last_layer_name"] == 1
    p = P(beta=0.8, theta=1.0, tau_s=2.0)
    cfg = cfg_of(p)
    raw = {}
    for layer in ("output", "hidden"):
        c, g = t64(gold[layer]["c"]), t64(gold[layer]["g"])
        raw[layer] = na_delta(c, g, cfg)
        torch.testing.assert_close(raw[layer], t64(gold[layer]["delta_raw"]), **TIGHT)
        torch.testing.assert_close(ref_delta(c, g, p), raw[layer], **TIGHT)
    r = na.Rescale()
    out = r(raw["output"])
    assert r.ref == pytest.approx(gold["output"]["grad_norm_dict_after"]["1"], abs=1e-12)
    hid = r(raw["hidden"])
    torch.testing.assert_close(out, t64(gold["output"]["delta_rescaled"]), **TIGHT)
    torch.testing.assert_close(hid, t64(gold["hidden"]["delta_rescaled"]), **TIGHT)
    # by hand, from the stored norms
    ref_norm = gold["hidden"]["grad_norm_dict_after"]["1"]
    m = float(raw["hidden"].abs().mean())
    torch.testing.assert_close(hid, raw["hidden"] * 1.2 * math.log(ref_norm / (m + 1e-5) + 1.02),
                               **TIGHT)

    # the same through two NAFunction layers sharing one Rescale; the output layer's input
    # depends (with a zero weight) on the hidden layer's output, so its backward runs first
    shared = na.Rescale()
    c_h = t64(gold["hidden"]["c"]).requires_grad_(True)
    c_o = t64(gold["output"]["c"]).requires_grad_(True)
    a_h, _ = na.NAFunction.apply(c_h, cfg, shared)
    a_o, _ = na.NAFunction.apply(c_o + 0.0 * a_h.sum(), cfg, shared)
    loss = (a_o * t64(gold["output"]["g"])).sum() + (a_h * t64(gold["hidden"]["g"])).sum()
    d_h, d_o = torch.autograd.grad(loss, [c_h, c_o])
    torch.testing.assert_close(d_o, t64(gold["output"]["delta_rescaled"]), **TIGHT)
    torch.testing.assert_close(d_h, t64(gold["hidden"]["delta_rescaled"]), **TIGHT)


# =================================================================================================
# 2. Against the independent reference
# =================================================================================================
@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 2, 2)], ids=["BN", "BCHW"])
@pytest.mark.parametrize("T", [1, 2, 5, 13])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
@pytest.mark.parametrize("error", ["accumulated", "local"])
@pytest.mark.parametrize("distance", ["inverse_cube", "inverse"])
def test_backward_matches_reference(distance, error, tau_s, reset, T, shape, impl):
    p = P(beta=0.8, theta=1.0, tau_s=tau_s, distance=distance, error=error, reset=reset)
    cfg = cfg_of(p, impl)
    seed = 1000 * T + len(shape)
    c = currents((T, *shape), seed)
    g = randn((T, *shape), seed + 1)
    s, u, a = na.forward(c, cfg)
    s_r, u_r, a_r = ref_forward(c, p)
    assert torch.equal(s, s_r)
    torch.testing.assert_close(u, u_r, **TIGHT)
    torch.testing.assert_close(a, a_r, **TIGHT)
    if T >= 5:
        assert 0.05 < s.mean() < 0.8, "the inputs must make neurons both fire and stay silent"
    delta = na.backward(c, u, s, a, g, cfg)
    assert delta.shape == c.shape and delta.dtype == F64
    torch.testing.assert_close(delta, ref_delta(c, g, p), **TIGHT)
    assert delta.abs().sum() > 0


@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
def test_backward_matches_reference_other_parameters(tau_s, impl):
    """β, ϑ and the clamp are not the defaults; currents are larger (many clamped weights)."""
    p = P(beta=0.6, theta=0.7, tau_s=tau_s, clamp=2.5, reset="subtract")
    c = currents((9, 3, 5), 77, mean=0.5, std=1.0)
    g = randn((9, 3, 5), 78)
    torch.testing.assert_close(na_delta(c, g, cfg_of(p, impl)), ref_delta(c, g, p), **TIGHT)


def test_float32_matches_reference():
    p = P(tau_s=2.0)
    c = currents((7, 4, 6), 90).float()
    g = randn((7, 4, 6), 91).float()
    s, u, a = na.forward(c, cfg_of(p))
    assert s.dtype == u.dtype == a.dtype == torch.float32
    delta = na.backward(c, u, s, a, g, cfg_of(p))
    assert delta.dtype == torch.float32
    s_r, _, _ = ref_forward(c, p)
    assert torch.equal(s.double(), s_r)  # no current within float32 rounding of ϑ here
    torch.testing.assert_close(delta.double(), ref_delta(c, g, p), rtol=1e-5, atol=1e-5)


def test_subtract_reset_changes_the_replay():
    """A naive mapping that replays with the hard reset whatever the neuron uses does NOT
    match: the subtract reset gives other δ (and the reference follows the neuron's reset)."""
    c = currents((8, 4, 5), 5, mean=0.6)
    g = randn((8, 4, 5), 6)
    zero, sub = P(reset="zero"), P(reset="subtract")
    d_zero, d_sub = na_delta(c, g, cfg_of(zero)), na_delta(c, g, cfg_of(sub))
    assert (d_zero - d_sub).abs().max() > 1e-3
    torch.testing.assert_close(d_sub, ref_delta(c, g, sub), **TIGHT)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_removed_spike_is_parked_at_exactly_threshold(dtype, impl):
    """RULES.md's pitfall: ``u + (ϑ - u)`` can round above ϑ and re-create the spike. With
    β = 1 and no input after the flipped step, the parked state is ϑ, not above it: no spike."""
    theta, u0 = ((1.3102272059107631, 4.369018510308357) if dtype == torch.float64
                 else (0.8440760970115662, 3.295397996902466))
    th, u = torch.tensor(theta, dtype=dtype), torch.tensor(u0, dtype=dtype)
    assert u + (th - u) > th  # the naive parked state would spike again
    p = P(beta=1.0, theta=float(th), tau_s=None)
    cfg = cfg_of(p, impl)
    c = torch.stack([u, torch.zeros((), dtype=dtype)]).reshape(2, 1, 1)
    g = torch.tensor([0.0, 1.0], dtype=dtype).reshape(2, 1, 1)
    s, _, _ = na.forward(c, cfg)
    assert s.flatten().tolist() == [1.0, 0.0]
    delta = na_delta(c, g, cfg)
    assert delta[0].item() == 0.0  # neighbor 0: no spike at step 1, so ΔL[0] = -g[0] = 0
    tol = TIGHT if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-6}
    torch.testing.assert_close(delta.double(), ref_delta(c, g, p), **tol)


# =================================================================================================
# 3. Properties
# =================================================================================================
PROPERTY_CASES = [
    pytest.param(P(tau_s=2.0), id="trace-accumulated"),
    pytest.param(P(tau_s=2.0, error="local", distance="inverse"), id="trace-local-inverse"),
    pytest.param(P(tau_s=None, reset="subtract"), id="spikes-subtract"),
]


@pytest.mark.parametrize("p", PROPERTY_CASES)
def test_causality(p, impl):
    """δ[k] depends on g only through g[t >= k]."""
    cfg = cfg_of(p, impl)
    T = 9
    c, g = currents((T, 3, 4), 11), randn((T, 3, 4), 12)
    delta = na_delta(c, g, cfg)
    for k in range(1, T):
        g2 = g.clone()
        g2[:k] = randn((k, 3, 4), 100 + k) * 3
        d2 = na_delta(c, g2, cfg)
        assert torch.equal(d2[k:], delta[k:]), f"δ[{k}:] changed with g[:{k}]"
        assert not torch.equal(d2[:k], delta[:k])  # the earlier steps do see it


@pytest.mark.parametrize("p", PROPERTY_CASES)
def test_linearity_in_g(p, impl):
    cfg = cfg_of(p, impl)
    c = currents((8, 3, 4), 13)
    g1, g2 = randn((8, 3, 4), 14), randn((8, 3, 4), 15)
    alpha, beta = 1.7, -0.6
    torch.testing.assert_close(na_delta(c, alpha * g1 + beta * g2, cfg),
                               alpha * na_delta(c, g1, cfg) + beta * na_delta(c, g2, cfg),
                               **TIGHT)


@pytest.mark.parametrize("p", PROPERTY_CASES)
def test_batch_independence(p, impl):
    cfg = cfg_of(p, impl)
    c, g = currents((8, 4, 5), 16), randn((8, 4, 5), 17)
    delta = na_delta(c, g, cfg)
    c2, g2 = c.clone(), g.clone()
    c2[:, 1:] = currents((8, 3, 5), 18, mean=0.8)
    g2[:, 1:] = randn((8, 3, 5), 19)
    d2 = na_delta(c2, g2, cfg)
    assert torch.equal(d2[:, 0], delta[:, 0])
    assert not torch.equal(d2[:, 1:], delta[:, 1:])
    # and one sample alone gives the same
    assert torch.equal(na_delta(c[:, :1], g[:, :1], cfg), delta[:, :1])


def ref_implied_input(u_traj, s_traj, p: P):
    """The input current that produces a potential trajectory: ``c[t] = u[t] - β v[t-1]``."""
    out, v = [], 0.0
    for ut, st in zip(u_traj, s_traj, strict=True):
        out.append(ut - p.beta * v)
        v = ref_post_reset(ut, st, p)
    return out


def ref_boxminus(u_k, s_k, u, s, p: P):
    """``u_k ⊟ u``: the difference of the implied inputs."""
    pairs = zip(ref_implied_input(u_k, s_k, p), ref_implied_input(u, s, p), strict=True)
    return [x - y for x, y in pairs]


def ref_boxplus(c, delta, p: P, forced):
    """``u ⊞ Δ``: simulate with ``c + Δ``; a step listed in ``forced`` takes the given spike
    (a tie at ϑ is broken toward the neighbor, as the smallest flip does)."""
    v, us, ss = 0.0, [], []
    for t, (ct, dt) in enumerate(zip(c, delta, strict=True)):
        ut = p.beta * v + (ct + dt)
        st = forced[t] if t in forced else (1.0 if ut > p.theta else 0.0)
        v = ref_post_reset(ut, st, p)
        us.append(ut)
        ss.append(st)
    return us, ss


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_neighbor_directions_are_one_hot(reset, impl):
    """The poster's ⊞/⊟: neighbor k equals the original before k, ``u_k ⊟ u`` is one-hot at k
    with ``d_MP = |ϑ - u[k]|``, ``u ⊞ (u_k ⊟ u) = u_k``, and the loss change built from these
    trajectories is ``na.loss_change``."""
    p = P(tau_s=2.0, reset=reset)
    T = 10
    c, g = currents((T, 2, 3), 21), randn((T, 2, 3), 22)
    cfg = cfg_of(p, impl)
    s_t, u_t, a_t = na.forward(c, cfg)
    e_t = na.errors(g, cfg)
    d_l = na.loss_change(c, s_t, a_t, e_t, cfg)
    checked_add = checked_remove = 0
    for n, (cc, gg) in enumerate(zip(_columns(c), _columns(g), strict=True)):
        u, s, a = ref_forward_neuron(cc, p)
        e = ref_errors(gg, p)
        for k in range(T):
            u_k, s_k, a_k = ref_neighbor(cc, u, s, a, k, p)
            assert u_k[:k] == u[:k] and s_k[:k] == s[:k] and a_k[:k] == a[:k]
            assert s_k[k] == 1.0 - s[k]
            direction = ref_boxminus(u_k, s_k, u, s, p)
            for t in range(T):
                if t == k:
                    assert direction[t] == pytest.approx(p.theta - u[k], abs=1e-12)
                else:
                    assert abs(direction[t]) <= 1e-12, (n, k, t, direction)
            assert math.sqrt(sum(x * x for x in direction)) == pytest.approx(
                abs(p.theta - u[k]), abs=1e-12)
            u_back, s_back = ref_boxplus(cc, direction, p, forced={k: 1.0 - s[k]})
            assert s_back == s_k
            assert u_back == pytest.approx(u_k, abs=1e-12)
            expected = sum(e[t] * (a_k[t] - a[t]) for t in range(k, T))
            assert d_l.reshape(T, -1)[k, n].item() == pytest.approx(expected, abs=1e-12)
            checked_add += s[k] == 0.0
            checked_remove += s[k] == 1.0
    assert checked_add > 5 and checked_remove > 5


@pytest.mark.parametrize("distance", ["inverse_cube", "inverse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_weight_is_plus_clamp_at_threshold(distance, dtype, impl):
    for theta, clamp in ((1.0, 5.0), (0.7, 2.0), (0.25, 100.0)):
        cfg = na.NA(beta=0.0, threshold=theta, distance=distance, clamp=clamp, tau_s=2.0, **impl)
        th = torch.tensor([theta], dtype=dtype)
        w = na.distance_weight(th, cfg)
        assert torch.isfinite(w).all() and w.item() == pytest.approx(clamp)
        # in the backward: with β = 0, u = c, so u == ϑ exactly at steps 0 and 2
        c = torch.tensor([theta, 0.3 * theta, theta], dtype=dtype).reshape(3, 1, 1)
        p = P(beta=0.0, theta=float(th), tau_s=2.0, distance=distance, clamp=clamp)
        s, u, a = na.forward(c, cfg)
        assert (u == th).sum() == 2 and s.sum() == 0  # strict u > ϑ: no spike at u = ϑ
        g = torch.tensor([0.3, -1.0, 0.7], dtype=dtype).reshape(3, 1, 1)
        delta = na.backward(c, u, s, a, g, cfg)
        assert torch.isfinite(delta).all()
        d_l = na.loss_change(c, s, a, na.errors(g, cfg), cfg)
        torch.testing.assert_close(delta[u == th], clamp * d_l[u == th])
        torch.testing.assert_close(delta.double(), ref_delta(c, g, p), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tau_s", [None, 2.0, 3.0], ids=["spikes", "tau2", "tau3"])
@pytest.mark.parametrize("error", ["accumulated", "local"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_silent_neuron_closed_form(tau_s, error, reset, impl):
    """A neuron that never spikes, with non-negative inputs: every neighbor adds a spike at k and
    resets to 0; from 0 the replay stays below the original potential (c >= 0), so it never
    spikes. With ``a = 0``, ``a_k[t] = λs^(t-k)/τs`` for ``t >= k``:

    * accumulated errors: ``ΔL[k] = (1/τs) Σ_{j>=k} (j-k+1) λs^(j-k) g[j]``,
    * local errors:       ``ΔL[k] = (1/τs) Σ_{j>=k} λs^(j-k) g[j]``,
    * spike output (τs = 1): ``ΔL[k] = g[k]``,

    and ``u[k] = Σ_{j<=k} β^(k-j) c[j]``, ``δ[k] = ΔL[k] clamp((ϑ - u[k])^-3, ±5)``."""
    beta, theta, T = 0.8, 1.0, 8
    p = P(beta=beta, theta=theta, tau_s=tau_s, error=error, reset=reset)
    gen = np.random.default_rng(3)
    c = gen.uniform(0.0, 0.19, size=(T, 2, 3))  # u <= 0.19 / 0.2 < ϑ
    g = gen.standard_normal((T, 2, 3))
    u = np.stack([sum(beta ** (k - j) * c[j] for j in range(k + 1)) for k in range(T)])
    assert u.max() < theta
    ls = 0.0 if tau_s is None else 1 - 1 / tau_s
    gain = 1.0 if tau_s is None else 1 / tau_s
    d_l = np.zeros_like(g)
    for k in range(T):
        for j in range(k, T):
            mult = (j - k + 1) if (error == "accumulated" and tau_s is not None) else 1
            d_l[k] += gain * mult * ls ** (j - k) * g[j]
    w = np.clip((theta - u) ** -3.0, -5, 5)
    expected = torch.from_numpy(d_l * w)

    cfg = cfg_of(p, impl)
    ct, gt = torch.from_numpy(c), torch.from_numpy(g)
    s, u_na, a = na.forward(ct, cfg)
    assert s.sum() == 0 and a.abs().sum() == 0
    torch.testing.assert_close(u_na, torch.from_numpy(u), **TIGHT)
    torch.testing.assert_close(na.backward(ct, u_na, s, a, gt, cfg), expected, **TIGHT)
    assert (torch.from_numpy(w) == 5).any() and (torch.from_numpy(w) < 5).any()


@pytest.mark.parametrize("distance, power", [("inverse_cube", 3), ("inverse", 1)])
@pytest.mark.parametrize("clamp", [0.5, 5.0, 100.0])
def test_clamp_respected(distance, power, clamp, impl):
    theta = 1.0
    cfg = na.NA(threshold=theta, distance=distance, clamp=clamp, tau_s=2.0, **impl)
    gaps = torch.cat([torch.logspace(-8, 0.5, 60, dtype=F64), -torch.logspace(-8, 0.5, 60,
                                                                               dtype=F64)])
    u = theta - gaps
    w = na.distance_weight(u, cfg)
    assert (w.abs() <= clamp).all()
    raw = gaps ** (-power)
    inside = raw.abs() < clamp
    assert inside.any() and (~inside).any()
    torch.testing.assert_close(w[inside], raw[inside], **TIGHT)
    assert torch.equal(w[~inside], clamp * torch.sign(raw[~inside]))
    assert (w[gaps > 0] > 0).all() and (w[gaps < 0] < 0).all()
    # the backward applies it: |δ| <= clamp |ΔL| with equality where the weight saturates
    c, g = currents((7, 3, 4), 31, mean=0.6, std=0.9), randn((7, 3, 4), 32)
    s, u, a = na.forward(c, cfg)
    delta = na.backward(c, u, s, a, g, cfg)
    d_l = na.loss_change(c, s, a, na.errors(g, cfg), cfg)
    assert (delta.abs() <= clamp * d_l.abs() * (1 + 1e-12)).all()
    torch.testing.assert_close(delta, d_l * na.distance_weight(u, cfg), **TIGHT)


# =================================================================================================
# 4. The least-squares form of the poster
# =================================================================================================
def test_least_squares_with_one_hot_directions_is_the_rule():
    """``O = diag(sign(ϑ - u[k]))`` and ``f_k = ΔL[k] / |ϑ - u[k]|`` give ``ΔL[k] / (ϑ - u[k])``:
    the paper's rule (``distance="inverse"``; no clamp in this form)."""
    p = P(tau_s=2.0, distance="inverse", clamp=1e12)
    T = 7
    c, g = currents((T, 3, 4), 41), randn((T, 3, 4), 42)
    cfg = cfg_of(p)
    s, u, a = na.forward(c, cfg)
    gap = p.theta - u
    assert gap.abs().min() > 1e-6
    cols = zip(_columns(c), _columns(g), strict=True)
    d_l = _from_columns([ref_loss_changes(cc, gg, p) for cc, gg in cols],
                        c)
    # neurons as a batch of T x T systems
    gap_n = gap.reshape(T, -1).T  # [n, T]
    directions = torch.diag_embed(torch.sign(gap_n))  # [n, M = T, T]
    f = d_l.reshape(T, -1).T / gap_n.abs()  # [n, M]
    grad = na.least_squares(directions, f)  # [n, T]
    expected = na.backward(c, u, s, a, g, cfg).reshape(T, -1).T
    torch.testing.assert_close(grad, expected, **TIGHT)
    torch.testing.assert_close(grad, (d_l / gap).reshape(T, -1).T, **TIGHT)


def test_least_squares_overdetermined_equals_numpy_lstsq():
    gen = np.random.default_rng(5)
    dirs = gen.standard_normal((3, 2, 11, 4))  # [..., M = 11, T = 4]
    f = gen.standard_normal((3, 2, 11))
    out = na.least_squares(torch.from_numpy(dirs), torch.from_numpy(f))
    assert out.shape == (3, 2, 4)
    for i in range(3):
        for j in range(2):
            ref, *_ = np.linalg.lstsq(dirs[i, j], f[i, j], rcond=None)
            np.testing.assert_allclose(out[i, j].numpy(), ref, rtol=1e-10, atol=1e-12)
    # it really is a least-squares solution, not an exact one
    resid = torch.from_numpy(dirs) @ out.unsqueeze(-1) - torch.from_numpy(f).unsqueeze(-1)
    assert resid.abs().max() > 1e-3


def test_least_squares_validates():
    with pytest.raises(ValueError, match="finite_differences"):
        na.least_squares(torch.zeros(5, 3, dtype=F64), torch.zeros(4, dtype=F64))
    with pytest.raises(TypeError, match="directions"):
        na.least_squares(torch.zeros(5, 3, dtype=torch.int64), torch.zeros(5, dtype=F64))
    with pytest.raises(TypeError, match="finite_differences"):
        na.least_squares(torch.zeros(5, 3, dtype=F64), torch.zeros(5, dtype=torch.int32))


# =================================================================================================
# 5. Validation
# =================================================================================================
@pytest.mark.parametrize("kwargs, name", [
    (dict(distance="cube"), "distance"),
    (dict(distance="Inverse"), "distance"),
    (dict(error="global"), "error"),
    (dict(reset="soft"), "reset"),
    (dict(reset="none"), "reset"),
    (dict(threshold=0.0), "threshold"),
    (dict(threshold=-1.0), "threshold"),
    (dict(clamp=0.0), "clamp"),
    (dict(clamp=-5.0), "clamp"),
    (dict(tau_s=0.5), "tau_s"),
    (dict(tau_s=0.0), "tau_s"),
    (dict(beta=-0.1), "beta"),
    (dict(beta=1.01), "beta"),
    (dict(beta=float("nan")), "beta"),
    (dict(threshold=float("inf")), "threshold"),
])
def test_config_validation_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        na.NA(**kwargs)


def test_config_accepts_the_boundaries():
    for kwargs in (dict(beta=0.0), dict(beta=1.0), dict(tau_s=1.0), dict(clamp=1e-9),
                   dict(threshold=1e-9)):
        na.NA(**kwargs)
    with pytest.raises(TypeError, match="beta"):
        na.NA(beta="0.8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        na.NA().beta = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_inputs_raise_type_error(dtype):
    cfg = na.NA(tau_s=2.0)
    x = torch.ones(4, 2, 3, dtype=dtype)
    with pytest.raises(TypeError, match="floating-point"):
        na.forward(x, cfg)
    with pytest.raises(TypeError, match="floating-point"):
        na.NAFunction.apply(x, cfg, None)


@pytest.mark.parametrize("which", ["backward-g", "backward-c", "errors"])
def test_integer_inputs_to_the_backward_raise_type_error(which):
    """API.md: integer inputs raise ``TypeError``. Without the check an integer ``g`` is
    silently truncated: ``na.errors(tensor([[1], [1], [1]]), NA(tau_s=2.0))`` returns ones
    instead of ``[1.75, 1.5, 1]``."""
    cfg = na.NA(tau_s=2.0)
    c = currents((3, 2, 1), 1)
    s, u, a = na.forward(c, cfg)
    g_int = torch.ones(3, 2, 1, dtype=torch.int64)
    with pytest.raises(TypeError):
        if which == "backward-g":
            na.backward(c, u, s, a, g_int, cfg)
        elif which == "backward-c":
            na.backward(c.long(), u, s, a, torch.ones_like(c), cfg)
        else:
            na.errors(g_int, cfg)


# =================================================================================================
# 6. NAFunction
# =================================================================================================
@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
def test_nafunction_adds_the_gradient_at_u_unchanged(tau_s, impl):
    """``∂u[t]/∂c[t] = 1`` and nothing propagates through time: ``∂L/∂c = δ(g_a) + g_u``."""
    p = P(tau_s=tau_s)
    cfg = cfg_of(p, impl)
    c = currents((9, 3, 4), 51).requires_grad_(True)
    out, u = na.NAFunction.apply(c, cfg, None)
    s_r, u_r, a_r = ref_forward(c, p)
    torch.testing.assert_close(out, a_r, **TIGHT)
    torch.testing.assert_close(u, u_r, **TIGHT)
    if tau_s is None:
        assert torch.equal(out, s_r)
    g_a, g_u = randn(c.shape, 52), randn(c.shape, 53)
    (d,) = torch.autograd.grad((out * g_a).sum() + (u * g_u).sum(), c, retain_graph=True)
    torch.testing.assert_close(d, ref_delta(c, g_a, p) + g_u, **TIGHT)
    (d_u,) = torch.autograd.grad((u * g_u).sum(), c, retain_graph=True)
    assert torch.equal(d_u, g_u)
    (d_a,) = torch.autograd.grad((out * g_a).sum(), c)
    torch.testing.assert_close(d_a, ref_delta(c, g_a, p), **TIGHT)


def test_nafunction_last_step_gradient_only():
    """A loss on ``u[T-1]`` alone reaches ``c[T-1]`` only."""
    c = currents((6, 2, 3), 54).requires_grad_(True)
    _, u = na.NAFunction.apply(c, na.NA(tau_s=2.0), None)
    (d,) = torch.autograd.grad(u[-1].sum(), c)
    assert torch.equal(d[-1], torch.ones_like(d[-1])) and d[:-1].abs().sum() == 0
