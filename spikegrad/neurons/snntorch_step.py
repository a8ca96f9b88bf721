"""A user's step rule as an snntorch neuron: ``neurons.Leaky(rule)``.

The rule's step is the per-step call and its first state is ``mem``; the other states live on
the neuron under the rule's names and are reset with ``mem``. A whole sequence runs the
kernels generated from the step (:mod:`spikegrad.rules.stepfn`) where they can run.
"""

from __future__ import annotations

import torch

from spikegrad.adapters.snntorch import SpikegradLeaky
from spikegrad.neurons.snntorch import _UNUSED_SPIKE_GRAD, _exact
from spikegrad.rules import stepfn

__all__ = ["Leaky"]


class Leaky(SpikegradLeaky):
    """snntorch neuron running a :class:`~spikegrad.rules.stepfn.StepRule`.

    ``spk, mem = lif(cur, mem)`` is one ``rule.step``; ``mem`` is the rule's first state
    (the others live on the neuron, reset with ``mem``). :meth:`sequence` runs a whole
    ``[T, B, *]`` sequence from rest through the generated kernels (Triton on CUDA) or the
    step's loop, with the same values and gradients.

    Args:
        rule: the step rule (its hyperparameters are its fields).
        init_hidden, output, graded_spikes_factor, learn_graded_spikes_factor: as
            ``snntorch.Leaky``.
        implementation: ``"auto"``, ``"torch"`` or ``"triton"`` for :meth:`sequence`.
    """

    def __init__(self, rule: stepfn.StepRule, init_hidden: bool = False,
                 output: bool = False, graded_spikes_factor: float = 1.0,
                 learn_graded_spikes_factor: bool = False, *,
                 implementation: str = "auto") -> None:
        rule = stepfn.check_rule(rule)
        if implementation not in stepfn.IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {stepfn.IMPLEMENTATIONS}, "
                             f"got {implementation!r}")
        if implementation == "triton":  # an operation the generator lacks is named now
            stepfn.trace(rule)
        super().__init__(_exact(1.0), _exact(1.0), _UNUSED_SPIKE_GRAD, False, init_hidden,
                         False, False, False, "none", False, output,
                         graded_spikes_factor, learn_graded_spikes_factor, True)
        self.rule = rule
        self.implementation = implementation
        self._setup({}, True)
        for name in rule.states[1:]:
            self._add_state(name)

    def _set_reset(self, reset_mechanism: str) -> None:
        raise ValueError(f"Leaky({self.rule.name}) has no reset_mechanism: the rule's "
                         "step defines its reset")

    def _step(self, input_: torch.Tensor, mem: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        extra = tuple(getattr(self, n) for n in self.rule.states[1:])
        out, new = self.rule.step(input_, (mem, *extra), self.rule)
        new = tuple(new)
        for name, value in zip(self.rule.states[1:], new[1:], strict=True):
            setattr(self, name, value)
        return out, new[0]

    def sequence(self, input_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole sequence from rest: ``(out_seq, mem)`` with ``mem`` the rule's first
        state after the last step (the neuron keeps the final states)."""
        out, final = stepfn.sequence(self.rule, input_seq,
                                     implementation=self.implementation)
        self.mem = final[0]
        for name, value in zip(self.rule.states[1:], final[1:], strict=True):
            setattr(self, name, value)
        return out * self.graded_spikes_factor, final[0]

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}"
