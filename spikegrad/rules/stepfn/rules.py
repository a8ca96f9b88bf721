"""spikegrad's own LIF-family rules written as step rules.

Each step *is* the rule's reference step (:func:`spikegrad.rules.reset_term.step`,
:func:`spikegrad.rules.bpsta.reference_step_v`,
:func:`spikegrad.rules.multistrength.reference_step`), so the generated kernels derive from the
specification itself and are tested against it and against the hand-written kernels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from spikegrad.rules import bpsta, multistrength, reset_term, surrogate
from spikegrad.rules.stepfn.contract import StepRule

__all__ = ["ResetTerm", "HTDGLIF", "MultiStrength"]


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
