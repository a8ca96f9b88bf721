"""One stateful spikegrad neuron used for two sequences at once is refused, not silently wrong."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from spikegrad import neurons


@pytest.mark.parametrize("make", [lambda: neurons.NALeaky(beta=0.8),
                                  lambda: neurons.ResetTermLeaky(beta=0.8, tau_s=2.0)],
                         ids=["NALeaky", "ResetTermLeaky-trace"])
def test_shared_instance_across_two_layers_raises(make):
    lif = make()
    xa, xb = torch.rand(2, 4, 3, requires_grad=True)
    ma, mb = lif.init_leaky(), lif.init_leaky()
    _, ma = lif(xa[0], ma)
    _, mb = lif(xb[0], mb)  # a fresh zero mem: a new sequence is fine
    with pytest.raises(RuntimeError, match="one neuron per layer"):
        lif(xa[1], ma)  # ma was returned earlier in this sequence, but is not the latest


def test_truncated_bptt_and_stateless_neurons_are_unaffected():
    lif = neurons.NALeaky(beta=0.8)
    x = torch.rand(4, 2, 3, requires_grad=True)
    mem = lif.init_leaky()
    for t in range(4):
        _, mem = lif(x[t], mem)
        mem = mem.detach() if t == 1 else mem  # a detached mem starts a new window: allowed
    shared = neurons.ResetTermLeaky(beta=0.8)  # no trace: nothing per-instance, sharing is fine
    ma = mb = shared.init_leaky()
    for t in range(3):
        _, ma = shared(x[t], ma)
        _, mb = shared(x[t] * 2, mb)
    assert torch.isfinite(ma).all() and torch.isfinite(mb).all()


def test_neuron_with_history_still_pickles():
    lif = neurons.NALeaky(beta=0.8, tau_s=2.0)
    mem = lif.init_leaky()
    with torch.no_grad():
        for _ in range(3):
            _, mem = lif(torch.rand(2, 3), mem)
    buf = io.BytesIO()
    torch.save(lif, buf)
    assert copy.deepcopy(lif)._returned == {}
