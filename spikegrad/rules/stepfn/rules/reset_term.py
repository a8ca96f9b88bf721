"""Reset-term BPTT as a step rule (its step is :func:`spikegrad.rules.reset_term.step`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from spikegrad.rules import reset_term, surrogate
from spikegrad.rules.stepfn.contract import StepRule

__all__ = ["ResetTerm", "EXAMPLES"]


@dataclasses.dataclass(frozen=True)
class ResetTerm(StepRule):
    """Reset-term BPTT (state: the pre-reset potential ``u``; output: spikes)."""

    beta: float = 0.8
    threshold: float = 1.0
    spike: Any = surrogate.Sigmoid(0.3)
    mechanism: str = "zero"
    reset_grad_scale: float = 1.0
    states = ("u",)

    @staticmethod
    def step(x: torch.Tensor, state: tuple[torch.Tensor, ...], cfg: Any
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        s, u = reset_term.step(x, state[0], beta=cfg.beta, threshold=cfg.threshold,
                               spike_fn=cfg.spike, mechanism=cfg.mechanism,
                               reset_grad_scale=cfg.reset_grad_scale)
        return s, (u,)


#: configurations every shared contract test runs (``tests/rules/test_stepfn.py``)
EXAMPLES = {
    "reset_term": ResetTerm(),
    "reset_term subtract atan k=.5": ResetTerm(mechanism="subtract", spike=surrogate.ATan(2.0),
                                               reset_grad_scale=0.5),
    "reset_term detach inclusive": ResetTerm(spike=surrogate.Sigmoid(0.3, inclusive=True),
                                             reset_grad_scale=0.0),
}
