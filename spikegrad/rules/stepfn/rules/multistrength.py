"""Multi-strength spikes as a step rule (its step is
:func:`spikegrad.rules.multistrength.reference_step`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from spikegrad.rules import multistrength
from spikegrad.rules.stepfn.contract import StepRule

__all__ = ["MultiStrength", "EXAMPLES"]


@dataclasses.dataclass(frozen=True)
class MultiStrength(StepRule):
    """Multi-strength spikes (state: the remainder ``v``; output: the integer strength)."""

    config: multistrength.MultiStrength = multistrength.MultiStrength()
    states = ("v",)

    @staticmethod
    def step(x: torch.Tensor, state: tuple[torch.Tensor, ...], cfg: Any
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        theta, v = multistrength.reference_step(x, state[0], cfg.config)
        return theta, (v,)


#: configurations every shared contract test runs (``tests/rules/test_stepfn.py``)
EXAMPLES = {
    "multistrength": MultiStrength(),
    "multistrength capped": MultiStrength(multistrength.MultiStrength(
        max_strength=2, detach_reset=False, threshold=0.7)),
}
