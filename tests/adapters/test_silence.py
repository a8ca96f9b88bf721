"""A BPSA/BPTA layer silent through a whole training sequence warns once, naming the warm-up;
an active layer, inference and the warm-up itself never warn."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torch import nn

from spikegrad import recipes
from spikegrad.adapters.silence import SilenceWatch

pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly")

T, B, N = 4, 3, 5


def snntorch_seq(lif, x):
    mem, outs = lif.init_leaky(), []
    for t in range(x.shape[0]):
        out, mem = lif(x[t], mem)
        outs.append(out)
    return torch.stack(outs)


def sj_seq(node, x):
    from spikingjelly.activation_based import functional

    out = node(x) if node.step_mode == "m" else torch.stack([node(xt) for xt in x])
    functional.reset_net(node)
    return out


def cases():
    from spikegrad import neurons

    yield "HTDGLIFLeaky", lambda: neurons.HTDGLIFLeaky(), snntorch_seq
    yield "HTDGLIFNode-s", lambda: neurons.HTDGLIFNode(), sj_seq
    yield "HTDGLIFNode-m", lambda: neurons.HTDGLIFNode(step_mode="m"), sj_seq


@pytest.mark.parametrize("name,make,seq", list(cases()), ids=[c[0] for c in cases()])
def test_silent_training_sequence_warns_once(name, make, seq):
    node = make()
    quiet = torch.full((T, B, N), 0.01, requires_grad=True)  # never reaches θ = 0.5
    loud = torch.full((T, B, N), 2.0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seq(node, loud)
        seq(node, loud)  # active layers: no warning
        with torch.no_grad():
            seq(node, quiet.detach())  # inference records nothing
            seq(node, quiet.detach())
        with recipes.warm_up(nn.Sequential(node)):
            seq(node, quiet)  # ReLU warm-up: no rule runs
            seq(node, quiet)
    with pytest.warns(RuntimeWarning, match=r"no spike during a whole training sequence.*"
                                            r"recipes\.warm_up"):
        seq(node, quiet)
        seq(node, quiet)
        if node.__class__.__name__ == "HTDGLIFLeaky":
            node.reset_mem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seq(node, quiet)  # once only
        seq(node, quiet)


def test_watch_pickles_without_its_sums():
    w = SilenceWatch("X", "fix it")
    w.observe(torch.ones(3))
    w2 = pickle.loads(pickle.dumps(w))
    assert w2._sum is None and not w2.warned
