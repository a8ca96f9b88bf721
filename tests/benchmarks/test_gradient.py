"""The gradient-quality estimator (benchmarks/suite/gradient.py) where the answer is known:
a smooth network (sigmoid spikes, plain autograd), deliberately wrong "rules", the batched
perturbation against really changed weights, and the split over processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from suite import gradient  # noqa: E402

T, B, IN, HID, OUT = 4, 16, 8, 32, 3


class SmoothLIF(nn.Module):
    """LIF over ``[T, B, n]`` with a sigmoid instead of the Heaviside: smooth, plain autograd."""

    def forward(self, cur: torch.Tensor) -> torch.Tensor:
        v, outs = torch.zeros_like(cur[0]), []
        for t in range(cur.shape[0]):
            u = 0.8 * v + cur[t]
            s = torch.sigmoid(4.0 * (u - 1.0))
            v = u * (1 - s)
            outs.append(s)
        return torch.stack(outs)


def smooth_problem(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(IN, HID), SmoothLIF(), nn.Linear(HID, OUT), SmoothLIF()).double()
    x = torch.rand(T, B, IN, dtype=torch.float64) * 1.5
    y = torch.randint(0, OUT, (B,))

    def loss_fn(out, labels):
        return nn.functional.cross_entropy(out.sum(0), labels)

    return net, x, y, loss_fn


def es_cosine(n_pairs: int, sigma: float, seed: int = 0) -> tuple[float, list, object]:
    net, x, y, loss_fn = smooth_problem()
    shapes = [m.weight.shape for m in gradient.weight_layers(net)]
    losses = gradient.network_losses(net, x, y, loss_fn, sigma)
    est = gradient.estimate(losses, shapes, n_pairs=n_pairs, sigma=sigma, seed=seed, chunk=64)
    _, true = gradient.rule_gradient(net, x, y, loss_fn)
    q = gradient.quality(true, est, resamples=300)
    return q["overall"]["grad_cosine"], true, (est, q, losses)


def test_estimate_converges_to_autograd_on_a_smooth_network():
    """More directions and a smaller σ bring the estimate towards the true gradient."""
    few_wide, _, _ = es_cosine(8, 0.3)
    many_wide, _, _ = es_cosine(512, 0.3)
    many_narrow, _, (est, q, _) = es_cosine(512, 0.003)
    assert few_wide < many_wide < many_narrow
    assert many_narrow > 0.7
    o = q["overall"]
    assert o["grad_cosine_lo"] <= o["grad_cosine"] <= o["grad_cosine_hi"]
    # the band describes the spread over direction sets: fresh sets land inside it
    others = [es_cosine(512, 0.003, seed=s)[0] for s in (1, 2, 3, 4)]
    inside = sum(o["grad_cosine_lo"] <= c <= o["grad_cosine_hi"] for c in others)
    assert inside >= 3, (o, others)


def test_wrong_rules_score_near_zero_or_negative():
    _, true, (est, _, losses) = es_cosine(512, 0.003)
    flipped = gradient.quality([-g for g in true], est, resamples=200)["overall"]
    assert flipped["grad_cosine"] < -0.7 and flipped["grad_cosine_hi"] < 0
    assert flipped["grad_sign_agree"] < 0.5
    gen = torch.Generator().manual_seed(5)
    noise = [torch.randn(g.shape, generator=gen, dtype=g.dtype) for g in true]
    rand = gradient.quality(noise, est, resamples=200)["overall"]
    assert abs(rand["grad_cosine"]) < 0.2
    # the step along the true gradient lowers the smoothed loss like the estimate's step does;
    # the flipped one raises it
    r_true = gradient.loss_drop_ratio(losses, true, est, pairs=64, step=0.05)
    r_flip = gradient.loss_drop_ratio(losses, [-g for g in true], est, pairs=64, step=0.05)
    assert r_true is not None and r_true > 0.5
    assert r_flip is not None and r_flip < 0


@pytest.mark.parametrize("layout", ["flat", "time-major"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_batched_perturbation_equals_changed_weights(kind, layout):
    torch.manual_seed(1)
    K, b = 3, 2
    layer = (nn.Linear(5, 4) if kind == "linear" else nn.Conv2d(2, 3, 3, padding=1)).double()
    feat = (5,) if kind == "linear" else (2, 6, 6)
    x = torch.randn(T, K * b, *feat, dtype=torch.float64)
    eps = torch.randn(K, *layer.weight.shape, dtype=torch.float64)
    sigma = 0.1
    inp = x.flatten(0, 1) if layout == "flat" else x
    if kind == "conv" and layout == "time-major":
        inp = x.flatten(0, 1)  # a convolution sees [T·K·B, C, H, W] in both hosts
    with gradient.perturbed([layer], [eps], sigma, b):
        got = layer(inp)
    got = got.reshape(T, K, b, -1)  # both layouts hold the K groups one after the other
    for k in range(K):
        moved = nn.functional.linear if kind == "linear" else nn.functional.conv2d
        w = layer.weight + sigma * eps[k]
        xk = x[:, k * b:(k + 1) * b].flatten(0, 1)
        want = (moved(xk, w, layer.bias) if kind == "linear"
                else moved(xk, w, layer.bias, padding=1))
        torch.testing.assert_close(got[:, k].reshape(want.shape), want)


def test_directions_split_over_processes_give_the_same_estimate():
    net, x, y, loss_fn = smooth_problem()
    shapes = [m.weight.shape for m in gradient.weight_layers(net)]
    losses = gradient.network_losses(net, x, y, loss_fn, 0.01)
    one = gradient.estimate(losses, shapes, n_pairs=12, sigma=0.01, seed=3, chunk=5)
    parts = [gradient.estimate(losses, shapes, n_pairs=12, sigma=0.01, seed=3, chunk=5,
                               rank=r, world=2, gather=lambda d: d) for r in range(2)]
    torch.testing.assert_close(parts[0].diffs + parts[1].diffs, one.diffs)
    assert torch.count_nonzero(parts[0].diffs[6:]) == 0  # each rank did its own half only
