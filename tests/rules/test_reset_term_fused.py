"""The fused whole-sequence reset-term node (SequenceFunction) against the reference loop."""

from __future__ import annotations

import pytest
import torch

from spikegrad.rules import reset_term, surrogate


@pytest.mark.parametrize("mechanism", ["zero", "subtract"])
@pytest.mark.parametrize("k", [1.0, 0.0, 0.3, 2.5])
@pytest.mark.parametrize("sg", [surrogate.Sigmoid(0.3), surrogate.ATan(2.0, inclusive=True)],
                         ids=["sigmoid", "atan-inclusive"])
def test_fused_equals_reference_autograd(mechanism, k, sg):
    gen = torch.Generator().manual_seed(7)
    c = (torch.rand(17, 3, 5, generator=gen, dtype=torch.float64) * 1.6).requires_grad_()
    v0 = (torch.rand(3, 5, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()
    g_s = torch.randn(17, 3, 5, generator=gen, dtype=torch.float64)
    g_v = torch.randn(17, 3, 5, generator=gen, dtype=torch.float64)

    # reference: the rule's own step, plain autograd
    v, spikes, states = v0, [], []
    for t in range(17):
        s, _, v = reset_term.step_v(c[t], v, beta=0.8, threshold=1.0, spike_fn=sg,
                                    mechanism=mechanism, reset_grad_scale=k)
        spikes.append(s)
        states.append(v)
    s_ref, v_ref = torch.stack(spikes), torch.stack(states)
    ref = torch.autograd.grad((s_ref * g_s).sum() + (v_ref * g_v).sum(), (c, v0))

    s, v_seq, u = reset_term.SequenceFunction.apply(c, v0, 0.8, 1.0, sg, mechanism, k)
    got = torch.autograd.grad((s * g_s).sum() + (v_seq * g_v).sum(), (c, v0))
    assert torch.equal(s, s_ref.detach())
    torch.testing.assert_close(v_seq, v_ref, rtol=0, atol=1e-14)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_applicable_only_for_spikegrad_surrogates_and_constants():
    assert reset_term.fused_applicable(surrogate.Sigmoid(), 0.5, 1.0)
    assert not reset_term.fused_applicable(surrogate.Sigmoid(spiking=False), 0.5, 1.0)
    assert not reset_term.fused_applicable(lambda x: (x > 0).float(), 0.5, 1.0)
    assert not reset_term.fused_applicable(surrogate.Sigmoid(), torch.tensor(0.5), 1.0)
