"""Cross-framework parity: each spikingjelly node against its snntorch twin (API.md).

Runs on spikingjelly 2.x and 0.0.0.0.14 (``PYTHONPATH=/tmp/sj014 pytest ...``), with snntorch.

=============================================  ==================================================
spikingjelly node                              snntorch twin
=============================================  ==================================================
``ResetTermLIFNode(tau, decay_input=False,``   ``ResetTermLeaky(beta=1 - 1/tau, reset_grad=``
``detach_reset=False/True, v_reset=0/None)``   ``"full"/"detach", reset_mechanism="zero"/...)``
``ResetTermLIFNode(tau, decay_input=True)``    the same twin, input scaled by ``1/tau``
``NALIFNode(tau=5, tau_s)``                    ``NALeaky(beta=0.8, tau_s)``
``HTDGLIFNode(**kw)``                          ``HTDGLIFLeaky(**kw)``
``MultiStrengthIFNode(**kw)``                  ``MultiStrengthLeaky(**kw)``
=============================================  ==================================================

On generic random float64 inputs (no potential exactly at the threshold) the first outputs are
identical (spikes exactly; traces within 1e-12) and the input gradients for a random upstream
gradient agree within ``rtol = atol = 1e-12`` (TIGHT below), in both spikingjelly step modes.
The states are compared through their definitions (snntorch's ``mem`` is the pre-reset ``u``,
spikingjelly's ``v`` the post-reset state; the multi-strength ``mem`` is the remainder on both).

Where the conventions differ it is explicit: at ``u == θ`` exactly the reset-term node fires
(spikingjelly's ``>=``) and its twin does not (snntorch's ``>``); the NA nodes agree (both strict,
the authors'). A naive mapping of the hosts' own LIF neurons (snntorch's default ``Leaky``, whose
reset is detached, against spikingjelly's ``LIFNode(detach_reset=False)``) gives equal spikes but
different gradients: asserted, with the two mappings that do agree as controls.

snntorch stores a float ``beta`` as a float32 tensor, so the twins get ``beta`` as a float64
tensor (or a ``tau`` whose leak is exact in float32) to compare at 1e-12.
"""

from __future__ import annotations

import pytest

pytest.importorskip("spikingjelly")
pytest.importorskip("snntorch")

import snntorch as snn  # noqa: E402
import torch  # noqa: E402
from spikingjelly.activation_based import functional, neuron  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

from spikegrad.neurons import (  # noqa: E402
    HTDGLIFLeaky,
    HTDGLIFNode,
    MultiStrengthIFNode,
    MultiStrengthLeaky,
    NALeaky,
    NALIFNode,
    ResetTermLeaky,
    ResetTermLIFNode,
)

F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}
T, B, N = 12, 4, 6
MODES = ["s", "m"]


# --- helpers ------------------------------------------------------------------------------------
def currents(seed=0, mean=0.45, std=0.7, shape=(T, B, N)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * std + mean).requires_grad_(True)


def randn_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(x.shape, generator=g, dtype=F64)


def run_snn(lif, x):
    """snntorch's per-step idiom; returns the stacked first outputs and ``mem``."""
    mem = lif.init_leaky()
    outs, mems = [], []
    for t in range(x.shape[0]):
        out, mem = lif(x[t], mem)
        outs.append(out)
        mems.append(mem)
    return torch.stack(outs), torch.stack(mems)


def run_sj(node, x):
    """spikingjelly's idiom in the node's step mode; returns outputs and the per-step ``v``."""
    functional.reset_net(node)
    if node.step_mode == "m":
        node.store_v_seq = True
        return node(x), node.v_seq
    outs, vs = [], []
    for t in range(x.shape[0]):
        outs.append(node(x[t]))
        vs.append(node.v)
    return torch.stack(outs), torch.stack(vs)


def input_grad(x, out, g):
    (grad,) = torch.autograd.grad((out * g).sum(), x)
    return grad


def assert_meaningful(spk):
    rate = (spk > 0).double().mean().item()
    assert 0.05 < rate < 0.9, f"firing rate {rate:.3f}: inputs do not exercise the neurons"


def assert_off_threshold(u, theta):
    """Generic inputs: no potential sits exactly at the threshold (the conventions agree)."""
    assert (u - theta).abs().min() > 1e-9


def beta_of(tau: float) -> torch.Tensor:
    return torch.tensor(1.0 - 1.0 / tau, dtype=F64)


def assert_twins_match(node, twin, x, *, v_reset, tau_s, seed):
    """Same outputs, the host's post-reset ``v`` from the twin's pre-reset ``mem``, same
    input gradients for a random upstream gradient."""
    out_sj, v_sj = run_sj(node, x)
    out_st, u_st = run_snn(twin, x)
    assert_off_threshold(u_st, 1.0)
    spk = (u_st > 1.0).to(F64)
    assert_meaningful(spk)
    if tau_s is None:
        assert torch.equal(out_sj, out_st)
    torch.testing.assert_close(out_sj, out_st, **TIGHT)
    post = u_st * (1 - spk) if v_reset == 0.0 else u_st - spk
    torch.testing.assert_close(v_sj, post.detach(), **TIGHT)
    g = randn_like(out_sj, seed)
    g_sj, g_st = input_grad(x, out_sj, g), input_grad(x, out_st, g)
    assert g_st.abs().sum() > 0
    torch.testing.assert_close(g_sj, g_st, **TIGHT)


# =================================================================================================
# 1. ResetTermLIFNode <-> ResetTermLeaky
# =================================================================================================
RESET_TERM = [
    pytest.param(tau, detach, v_reset, tau_s,
                 id=f"tau{tau}-detach{int(detach)}-vreset{v_reset}-taus{tau_s}")
    for tau in (3.0, 4.0) for detach in (False, True) for v_reset in (0.0, None)
    for tau_s in (None, 2.0)
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau, detach, v_reset, tau_s", RESET_TERM)
def test_reset_term_node_equals_twin(tau, detach, v_reset, tau_s, mode):
    node = ResetTermLIFNode(tau, decay_input=False, v_reset=v_reset, detach_reset=detach,
                            step_mode=mode, tau_s=tau_s)
    # tau=4.0: a plain float (0.75 is exact in float32); tau=3.0: a float64 tensor
    beta = 1 - 1 / tau if tau == 4.0 else beta_of(tau)
    twin = ResetTermLeaky(beta, reset_grad="detach" if detach else "full",
                          reset_mechanism="zero" if v_reset == 0.0 else "subtract", tau_s=tau_s)
    assert_twins_match(node, twin, currents(seed=1), v_reset=v_reset, tau_s=tau_s, seed=2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("detach", [False, True])
def test_reset_term_decay_input_equals_twin_with_scaled_input(detach, mode):
    tau = 3.0
    node = ResetTermLIFNode(tau, decay_input=True, detach_reset=detach, step_mode=mode)
    twin = ResetTermLeaky(beta_of(tau), reset_grad="detach" if detach else "full")
    x = currents(seed=3, mean=0.45 * tau, std=0.7 * tau)
    out_sj, _ = run_sj(node, x)
    out_st, u_st = run_snn(twin, x / tau)
    assert_off_threshold(u_st, 1.0)
    assert_meaningful(out_st)
    assert torch.equal(out_sj, out_st)
    g = randn_like(out_sj, 4)
    torch.testing.assert_close(input_grad(x, out_sj, g), input_grad(x, out_st, g), **TIGHT)
    # the mapping matters: without the 1/tau the twin is a different neuron
    out_unscaled, _ = run_snn(ResetTermLeaky(beta_of(tau)), x)
    assert not torch.equal(out_sj, out_unscaled)


def test_reset_term_twins_differ_at_threshold_exactly():
    """The one documented difference: ``u == θ`` fires in spikingjelly (``>=``), not in
    snntorch (``>``). Just off the threshold they agree."""
    x = torch.tensor([1.0, 1.0 + 1e-9, 1.0 - 1e-9, 0.3], dtype=F64)
    sj = ResetTermLIFNode(2.0)(x)
    st, mem = ResetTermLeaky(0.5)(x, torch.zeros_like(x))
    assert mem.tolist() == x.tolist()
    assert sj.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert st.tolist() == [0.0, 1.0, 0.0, 0.0]


# =================================================================================================
# 2. NALIFNode <-> NALeaky
# =================================================================================================
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("tau_s", [None, 2.0])
def test_na_node_equals_twin(tau_s, v_reset, mode):
    node = NALIFNode(tau=5.0, v_reset=v_reset, tau_s=tau_s, step_mode=mode)
    twin = NALeaky(beta=0.8, tau_s=tau_s, reset_mechanism="zero" if v_reset == 0.0 else "subtract")
    assert node.rule == twin.rule  # 1 - 1/5 == 0.8 exactly; the same rule object
    assert_twins_match(node, twin, currents(seed=5), v_reset=v_reset, tau_s=tau_s, seed=6)


@pytest.mark.parametrize("mode", MODES)
def test_na_twins_agree_at_threshold_exactly(mode):
    """Both NA neurons are strict (the authors' ``u > θ``), on either host."""
    x = torch.tensor([[1.0, 0.5], [0.2, 0.6], [0.0, 0.0]], dtype=F64)[:, None, :]
    x.requires_grad_(True)
    out_sj, _ = run_sj(NALIFNode(tau=5.0, step_mode=mode), x)
    out_st, u_st = run_snn(NALeaky(0.8), x)
    # u == θ exactly at steps 0 and 1 of neuron 0 (1.0, then 0.8 * 1.0 + 0.2) and step 1 of
    # neuron 1 (0.8 * 0.5 + 0.6): no spike anywhere on either host
    assert (u_st == 1.0).sum() == 3
    assert out_sj.sum() == 0 and torch.equal(out_sj, out_st)
    g = randn_like(out_sj, 7)
    torch.testing.assert_close(input_grad(x, out_sj, g), input_grad(x, out_st, g), **TIGHT)


# =================================================================================================
# 3. HTDGLIFNode <-> HTDGLIFLeaky
# =================================================================================================
HTDGLIF = [
    pytest.param(dict(), id="paper"),
    pytest.param(dict(alpha=0.5), id="paper-alpha0.5"),
    pytest.param(dict(mode="braincog"), id="braincog"),
    pytest.param(dict(mode="braincog", dt=0.5), id="braincog-dt0.5"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", HTDGLIF)
def test_htdglif_node_equals_twin(kw, mode):
    node = HTDGLIFNode(**kw, step_mode=mode)
    twin = HTDGLIFLeaky(**kw)
    x = currents(seed=8, mean=0.3, std=0.5)
    out_sj, v_sj = run_sj(node, x)
    out_st, h_st = run_snn(twin, x)
    assert_off_threshold(h_st, 0.5)
    assert_meaningful(out_st)
    assert torch.equal(out_sj, out_st)
    dt = kw.get("dt") or 1.0
    fired = h_st >= 0.5
    post = torch.where(fired, torch.zeros_like(h_st), h_st) * (dt if "dt" in kw else 1.0)
    torch.testing.assert_close(v_sj, post.detach(), **TIGHT)
    g = randn_like(out_sj, 9)
    g_sj, g_st = input_grad(x, out_sj, g), input_grad(x, out_st, g)
    assert g_st.abs().sum() > 0
    torch.testing.assert_close(g_sj, g_st, **TIGHT)


def test_htdglif_twins_agree_at_threshold_exactly():
    x = torch.tensor([0.5, 0.4999999], dtype=F64)
    sj = HTDGLIFNode()(x)
    st, _ = HTDGLIFLeaky()(x, torch.zeros_like(x))
    assert sj.tolist() == st.tolist() == [1.0, 0.0]  # both `h >= θ`


# =================================================================================================
# 4. MultiStrengthIFNode <-> MultiStrengthLeaky
# =================================================================================================
MULTI = [
    pytest.param(dict(), id="default"),
    pytest.param(dict(detach_reset=False), id="live-reset"),
    pytest.param(dict(max_strength=2, v_threshold=0.5), id="cap2-tau0.5"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", MULTI)
def test_multistrength_node_equals_twin(kw, mode):
    node = MultiStrengthIFNode(**kw, step_mode=mode)
    twin_kw = {("threshold" if k == "v_threshold" else k): v for k, v in kw.items()}
    twin = MultiStrengthLeaky(**twin_kw)
    x = currents(seed=10, mean=0.6, std=0.9)
    out_sj, v_sj = run_sj(node, x)
    out_st, v_st = run_snn(twin, x)
    assert_meaningful(out_st)
    assert out_st.max() >= 2  # multi-strength spikes occur
    assert torch.equal(out_sj, out_st)
    torch.testing.assert_close(v_sj, v_st, **TIGHT)  # both the remainder h - τθ
    g_o, g_v = randn_like(out_sj, 11), randn_like(v_sj, 12)
    (g_sj,) = torch.autograd.grad((out_sj * g_o).sum() + (v_sj * g_v).sum(), x)
    (g_st,) = torch.autograd.grad((out_st * g_o).sum() + (v_st * g_v).sum(), x)
    assert g_st.abs().sum() > 0
    torch.testing.assert_close(g_sj, g_st, **TIGHT)


def test_multistrength_twins_agree_at_threshold_exactly():
    x = torch.tensor([1.0, 2.0, 0.9999999], dtype=F64)
    sj = MultiStrengthIFNode()(x)
    st, _ = MultiStrengthLeaky()(x, torch.zeros_like(x))
    assert sj.tolist() == st.tolist() == [1.0, 2.0, 0.0]  # floor: h == τ counts


# =================================================================================================
# 5. The naive mapping of the hosts' own LIF neurons does NOT match
# =================================================================================================
SLOPE = 1 / 0.3


def _host_lif(tau, detach_reset, mode):
    return neuron.LIFNode(tau=tau, decay_input=False, v_reset=0.0, detach_reset=detach_reset,
                          surrogate_function=sj_surrogate.Sigmoid(alpha=SLOPE), step_mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_naive_mapping_of_host_lif_neurons_differs_in_gradients(mode):
    """snntorch's default ``Leaky`` (``reset_delay=True``: detached reset) against spikingjelly's
    default ``LIFNode(detach_reset=False)``: same forward, different gradients."""
    tau = 4.0  # beta 0.75: exact in snntorch's float32 parameter
    x = currents(seed=13)
    snn_default = snn.Leaky(beta=1 - 1 / tau, reset_mechanism="zero",
                            spike_grad=snn.surrogate.sigmoid(slope=SLOPE))
    s_st, u_st = run_snn(snn_default, x)
    s_sj, _ = run_sj(_host_lif(tau, False, mode), x)
    assert_off_threshold(u_st, 1.0)
    assert_meaningful(s_st)
    assert s_st.dtype == torch.float32  # the host's spikes, whatever the input dtype
    assert torch.equal(s_st.to(F64), s_sj)  # equal spikes ...
    g = randn_like(s_st, 14)
    g_st, g_sj = input_grad(x, s_st, g), input_grad(x, s_sj, g)
    diff = (g_st - g_sj).abs().max()
    assert diff > 0.05 * g_sj.abs().max(), f"naive mapping matched (max diff {diff:.2e})"

    # ... and the mappings that do match (controls): detached with detached (snntorch's
    # surrogate returns float32 spikes, `(input_ > 0).float()`, so its backward runs in
    # float32: hence 1e-6) ...
    s_det, _ = run_sj(_host_lif(tau, True, mode), x)
    torch.testing.assert_close(input_grad(x, s_det, g), g_st, rtol=1e-6, atol=1e-8)
    # ... and the reset term on both hosts: spikegrad's twins agree with spikingjelly's default
    s_full, _ = run_snn(ResetTermLeaky(1 - 1 / tau, reset_grad="full"), x)
    torch.testing.assert_close(input_grad(x, s_full, g), g_sj, rtol=1e-10, atol=1e-10)
    s_node, _ = run_sj(ResetTermLIFNode(tau, step_mode=mode), x)
    torch.testing.assert_close(input_grad(x, s_node, g), g_sj, rtol=1e-10, atol=1e-10)
