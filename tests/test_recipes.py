"""spikegrad.recipes: each piece against an independent expectation (snntorch's own loss, the
formula by hand, golden values), on networks of both hosts."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import torch
from torch import nn

from spikegrad import recipes
from spikegrad.rules import reset_term

T, B, C = 5, 4, 3


def rand_out(seed: int, n: int = C, steps: int = T) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, B, n, generator=g, dtype=torch.float64).requires_grad_(True)


LABELS = torch.tensor([0, 2, 1, 2])


def test_rate_ce_loss_equals_snntorch_ce_rate_loss():
    sf = pytest.importorskip("snntorch.functional")
    out = rand_out(0).float().detach().requires_grad_(True)  # snntorch sums in float32
    ours = recipes.rate_ce_loss(out, LABELS)
    theirs = sf.ce_rate_loss()(out, LABELS)
    torch.testing.assert_close(ours, theirs.reshape(()))  # snntorch returns shape [1]
    g1 = torch.autograd.grad(ours, out)[0]
    g2 = torch.autograd.grad(theirs, out)[0]
    torch.testing.assert_close(g1, g2)


def test_trace_target_loss_golden_and_by_hand():
    silent = torch.zeros(3, 1, 10)  # label 2 over 3 steps, tau_s 2: d-trace 0.5, 0.75, 0.875
    assert float(recipes.trace_target_loss(silent, torch.tensor([2]))) == pytest.approx(0.7890625)
    out = rand_out(1)
    d = torch.zeros(T, B, C, dtype=torch.float64)
    d[:, torch.arange(B), LABELS] = 1.0
    by_hand = 0.0
    for b in range(B):
        a_prev, per = 0.0, 0.0
        for t in range(T):
            a_prev = 0.5 * a_prev + 0.5 * d[t, b]
            per = per + 0.5 * ((a_prev - out[t, b]) ** 2).sum()
        by_hand = by_hand + per / B
    torch.testing.assert_close(recipes.trace_target_loss(out, LABELS), by_hand)


def test_van_rossum_target_loss_is_the_rule_on_the_target_train():
    out = rand_out(2)
    d = recipes.target_train(LABELS, T, C, out.dtype)
    assert torch.equal(d.sum(0).argmax(1), LABELS) and float(d.sum()) == T * B
    torch.testing.assert_close(recipes.van_rossum_target_loss(out, LABELS),
                               reset_term.van_rossum_loss(out, d, tau_s=2.0))
    # NA's loss on an output trace equals van Rossum on the spikes behind it
    spikes = (rand_out(3) > 0.6).double()
    torch.testing.assert_close(recipes.trace_target_loss(reset_term.trace(spikes, 2.0), LABELS),
                               recipes.van_rossum_target_loss(spikes, LABELS))


def test_voting():
    out = rand_out(4, n=C * 10)
    voted = recipes.vote(out, 10)
    assert voted.shape == (T, B, C)
    torch.testing.assert_close(voted[:, :, 1], out[:, :, 10:20].mean(-1))
    want = ((voted.mean(0) - nn.functional.one_hot(LABELS, C).double()) ** 2).mean()
    torch.testing.assert_close(recipes.voting_mse_loss(out, LABELS), want)
    assert recipes.voting_layer(8, C).out_features == C * 10
    with pytest.raises(ValueError, match="votes must be a positive int dividing"):
        recipes.vote(out, 7)
    assert torch.equal(recipes.predict(out, votes=10), voted.sum(0).argmax(1))


def test_predict_first_spike():
    spk = torch.zeros(T, 2, C)
    spk[3, 0, 0] = spk[1, 0, 2] = 1.0  # sample 0: class 2 fires first
    spk[0, 1, 1] = spk[4, 1, 0] = 1.0  # sample 1: class 1
    assert recipes.predict(spk, readout="first-spike").tolist() == [2, 1]
    assert recipes.predict(spk).tolist() == [0, 0]  # by count: a tie goes to the first
    with pytest.raises(ValueError, match="readout"):
        recipes.predict(spk, readout="latest")


def test_bad_labels_are_named():
    with pytest.raises(TypeError, match="labels must be an integer"):
        recipes.rate_ce_loss(rand_out(5), LABELS.double())
    with pytest.raises(ValueError, match="time-major"):
        recipes.rate_ce_loss(rand_out(5), LABELS[:3])


def test_input_pieces():
    x = torch.rand(B, 7)
    seq = recipes.repeat(x, T)
    assert seq.shape == (T, B, 7) and seq.is_contiguous() and torch.equal(seq[3], x)
    torch.testing.assert_close(recipes.psp_filter(seq)[0], 0.5 * x)
    torch.testing.assert_close(recipes.psp_filter(seq)[1], 0.75 * x)
    with pytest.raises(ValueError, match="steps"):
        recipes.repeat(x, 0)


def _nets():
    from spikegrad import neurons

    yield "snntorch", nn.Sequential(nn.Linear(4, 6), nn.Sequential(neurons.HTDGLIFLeaky()),
                                    nn.Linear(6, 2), neurons.HTDGLIFLeaky(mode="braincog"))
    yield "spikingjelly", nn.Sequential(nn.Linear(4, 6), neurons.HTDGLIFNode(step_mode="m"))


@pytest.mark.parametrize("host", ["snntorch", "spikingjelly"])
def test_warm_up_switches_every_bpsta_node_of_any_host(host):
    net = dict(_nets())[host]
    nodes = [m for m in net.modules() if hasattr(m, "warm_up")]
    with recipes.warm_up(net):
        assert all(m.warm_up for m in nodes)
    assert not any(m.warm_up for m in nodes)
    with contextlib.suppress(RuntimeError), recipes.warm_up(net):
        raise RuntimeError("a failing step")
    assert not any(m.warm_up for m in nodes)  # restored after an exception too
    assert recipes.set_warm_up(net, True) == len(nodes)
    recipes.set_warm_up(net, False)


def test_warm_up_on_a_net_without_bpsta_raises():
    with pytest.raises(ValueError, match="no HTDGLIFLeaky/HTDGLIFNode"):
        recipes.set_warm_up(nn.Sequential(nn.Linear(2, 2)), True)
    assert recipes.set_warm_up(nn.Sequential(nn.Linear(2, 2)), False) == 0


def test_na_init_and_clamp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(200, 300), nn.Linear(300, 10))
    conv = net[0].weight.detach().clone()
    assert recipes.na_init_(net) == 2
    assert torch.equal(net[0].weight, conv)  # convolutions keep their default
    std = float(net[2].weight.detach().std())
    assert std == pytest.approx((2.0 / 200) ** 0.5, rel=0.05)  # kaiming_normal_, fan_in 200
    with torch.no_grad():
        net[3].weight.mul_(100.0)
    recipes.clamp_weights_(net)
    assert float(net[3].weight.detach().abs().max()) == 4.0
    opt, sched = recipes.na_optimiser(net.parameters())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 0.01
    assert sched.gamma == 0.985


def test_importable_without_the_benchmarks(tmp_path):
    code = ("import sys, spikegrad.recipes as r; assert 'suite' not in sys.modules; "
            "assert not any(m.startswith('benchmarks') for m in sys.modules); print(r.TAU_S)")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "2.0"
