"""The step-function contract: a rule written once, as one time step in torch.

A rule of the LIF family is a frozen dataclass of its hyperparameters (numbers, booleans,
strings, or a spike function) that subclasses :class:`StepRule`, names its state tensors in
:attr:`StepRule.states`, and defines one pure step::

    @dataclasses.dataclass(frozen=True)
    class AdaptiveLIF(StepRule):
        beta: float = 0.9
        rho: float = 0.95
        spike: Surrogate = surrogate.ATan(2.0)
        states = ("v", "b")

        @staticmethod
        def step(x, state, cfg):
            v, b = state
            u = cfg.beta * v + x
            threshold = 1.0 + 1.8 * b
            s = cfg.spike(u - threshold)
            return s, (u - s * threshold, cfg.rho * b + (1 - cfg.rho) * s)

``step(x_t, state, cfg) -> (out_t, new_state)`` takes one time step of the input (any shape)
and the tuple of states (same shape), and uses only elementwise torch operations and the
spike function: any spikegrad surrogate, any elementwise snntorch or spikingjelly surrogate,
or an ``autograd.Function`` whose forward and backward are elementwise. Everything else a
sequence needs (the time loop, the backward pass through time, fused kernels, the neurons of
both hosts) is built from this step by :mod:`spikegrad.rules.stepfn`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

__all__ = ["StepRule", "check_rule", "reference_sequence"]


@dataclasses.dataclass(frozen=True)
class StepRule:
    """Base class of a rule written as one step (see the module docstring).

    Subclasses are frozen dataclasses; :attr:`states` names the state tensors in the order
    :meth:`step` takes and returns them. The initial state is zeros unless a subclass overrides
    :meth:`initial_state`.
    """

    #: names of the state tensors, in the order ``step`` takes and returns them
    states: ClassVar[tuple[str, ...]] = ("v",)

    @staticmethod
    def step(x: torch.Tensor, state: tuple[torch.Tensor, ...], cfg: Any
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One time step: ``(out_t, new_state)``; pure and elementwise."""
        raise NotImplementedError("a StepRule subclass defines step(x, state, cfg)")

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The state at rest for one step's input ``x`` (zeros)."""
        return tuple(torch.zeros_like(x) for _ in self.states)

    @property
    def name(self) -> str:
        """The rule's class name (used in messages and kernel names)."""
        return type(self).__name__


def check_rule(rule: Any) -> StepRule:
    """``rule`` itself if it follows the contract, else a ``TypeError`` that says what is
    missing."""
    if not isinstance(rule, StepRule):
        raise TypeError(f"rule must be a StepRule (a frozen dataclass with states and a step), "
                        f"got {type(rule).__name__}")
    if not dataclasses.is_dataclass(rule) or not type(rule).__dataclass_params__.frozen:
        raise TypeError(f"{rule.name} must be a frozen dataclass: decorate it with "
                        "@dataclasses.dataclass(frozen=True)")
    if type(rule).step is StepRule.step:
        raise TypeError(f"{rule.name} defines no step(x, state, cfg)")
    states = type(rule).states
    if (not isinstance(states, tuple) or not states
            or not all(isinstance(s, str) and s.isidentifier() for s in states)
            or len(set(states)) != len(states)):
        raise TypeError(f"{rule.name}.states must be a non-empty tuple of distinct names, "
                        f"got {states!r}")
    try:
        hash(rule)
    except TypeError as e:
        raise TypeError(f"{rule.name}'s hyperparameters must be hashable ({e})") from None
    return rule


def reference_sequence(rule: StepRule, x: torch.Tensor,
                       state: tuple[torch.Tensor, ...] | None = None
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The whole sequence ``x`` (``[T, *]``) by the step itself, in a Python loop (autograd
    through every step): ``(out [T, *], final states)``. The specification the generated
    kernels are tested against, and the path every rule has."""
    state = rule.initial_state(x[0]) if state is None else tuple(state)
    if len(state) != len(rule.states):
        raise ValueError(f"{rule.name} has {len(rule.states)} states {rule.states}, "
                         f"got {len(state)}")
    outs = []
    for t in range(x.shape[0]):
        out, state = rule.step(x[t], state, rule)
        state = tuple(state)
        outs.append(out)
    return torch.stack(outs), state
