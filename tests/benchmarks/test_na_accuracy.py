"""Smoke test of benchmarks/na_accuracy.py: both rules train on a tiny random batch (no dataset)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import na_accuracy  # noqa: E402


def test_same_initial_weights_for_both_rules():
    nets = []
    for rule in na_accuracy.RULES:
        torch.manual_seed(3)
        nets.append(na_accuracy.PaperCNN(rule, T=5))
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(p, q)


def test_loss_is_the_recipes_trace_target_loss():
    # an all-silent output against label 2 over 3 steps: ½ Σ_t d[t]² = ½ (0.25 + 0.5625 + 0.765625)
    silent = torch.zeros(3, 1, 10)
    assert float(na_accuracy.loss_fn(silent, torch.tensor([2]))) == pytest.approx(0.7890625)


@pytest.mark.parametrize("rule", na_accuracy.RULES)
def test_two_training_steps(rule):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28) * 3.0  # bright enough that every layer spikes from the start
    y = torch.tensor([0, 3, 7, 9])
    torch.manual_seed(0)
    net = na_accuracy.PaperCNN(rule, T=5)
    opt, sched = na_accuracy.make_optimiser(net, 5e-4)
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        loss, correct = na_accuracy.train_step(net, opt, x, y)
        assert math.isfinite(loss)
        assert 0 <= correct <= 4
    sched.step()
    for b, p in zip(before, net.parameters(), strict=True):
        # a real gradient, not only AdamW's weight decay, moved every layer
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())
        assert float(p.grad.abs().sum()) > 0.0
        assert not torch.equal(b, p)
        assert float(p.detach().abs().max()) <= na_accuracy.WEIGHT_CLAMP
    acc, test_loss, rates = na_accuracy.evaluate(net, x, y, chunk=2)
    assert 0.0 <= acc <= 100.0 and math.isfinite(test_loss)
    assert len(rates) == 4 and all(0.0 <= r <= 1.0 for r in rates)
