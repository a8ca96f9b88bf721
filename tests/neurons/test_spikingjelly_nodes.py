"""spikegrad's spikingjelly nodes against the host and independent references, on both lines.

Runs on spikingjelly 2.x and 0.0.0.0.14 (``PYTHONPATH=/tmp/sj014 pytest ...``); nothing here
imports a name that exists on one line only. For every node, over its configurations:

* ``step_mode="s"`` and ``"m"`` give identical outputs, ``v``, ``v_seq`` and input gradients;
* golden values: ``ResetTermLIFNode`` equals the host's own ``LIFNode`` with the paper's sigmoid
  (spikes, ``v`` and gradients), HTDGLIF and multi-strength give RULES.md §4/§6's numbers, NA's
  gradients equal the independent reference of ``tests/rules/test_na.py``; the spike conventions
  at ``u == θ`` (host ``>=`` for the reset-term node, strict ``>`` for NA);
* host idioms: ``v`` is the post-reset state, ``functional.reset_net`` resets everything,
  eval == train (and the 0.0.0.0.14 eval-mode jit trap of the host, asserted on that line),
  persistence, containers, batch-size changes, dtypes, refused arguments;
* NA: flat memory over hundreds of per-step training steps, the rescale;
* each node in spikingjelly's Fashion-MNIST CSNN (small) trains for a few SGD steps.

Gradients are compared with random upstream gradients (never only ``.sum()``), in float64.
"""

from __future__ import annotations

import copy
import gc
import io
import math

import pytest

pytest.importorskip("spikingjelly")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402
from torch import nn  # noqa: E402

from spikegrad.adapters.spikingjelly import IS_SJ2  # noqa: E402
from spikegrad.neurons import (  # noqa: E402
    HTDGLIFNode,
    MultiStrengthIFNode,
    NALIFNode,
    ResetTermLIFNode,
)
from spikegrad.rules import (
    dispatch,  # noqa: E402
    na,  # noqa: E402
)
from tests.rules.test_na import P, ref_delta  # noqa: E402

F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}
T, B, N = 7, 3, 5
LINE = "2.x" if IS_SJ2 else "0.0.0.0.14"


# --- helpers ------------------------------------------------------------------------------------
def currents(shape=(T, B, N), seed=0, mean=0.45, std=0.7, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * std + mean).to(dtype).requires_grad_(True)


def randn_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(x.shape, generator=g, dtype=F64).to(x.dtype)


def drive(node: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``x`` (``[T, B, *]``) through ``node`` in its step mode.

    Returns the stacked outputs and the per-step ``v`` (in ``"m"`` mode: ``v_seq``, which needs
    ``store_v_seq=True``; in ``"s"`` mode: ``node.v`` read after each step).
    """
    if node.step_mode == "m":
        return node(x), getattr(node, "v_seq", None)
    outs, vs = [], []
    for t in range(x.shape[0]):
        outs.append(node(x[t]))
        vs.append(node.v)
    return torch.stack(outs), torch.stack(vs)


def input_grad(x, outs, g_out, vs=None, g_v=None):
    loss = (outs * g_out).sum()
    if vs is not None and vs.requires_grad:
        loss = loss + (vs * g_v).sum()
    (g,) = torch.autograd.grad(loss, x)
    return g


def assert_meaningful(out: torch.Tensor) -> None:
    rate = (out > 0).double().mean().item()
    assert 0.05 < rate < 0.9, f"firing rate {rate:.3f}: inputs do not exercise the node"


def make(cls, kw, **extra):
    return cls(**{**kw, **extra})


# --- configurations (API.md) --------------------------------------------------------------------
RESET_TERM = [
    pytest.param(dict(tau=3.0, detach_reset=dr, v_reset=vr, decay_input=di, tau_s=ts),
                 id=f"detach{int(dr)}-vreset{vr}-decay{int(di)}-taus{ts}")
    for dr in (False, True) for vr in (0.0, None) for di in (False, True) for ts in (None, 2.0)
]
NA_CONFIGS = [
    pytest.param(dict(tau=5.0, tau_s=ts, distance=d, v_reset=vr),
                 id=f"taus{ts}-{d}-vreset{vr}")
    for ts in (None, 2.0) for d in ("inverse_cube", "inverse") for vr in (0.0, None)
] + [pytest.param(dict(tau=4.0, tau_s=2.0, decay_input=True, error="local"),
                  id="decay_input-local")]
HTDGLIF = [
    pytest.param(dict(), id="paper"),
    pytest.param(dict(decay=0.7, alpha=0.5), id="paper-decay0.7"),
    pytest.param(dict(mode="braincog"), id="braincog"),
    pytest.param(dict(mode="braincog", dt=0.5), id="braincog-dt0.5"),
    pytest.param(dict(warm_up=True), id="paper-warm_up"),
    pytest.param(dict(mode="braincog", warm_up=True), id="braincog-warm_up"),
]
MULTI = [
    pytest.param(dict(max_strength=ms, detach_reset=dr), id=f"cap{ms}-detach{int(dr)}")
    for ms in (None, 2) for dr in (True, False)
]
ALL = ([pytest.param(ResetTermLIFNode, *p.values, id="ResetTerm-" + p.id) for p in RESET_TERM]
       + [pytest.param(NALIFNode, *p.values, id="NA-" + p.id) for p in NA_CONFIGS]
       + [pytest.param(HTDGLIFNode, *p.values, id="HTDGLIF-" + p.id) for p in HTDGLIF]
       + [pytest.param(MultiStrengthIFNode, *p.values, id="Multi-" + p.id) for p in MULTI])
DEFAULTS = [pytest.param(c, id=c.__name__)
            for c in (ResetTermLIFNode, NALIFNode, HTDGLIFNode, MultiStrengthIFNode)]


def scale_for(cls, kw) -> float:
    """Input mean that makes the node fire at a moderate rate."""
    if kw.get("decay_input"):
        return 0.45 * kw["tau"]
    if cls is MultiStrengthIFNode:
        return 0.8
    return 0.45


def x_for(cls, kw, seed=0, shape=(T, B, N), dtype=F64):
    mean = scale_for(cls, kw)
    return currents(shape, seed=seed, mean=mean, std=max(0.7, mean), dtype=dtype)


# =================================================================================================
# 1. "s" and "m" step modes agree (outputs, v, v_seq, input gradients)
# =================================================================================================
@pytest.mark.parametrize("cls, kw", ALL)
def test_single_and_multi_step_agree(cls, kw):
    x = x_for(cls, kw, seed=1)
    ns = make(cls, kw, step_mode="s", store_v_seq=True)
    nm = make(cls, kw, step_mode="m", store_v_seq=True)
    out_s, v_s = drive(ns, x)
    out_m, v_m = drive(nm, x)
    assert_meaningful(out_m)
    assert torch.equal(out_s, out_m)
    torch.testing.assert_close(v_s, v_m, **TIGHT)
    torch.testing.assert_close(ns.v, nm.v, **TIGHT)
    torch.testing.assert_close(nm.v, v_m[-1], **TIGHT)
    if IS_SJ2:  # 2.x records v_seq in single-step mode too (the host's behaviour)
        torch.testing.assert_close(ns.v_seq, v_m, **TIGHT)
    else:  # 0.0.0.0.14 records it in multi-step mode only (the host's behaviour)
        assert ns.v_seq is None
    g_out, g_v = randn_like(out_m, 2), randn_like(v_m, 3)
    grad_s = input_grad(x, out_s, g_out, v_s, g_v)
    grad_m = input_grad(x, out_m, g_out, v_m, g_v)
    assert grad_m.abs().sum() > 0
    torch.testing.assert_close(grad_s, grad_m, **TIGHT)


@pytest.mark.parametrize("cls, kw", ALL)
def test_host_store_v_seq_convention(cls, kw):
    """Our nodes record ``v_seq`` exactly where the host's own ``LIFNode`` does."""
    x = x_for(cls, kw, seed=4).detach()
    for mode in ("s", "m"):
        ours = make(cls, kw, step_mode=mode, store_v_seq=True)
        host = neuron.LIFNode(tau=2.0, step_mode=mode, store_v_seq=True)
        drive(ours, x)
        drive(host, x)
        assert (ours.v_seq is None) == (host.v_seq is None), (mode, LINE)
        if host.v_seq is not None:
            assert ours.v_seq.shape == host.v_seq.shape == x.shape


# =================================================================================================
# 2. Golden values
# =================================================================================================
def host_lif(kw, mode):
    """The host's own LIFNode with the same math as ResetTermLIFNode(**kw) (both fire at >=)."""
    return neuron.LIFNode(tau=kw["tau"], decay_input=kw["decay_input"], v_reset=kw["v_reset"],
                          surrogate_function=sj_surrogate.Sigmoid(alpha=1 / 0.3),
                          detach_reset=kw["detach_reset"], step_mode=mode, store_v_seq=True)


def trace_of(s: torch.Tensor, tau_s: float) -> torch.Tensor:
    """``a[t] = (1 - 1/τs) a[t-1] + s[t]/τs``, written out here (no spikegrad code)."""
    a, out = torch.zeros_like(s[0]), []
    for t in range(s.shape[0]):
        a = (1 - 1 / tau_s) * a + s[t] / tau_s
        out.append(a)
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("kw", RESET_TERM)
def test_reset_term_equals_host_lif_node(kw, mode):
    x = x_for(ResetTermLIFNode, kw, seed=5)
    ours = ResetTermLIFNode(**kw, step_mode=mode, store_v_seq=True)
    host = host_lif(kw, mode)
    out, v = drive(ours, x)
    spk_h, v_h = drive(host, x)
    assert_meaningful(spk_h)
    out_h = spk_h if kw["tau_s"] is None else trace_of(spk_h, kw["tau_s"])
    if kw["tau_s"] is None:
        assert torch.equal(out, out_h)
    torch.testing.assert_close(out, out_h, **TIGHT)
    torch.testing.assert_close(v, v_h, **TIGHT)
    g_out, g_v = randn_like(out, 6), randn_like(v, 7)
    torch.testing.assert_close(input_grad(x, out, g_out, v, g_v),
                               input_grad(x, out_h, g_out, v_h, g_v), rtol=1e-10, atol=1e-10)


def test_reset_term_differs_from_host_when_detach_differs():
    """The golden comparison can fail: detach_reset is not a no-op on the gradients."""
    kw = dict(tau=3.0, decay_input=False, v_reset=0.0, detach_reset=False)
    x = x_for(ResetTermLIFNode, kw, seed=5)
    out, _ = drive(ResetTermLIFNode(**kw), x)
    spk_h, _ = drive(host_lif({**kw, "detach_reset": True}, "s"), x)
    assert torch.equal(out, spk_h)
    g = randn_like(out, 6)
    assert (input_grad(x, out, g) - input_grad(x, spk_h, g)).abs().max() > 1e-3


def test_reset_term_spikes_at_threshold_exactly():
    """Host convention ``u >= θ``: u == θ spikes (the snntorch twin does not, see
    tests/test_cross_framework.py)."""
    node = ResetTermLIFNode(tau=2.0)
    spk = node(torch.tensor([1.0, 0.999999, 1.0 + 1e-7], dtype=F64))
    assert spk.tolist() == [1.0, 0.0, 1.0]
    assert node.v.tolist() == [0.0, 0.999999, 0.0]


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("kw", NA_CONFIGS)
def test_na_gradients_equal_independent_reference(kw, mode):
    node = NALIFNode(**kw, step_mode=mode, store_v_seq=True)
    x = x_for(NALIFNode, kw, seed=8)
    out, v = drive(node, x)
    r = node.rule
    p = P(beta=r.beta, theta=r.threshold, tau_s=r.tau_s, distance=r.distance, clamp=r.clamp,
          error=r.error, reset=r.reset)
    assert p.reset == ("subtract" if kw.get("v_reset", 0.0) is None else "zero")
    scale = 1 / kw["tau"] if kw.get("decay_input") else 1.0
    assert_meaningful(out)
    assert not v.requires_grad  # NA defines no gradient through the state
    g = randn_like(out, 9)
    expected = ref_delta(x.detach() * scale, g, p) * scale
    torch.testing.assert_close(input_grad(x, out, g), expected, **TIGHT)


@pytest.mark.parametrize("mode", ["s", "m"])
def test_na_strict_threshold_and_finite_weight_at_u_equal_theta(mode):
    """NA fires at ``u > θ`` (the authors'), unlike the host: u == θ exactly does not spike,
    and the distance weight there is finite."""
    node = NALIFNode(tau=5.0, step_mode=mode, store_v_seq=True)
    x = torch.tensor([[1.0, 1.5], [0.0, 0.0], [1.0, 0.2]], dtype=F64)[:, None, :]
    x.requires_grad_(True)
    out, v = drive(node, x)
    # step 0: u = 1.0 (no spike, no reset: v = 1.0), step 1: u = 0.8, step 2: u = 1.64 (spike)
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert v[:, 0, 0].tolist() == [1.0, 0.8, 0.0]
    assert out[:, 0, 1].tolist() == [1.0, 0.0, 0.0]
    host = neuron.IFNode(v_threshold=1.0, step_mode="s")
    assert host(torch.tensor([1.0], dtype=F64)).item() == 1.0  # the host's `>=`
    g = randn_like(out, 10)
    grad = input_grad(x, out, g)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, ref_delta(x.detach(), g, P(tau_s=None)), **TIGHT)


def test_htdglif_paper_golden_values():
    node = HTDGLIFNode()
    x = torch.tensor([0.2, 0.5, 0.8, 1.6, 2.5], dtype=F64, requires_grad=True)
    o = node(x)
    assert o.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    (do,) = torch.autograd.grad(o.sum(), x, retain_graph=True)
    torch.testing.assert_close(do, torch.tensor([0, 2, 1.25, 0.625, 0.4], dtype=F64), **TIGHT)
    (dv,) = torch.autograd.grad((0.9 * node.v).sum(), x)
    torch.testing.assert_close(dv, torch.tensor([0.9, 0.36, 0.225, 0.1125, 0.072], dtype=F64),
                               **TIGHT)


@pytest.mark.parametrize("dt", [None, 0.5])
def test_htdglif_braincog_golden_values(dt):
    node = HTDGLIFNode(mode="braincog", dt=dt)
    x = torch.tensor([-1, 0.2, 0.5, 0.7, 1.3, 2.5], dtype=F64, requires_grad=True)
    o = node(x)
    if dt is None:  # RULES.md §4
        out, do, dv = ([0, 0, 0.5, 0.7, 1.3, 2.5], [0, 0, 1, 1, 1, 1], [0, 1, .2, .2, .2, .2])
    else:  # h = 0.5 relu(x) = [0, .1, .25, .35, .65, 1.25]; dv/dx = dt * dt * [(1-H) + αH]
        out, do = [0, 0, 0, 0, 0.65, 1.25], [0, 0, 0, 0, 0.5, 0.5]
        dv = [0, 0.25, 0.25, 0.25, 0.05, 0.05]
    torch.testing.assert_close(o, torch.tensor(out, dtype=F64), **TIGHT)
    (g_o,) = torch.autograd.grad(o.sum(), x, retain_graph=True)
    (g_v,) = torch.autograd.grad(node.v.sum(), x)
    torch.testing.assert_close(g_o, torch.tensor(do, dtype=F64), **TIGHT)
    torch.testing.assert_close(g_v, torch.tensor(dv, dtype=F64), **TIGHT)


@pytest.mark.parametrize("mode", ["paper", "braincog"])
def test_htdglif_warm_up_returns_relu_and_keeps_state(mode):
    node = HTDGLIFNode(mode=mode)
    node(torch.tensor([0.3, 0.8], dtype=F64))
    v_before = node.v.clone()
    warm = HTDGLIFNode(mode=mode, warm_up=True)
    warm.v = v_before.clone()
    x = torch.tensor([-0.5, 0.7], dtype=F64)
    assert warm(x).tolist() == [0.0, 0.7]
    assert torch.equal(warm.v, v_before)


@pytest.mark.parametrize("mode", ["s", "m"])
def test_multistrength_rules_example(mode):
    node = MultiStrengthIFNode(v_threshold=1.0, step_mode=mode)
    z = torch.tensor([2.5], dtype=F64)
    out = node(z if mode == "s" else z[None])
    assert out.flatten().tolist() == [2.0]
    assert node.v.flatten().tolist() == [0.5]


def test_multistrength_cap_keeps_excess_and_conserves_charge():
    node = MultiStrengthIFNode(v_threshold=0.5, max_strength=2, step_mode="m")
    z = torch.tensor([1.8, 0.1, -0.4, 0.6], dtype=F64)[:, None]
    theta = node(z)
    assert theta.flatten().tolist() == [2.0, 1.0, 0.0, 1.0]  # 1.8 -> capped 2, 0.8 left
    torch.testing.assert_close(0.5 * theta.sum() + node.v.sum(), z.sum(), **TIGHT)


# =================================================================================================
# 3. State: v is post-reset, reset_net resets everything, eval == train
# =================================================================================================
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_v_after_a_step_is_the_post_reset_state(v_reset):
    node = ResetTermLIFNode(tau=2.0, v_reset=v_reset)
    node(torch.tensor([0.4, 1.5], dtype=F64))
    expected = [0.4, 0.0] if v_reset == 0.0 else [0.4, 0.5]
    torch.testing.assert_close(node.v, torch.tensor(expected, dtype=F64), **TIGHT)
    na_node = NALIFNode(tau=5.0, v_reset=v_reset)
    na_node(torch.tensor([0.4, 1.5], dtype=F64))
    torch.testing.assert_close(na_node.v, torch.tensor(expected, dtype=F64), **TIGHT)
    ht = HTDGLIFNode()
    ht(torch.tensor([0.4, 1.5], dtype=F64))
    assert ht.v.tolist() == [0.4, 0.0]


def _state_values(node):
    names = ("v", *type(node)._extra_states)
    return {n: getattr(node, n) for n in names}


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("cls, kw", ALL)
def test_reset_net_resets_everything_and_is_idempotent(cls, kw, mode):
    net = nn.Sequential(nn.Identity(), nn.Sequential(make(cls, kw, step_mode=mode)))
    node = net[1][0]
    x = x_for(cls, kw, seed=11)

    def run():
        out, _ = drive(node, x) if mode == "s" else (node(x), None)
        g = input_grad(x, out, randn_like(out, 12))
        return out, g

    out1, g1 = run()
    assert any(isinstance(v, torch.Tensor) for v in _state_values(node).values())
    functional.reset_net(net)
    v_init = 0.0 if node.v_reset is None else node.v_reset
    for name, value in _state_values(node).items():
        assert not isinstance(value, torch.Tensor), name
        assert value == (v_init if name == "v" else 0.0), name
    if cls is NALIFNode:
        assert node._window is None
    out2, g2 = run()
    functional.reset_net(net)
    functional.reset_net(net)  # twice == once
    out3, g3 = run()
    for out, g in ((out2, g2), (out3, g3)):
        assert torch.equal(out, out1)
        torch.testing.assert_close(g, g1, **TIGHT)


def test_reset_starts_a_new_na_window_in_single_step_mode():
    node = NALIFNode(tau=5.0, tau_s=2.0)
    x = x_for(NALIFNode, {}, seed=13)
    for t in range(T):
        node(x[t])
    assert len(node._window) == T
    functional.reset_net(node)
    out, _ = drive(node, x)
    assert len(node._window) == T
    g = randn_like(out, 14)
    p = P(beta=0.8, tau_s=2.0)
    torch.testing.assert_close(input_grad(x, out, g), ref_delta(x.detach(), g, p), **TIGHT)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("cls, kw", ALL)
def test_eval_equals_train(cls, kw, mode):
    x = x_for(cls, kw, seed=15).detach()
    node = make(cls, kw, step_mode=mode, store_v_seq=True)
    out_train, v_train = drive(node, x)
    functional.reset_net(node)
    node.eval()
    with torch.no_grad():
        out_eval, v_eval = drive(node, x)
    assert torch.equal(out_train.detach(), out_eval)
    torch.testing.assert_close(v_train.detach(), v_eval, **TIGHT)


class _DoubledInputLIF(neuron.LIFNode):
    """A user's subclass that overrides the host's charge: twice the input."""

    def neuronal_charge(self, x):
        super().neuronal_charge(2.0 * x)


@pytest.mark.skipif(IS_SJ2, reason="spikingjelly 2.x has no eval-mode jit path for LIFNode: "
                    "the trap exists on 0.0.0.0.14 only")
@pytest.mark.parametrize("mode", ["s", "m"])
def test_host_trap_0014_eval_jit_ignores_subclass_overrides(mode):
    """Host trap (0.0.0.0.14): LIFNode's eval mode runs a jit kernel that skips an overridden
    ``neuronal_charge``. spikegrad's nodes subclass BaseNode and own both paths (above)."""
    x = torch.full((T, B, N), 0.7)  # plain: v -> 0.7, silent; doubled: v -> 1.4, fires

    def spikes(node):
        functional.reset_net(node)
        return drive(node, x)[0]

    doubled, plain = _DoubledInputLIF(step_mode=mode), neuron.LIFNode(step_mode=mode)
    assert not torch.equal(spikes(doubled), spikes(plain))  # train: the override runs
    doubled.eval()
    plain.eval()
    assert torch.equal(spikes(doubled), spikes(plain))  # eval: silently ignored


# =================================================================================================
# 4. Persistence, containers, shapes and dtypes
# =================================================================================================
def _model(cls, seed=0, mode="s", dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(layer.Linear(N, N, step_mode=mode), cls(step_mode=mode)).to(dtype)


def _model_out(model, x):
    functional.reset_net(model)
    if model[1].step_mode == "m":
        return model(x)
    return torch.stack([model(x[t]) for t in range(x.shape[0])])


@pytest.mark.parametrize("cls", DEFAULTS)
def test_state_dict_round_trip(cls):
    x = torch.rand(T, B, N) * 1.5
    a, b = _model(cls, seed=1), _model(cls, seed=2)
    assert not torch.equal(_model_out(a, x), _model_out(b, x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(_model_out(a, x), _model_out(b, x))


@pytest.mark.parametrize("cls", DEFAULTS)
def test_whole_model_torch_save_load(cls):
    model = _model(cls, seed=3)
    x = torch.rand(T, B, N) * 1.5
    expected = _model_out(model, x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded[1]) is cls
    assert loaded[1].surrogate_function == model[1].surrogate_function
    assert torch.equal(_model_out(loaded, x), expected)


@pytest.mark.parametrize("cls", DEFAULTS)
def test_deepcopy(cls):
    node = cls()
    x = torch.rand(T, B, N, dtype=F64) * 1.5
    with torch.no_grad():
        for t in range(3):
            node(x[t])
        twin = copy.deepcopy(node)
        assert torch.equal(twin.v, node.v) and twin.v is not node.v
        for t in range(3, T):
            assert torch.equal(twin(x[t]), node(x[t]))
    fresh = copy.deepcopy(cls())
    functional.reset_net(node)
    assert torch.equal(drive(fresh, x)[0], drive(node, x)[0])


@pytest.mark.parametrize("cls", DEFAULTS)
def test_layer_containers_in_multi_step_mode(cls):
    single = nn.Sequential(layer.Linear(N, 6), cls(), layer.Linear(6, 4), cls()).to(F64)
    multi = copy.deepcopy(single)
    functional.set_step_mode(multi, "m")
    assert all(getattr(m, "step_mode", "m") == "m" for m in multi)
    x = torch.rand(T, B, N, dtype=F64) * 2
    out_m = multi(x)
    out_s = torch.stack([single(x[t]) for t in range(T)])
    assert torch.equal(out_s, out_m)
    g = randn_like(out_m, 16)
    (out_s * g).sum().backward()
    (out_m * g).sum().backward()
    for p_s, p_m in zip(single.parameters(), multi.parameters(), strict=True):
        torch.testing.assert_close(p_s.grad, p_m.grad, **TIGHT)
    assert single[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("store_v_seq", [False, True])
@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("cls", DEFAULTS)
def test_batch_size_change_restarts_state(cls, mode, store_v_seq):
    """Without a reset, a state of another batch size raises naming both shapes (the host
    fails there too, with a bare size mismatch); from rest any batch size works."""
    node = cls(step_mode=mode, store_v_seq=store_v_seq)
    drive(node, torch.rand(3, 3, N, dtype=F64) * 1.5)
    x = currents((4, 5, N), seed=17, mean=0.8)
    with pytest.raises(ValueError, match=rf"\(3, {N}\).*\(5, {N}\).*reset_net"):
        drive(node, x)
    functional.reset_net(node)
    out, _ = drive(node, x)
    fresh = cls(step_mode=mode)
    expected = drive(fresh, x)[0] if mode == "s" else fresh(x)
    assert torch.equal(out, expected)
    assert node.v.shape == (5, N)
    if store_v_seq and (mode == "m" or IS_SJ2):
        assert node.v_seq.shape == (4, 5, N)  # the new batch's sequence only (as 2.x's host)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("cls", DEFAULTS)
def test_float64_and_float32(cls, mode):
    for dtype in (torch.float32, F64):
        node = cls(step_mode=mode, store_v_seq=True)
        x = currents((T, B, N), seed=18, mean=0.8, dtype=dtype)
        out, v = drive(node, x)
        assert out.dtype == v.dtype == node.v.dtype == dtype
        (g,) = torch.autograd.grad((out * randn_like(out, 19)).sum(), x)
        assert g.dtype == dtype and torch.isfinite(g).all()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("cls", DEFAULTS)
def test_integer_input_raises_type_error(cls, mode, dtype):
    node = cls(step_mode=mode)
    x = torch.ones((T, B, N) if mode == "m" else (B, N), dtype=dtype)
    with pytest.raises(TypeError, match="floating-point"):
        node(x)


# =================================================================================================
# 5. Refused arguments, backends
# =================================================================================================
@pytest.mark.parametrize("cls", [ResetTermLIFNode, NALIFNode])
@pytest.mark.parametrize("tau", [1.0, 0.5, -3.0])
def test_tau_at_most_one_raises(cls, tau):
    with pytest.raises(ValueError, match=r"tau must be > 1"):
        cls(tau=tau)


@pytest.mark.parametrize("cls", [ResetTermLIFNode, NALIFNode])
@pytest.mark.parametrize("tau", ["2.0", None, [2.0]])
def test_tau_not_a_number_raises_with_a_message(cls, tau):
    # a wrong *type* is a TypeError (Python's convention, as everywhere in spikegrad); the
    # host would raise a bare AssertionError (tests/adapters/test_spikingjelly_adapter.py)
    with pytest.raises(TypeError, match=r"tau must be a number"):
        cls(tau=tau)


@pytest.mark.parametrize("cls", DEFAULTS)
def test_v_threshold_string_raises_with_a_message(cls):
    with pytest.raises(TypeError, match=r"v_threshold must be a number"):
        cls(v_threshold="1.0")


@pytest.mark.parametrize("cls", [ResetTermLIFNode, NALIFNode])
@pytest.mark.parametrize("v_reset", [0.5, -1.0])
def test_v_reset_other_than_zero_or_none_raises(cls, v_reset):
    with pytest.raises(ValueError, match=r"v_reset=0\.0 .* or v_reset=None"):
        cls(v_reset=v_reset)


@pytest.mark.parametrize("cls", DEFAULTS)
def test_backends_follow_the_host_contract(cls):
    """("torch", "cupy", "triton") in multi-step mode, ("torch",) in single-step mode (as
    0.0.0.0.14's own nodes, plus Triton); "auto" is accepted on both lines; unknown names
    raise; "triton" needs multi-step mode."""
    node = cls(backend="torch")
    assert node.backend == "torch" and node.supported_backends == ("torch",)
    assert cls(step_mode="m").supported_backends == ("torch", "cupy", "triton")
    for value in ("auto", "torch"):
        node.backend = value
        assert node.backend == value
    assert cls(step_mode="m", backend="auto").backend == "auto"
    with pytest.raises(ValueError, match="backend"):
        node.backend = "lava"
    with pytest.raises(ValueError, match="backend"):
        cls(backend="triton")
    assert "backend=torch" in repr(cls(backend="torch"))


@pytest.mark.parametrize("cls", DEFAULTS)
def test_backend_cupy_in_single_step_mode_raises(cls):
    with pytest.raises(ValueError, match=r"backend='cupy' .*needs step_mode='m'"):
        cls(backend="cupy")
    with pytest.raises(ValueError, match=r"needs step_mode='m'"):
        cls().backend = "cupy"


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(dispatch, "_import_cupy", lambda: ModuleNotFoundError("cupy"))


@pytest.fixture
def cupy_without_gpu(monkeypatch):
    monkeypatch.setattr(dispatch, "_import_cupy", lambda: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def cupy_and_gpu(monkeypatch):
    """CuPy and a CUDA device as far as the dispatcher can tell (nothing is launched)."""
    monkeypatch.setattr(dispatch, "cupy_problem", lambda device=None: None)


@pytest.mark.parametrize("cls", DEFAULTS)
def test_backend_cupy_without_cupy_raises_import_error_naming_the_package(cls, no_cupy,
                                                                          monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, but no CuPy
    hint = r"cupy is not installed \(pip install .spikegrad\[cupy\]. \(cupy-cuda13x"
    with pytest.raises(ImportError, match=hint):
        cls(step_mode="m", backend="cupy")
    node = cls(step_mode="m")
    with pytest.raises(ImportError, match="cupy-cuda13x"):
        node.backend = "cupy"
    assert node.backend == "torch"


@pytest.mark.parametrize("cls", DEFAULTS)
def test_backend_cupy_without_a_cuda_device_raises_runtime_error(cls, cupy_without_gpu):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        cls(step_mode="m", backend="cupy")


@pytest.mark.parametrize("cls", DEFAULTS)
def test_backend_cupy_on_cpu_tensors_raises_naming_the_device(cls, cupy_and_gpu):
    node = cls(step_mode="m", backend="cupy")
    assert node.implementation == "cupy" and node.implementation_reason is None
    with pytest.raises(ValueError, match=r"the input is on cpu: the CuPy kernels run on CUDA"):
        node(torch.rand(T, B, N))


@pytest.mark.parametrize("cls", DEFAULTS)
def test_auto_falls_back_to_torch_and_says_why(cls, no_cupy):
    x = torch.rand(T, B, N, dtype=torch.float32)
    ref = cls(step_mode="m", store_v_seq=True)
    node = cls(step_mode="m", store_v_seq=True, backend="auto")
    assert node.implementation == "torch"
    if torch.cuda.is_available():  # a GPU without CuPy: the package is what is missing
        assert "cupy is not installed (pip install 'spikegrad[cupy]'" in node.implementation_reason
    else:  # no GPU: said once for both kernel families, before any package
        assert node.implementation_reason.startswith("no CUDA device")
        assert node.implementation_reason.count("no CUDA device") == 1
    assert torch.equal(node(x), ref(x)) and torch.equal(node.v_seq, ref.v_seq)
    own = na.choice(ref.rule, "cpu", x.dtype).implementation if cls is NALIFNode else "torch"
    assert ref.implementation == own and ref.implementation_reason is None  # NA: cpp when built
    node.step_mode = "s"
    assert node.implementation == own
    assert node.implementation_reason.startswith("step_mode='s'")


@pytest.mark.parametrize("cls", DEFAULTS)
def test_auto_reports_the_device_and_dtype_of_the_last_call(cls, cupy_and_gpu):
    node = cls(step_mode="m", backend="auto")
    assert node.implementation == "cupy"  # before a call: a CUDA float tensor is assumed
    node(torch.rand(T, B, N))
    own = na.choice(node.rule, "cpu").implementation if cls is NALIFNode else "torch"
    assert node.implementation == own  # NA's own path runs its compiled CPU kernel when built
    assert (node.implementation_reason
            == "the input is on cpu: the Triton and CuPy kernels run on CUDA tensors")
    node.backend = "torch"
    assert node.implementation == own and node.implementation_reason is None


def test_reset_term_host_surrogate_has_no_kernel(cupy_and_gpu):
    node = ResetTermLIFNode(step_mode="m", backend="auto",
                            surrogate_function=sj_surrogate.Sigmoid(alpha=4.0))
    assert node.implementation == "torch"
    assert "has no CUDA expression" in node.implementation_reason
    assert "spikingjelly" in node.implementation_reason  # names the surrogate's module
    with pytest.raises(ValueError, match=r"surrogate spikingjelly.*Sigmoid has no CUDA"):
        ResetTermLIFNode(step_mode="m", backend="cupy",
                         surrogate_function=sj_surrogate.Sigmoid(alpha=4.0))
    ok = ResetTermLIFNode(step_mode="m", backend="cupy")  # spikegrad's default surrogate
    assert ok.implementation == "cupy"


def test_htdglif_warm_up_runs_torch_on_every_backend(cupy_and_gpu):
    node = HTDGLIFNode(step_mode="m", backend="cupy", warm_up=True)
    x = torch.randn(T, B, N)
    assert torch.equal(node(x), torch.relu(x))
    assert node.implementation == "torch" and "warm_up=True" in node.implementation_reason


def test_htdglif_refuses_tau():
    with pytest.raises(ValueError, match="takes no tau"):
        HTDGLIFNode(tau=2.0)


def test_reset_grad_scale_with_detach_reset_raises():
    with pytest.raises(ValueError, match="reset_grad_scale applies to detach_reset=False"):
        ResetTermLIFNode(detach_reset=True, reset_grad_scale=0.3)
    ResetTermLIFNode(detach_reset=True, reset_grad_scale=1.0)  # the default is fine


def test_reset_grad_scale_scales_the_reset_path():
    """``k = 0`` equals detach_reset=True; ``k = 1`` the default (RULES.md §2)."""
    x = x_for(ResetTermLIFNode, {}, seed=20)
    g = None
    grads = {}
    for name, node in (("k0", ResetTermLIFNode(tau=3.0, reset_grad_scale=0.0)),
                       ("detach", ResetTermLIFNode(tau=3.0, detach_reset=True)),
                       ("k1", ResetTermLIFNode(tau=3.0, reset_grad_scale=1.0)),
                       ("full", ResetTermLIFNode(tau=3.0))):
        out, _ = drive(node, x)
        g = randn_like(out, 21) if g is None else g
        grads[name] = input_grad(x, out, g)
    torch.testing.assert_close(grads["k0"], grads["detach"], **TIGHT)
    torch.testing.assert_close(grads["k1"], grads["full"], **TIGHT)
    assert (grads["full"] - grads["detach"]).abs().max() > 1e-3


def test_other_refusals():
    with pytest.raises(ValueError, match="step_mode"):
        ResetTermLIFNode(step_mode="x")
    with pytest.raises(TypeError, match="rescale"):
        NALIFNode(rescale=object())
    with pytest.raises(ValueError, match="dt applies to mode='braincog'"):
        HTDGLIFNode(dt=0.5)
    with pytest.raises(ValueError, match="max_strength"):
        MultiStrengthIFNode(max_strength=0)


# =================================================================================================
# 6. NA: memory and the rescale
# =================================================================================================
def _count_tensors() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_na_memory_flat_over_single_step_training():
    torch.manual_seed(0)
    fc = nn.Linear(8, 6)
    node = NALIFNode(tau=5.0, tau_s=2.0)
    opt = torch.optim.SGD(fc.parameters(), lr=1e-3)
    x = torch.rand(5, 4, 8) * 1.5

    def train(steps):
        for _ in range(steps):
            functional.reset_net(node)
            out = torch.stack([node(fc(x[t])) for t in range(5)])
            loss = (out - 0.3).pow(2).sum()  # keeps the neurons near a target rate
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(100)
    gc.collect()
    tensors, objects = _count_tensors(), len(gc.get_objects())
    train(400)
    gc.collect()
    assert _count_tensors() <= tensors + 2
    assert len(gc.get_objects()) <= objects + 200
    assert fc.weight.grad.abs().sum() > 0


def test_na_rescale_single_step_raises():
    node = NALIFNode(tau_s=2.0, rescale=na.Rescale())
    x = torch.rand(B, N, requires_grad=True)
    with pytest.raises(ValueError, match="rescale needs the whole window: use step_mode='m'"):
        node(x)
    with torch.no_grad():  # inference records no window: fine
        node(x)


def test_na_rescale_multi_step_shared():
    """One network, one shared Rescale: the output layer's δ is scaled by
    ``1.2 ln(round(mean|δ|, 3) / (mean|δ| + 1e-5) + 1.02)`` (RULES.md §3 step 5)."""
    rescale = na.Rescale()
    x = x_for(NALIFNode, {}, seed=22)
    node = NALIFNode(tau_s=2.0, rescale=rescale, step_mode="m")
    out = node(x)
    g = randn_like(out, 23)
    raw = ref_delta(x.detach(), g, P(tau_s=2.0))
    mean = float(raw.abs().mean())
    expected = raw * (1.2 * math.log(round(mean, 3) / (mean + 1e-5) + 1.02))
    torch.testing.assert_close(input_grad(x, out, g), expected.to(F64), rtol=1e-9, atol=1e-12)
    assert rescale.ref is not None

    # two layers share it: the hidden layer is rescaled relative to the output layer
    torch.manual_seed(1)
    net = nn.Sequential(layer.Linear(N, 6), NALIFNode(tau_s=2.0, rescale=rescale),
                        layer.Linear(6, 3), NALIFNode(tau_s=2.0, rescale=rescale)).to(F64)
    functional.set_step_mode(net, "m")
    out = net(x.detach() * 3)
    (out * randn_like(out, 24)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert net[0].weight.grad.abs().sum() > 0


# =================================================================================================
# 7. Spikingjelly's Fashion-MNIST CSNN (examples/conv_fashion_mnist.py), small, each node
# =================================================================================================
def csnn(make_node, channels=8) -> nn.Module:
    c = channels
    net = nn.Sequential(
        layer.Conv2d(1, c, kernel_size=3, padding=1, bias=False), layer.BatchNorm2d(c),
        make_node(), layer.MaxPool2d(2, 2),
        layer.Conv2d(c, c, kernel_size=3, padding=1, bias=False), layer.BatchNorm2d(c),
        make_node(), layer.MaxPool2d(2, 2),
        layer.Flatten(),
        layer.Linear(c * 7 * 7, c * 4 * 4, bias=False), make_node(),
        layer.Linear(c * 4 * 4, 10, bias=False), make_node(),
    )
    functional.set_step_mode(net, "m")
    return net


@pytest.mark.parametrize("cls", DEFAULTS)
def test_node_trains_in_the_csnn(cls):
    torch.manual_seed(0)
    net = csnn(cls)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    img = torch.rand(4, 1, 28, 28)
    label = torch.randint(0, 10, (4,))
    target = F.one_hot(label, 10).float()
    x_seq = img.unsqueeze(0).repeat(4, 1, 1, 1, 1)  # T = 4, direct input as in the example
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(3):
        out = net(x_seq).mean(0)  # firing rate over T
        loss = F.mse_loss(out, target)
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        for name, p in net.named_parameters():
            assert torch.isfinite(p.grad).all(), name
            if p.dim() > 1:  # every conv / linear weight gets a non-zero gradient
                assert p.grad.abs().sum() > 0, name
        opt.step()
        functional.reset_net(net)
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))


# --- NALIFNode in step mode "s": the window follows values; state shapes -------------------------
@pytest.mark.parametrize("tau_s", [None, 2.0], ids=["spikes", "trace"])
@pytest.mark.parametrize("how", ["clone", "times_one", "detach_net"])
def test_na_single_step_window_by_value(how, tau_s):
    """Touching the node's state between steps with an identity keeps one window (the gradient
    of step mode "m"); ``functional.detach_net`` starts a new one (truncated BPTT)."""
    x = currents((8, B, N), seed=60)
    g = randn_like(x, 61)
    whole = NALIFNode(tau=5.0, tau_s=tau_s, step_mode="m")
    (want,) = torch.autograd.grad((whole(x) * g).sum(), x)
    node = NALIFNode(tau=5.0, tau_s=tau_s)
    outs = []
    for t in range(x.shape[0]):
        outs.append(node(x[t]))
        if how == "clone":
            node.u = node.u.clone()
        elif how == "times_one":
            node.u = node.u * 1.0
        elif t == 3:
            functional.detach_net(node)
    (got,) = torch.autograd.grad((torch.stack(outs) * g).sum(), x)
    if how == "detach_net":
        p = P(beta=0.8, tau_s=tau_s)
        first = ref_delta(x[:4], g[:4], p)
        torch.testing.assert_close(got[:4], first, **TIGHT)
        assert (got - want).abs().max() > 1e-3
    else:
        assert torch.equal(got, want)


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("cls", [ResetTermLIFNode, NALIFNode, HTDGLIFNode, MultiStrengthIFNode])
def test_state_that_broadcasts_is_used(cls, mode):
    """A state set to a tensor that broadcasts (``[N]``) is used, as the host's arithmetic
    would; one that does not raises, naming both shapes."""
    x = currents((3, B, N), seed=62, mean=0.6).detach()
    name = "u" if cls is NALIFNode else "v"  # NALIFNode's state is its pre-reset potential
    a, b, rest = cls(step_mode=mode), cls(step_mode=mode), cls(step_mode=mode)
    drive(a, x[:1]), drive(b, x[:1])  # NALIFNode: u is a float until the first step
    drive(rest, x[:1])
    setattr(a, name, torch.full((N,), -2.0, dtype=F64))
    setattr(b, name, torch.full((B, N), -2.0, dtype=F64))
    out_a = drive(a, x)[0]
    assert torch.equal(out_a, drive(b, x)[0])
    assert not torch.equal(out_a, drive(rest, x)[0])  # the state was really used
    c = cls(step_mode=mode)
    drive(c, x[:1])
    setattr(c, name, torch.zeros(B + 1, N, dtype=F64))
    with pytest.raises(ValueError, match=rf"\({B + 1}, {N}\).*\({B}, {N}\)"):
        drive(c, x)


@pytest.mark.parametrize("mode", ["s", "m"])
def test_na_node_refuses_an_assigned_v(mode):
    node = NALIFNode(step_mode=mode)
    x = currents((3, B, N), seed=63).detach()
    drive(node, x)
    node.v = torch.zeros(B, N, dtype=F64)
    with pytest.raises(ValueError, match="node.u"):
        drive(node, x)
    functional.reset_net(node)
    drive(node, x)  # from rest it runs again
