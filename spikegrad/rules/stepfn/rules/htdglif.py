"""BPSA/BPTA with the HTDGLIF node as a step rule, both modes (its step is
:func:`spikegrad.rules.bpsta.reference_step_v`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from spikegrad.rules import bpsta
from spikegrad.rules.stepfn.contract import StepRule

__all__ = ["HTDGLIF", "EXAMPLES"]


@dataclasses.dataclass(frozen=True)
class HTDGLIF(StepRule):
    """BPSA/BPTA with the HTDGLIF node, both modes (state: the post-reset ``v``)."""

    config: bpsta.HTDGLIF = bpsta.HTDGLIF()
    states = ("v",)

    @staticmethod
    def step(x: torch.Tensor, state: tuple[torch.Tensor, ...], cfg: Any
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        o, _h, v = bpsta.reference_step_v(x, state[0], cfg.config)
        return o, (v,)


#: configurations every shared contract test runs (``tests/rules/test_stepfn.py``)
EXAMPLES = {
    "htdglif paper": HTDGLIF(),
    "htdglif braincog": HTDGLIF(bpsta.HTDGLIF(mode="braincog", dt=0.5, alpha=0.3)),
}
