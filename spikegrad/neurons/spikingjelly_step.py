"""A user's step rule as a spikingjelly node: ``neurons.Node(rule)``.

The rule's step is one single-step call and its first state is ``v``; the other states are
memories of the node under the rule's names (``functional.reset_net`` resets them). In
multi-step mode the whole sequence runs the kernels generated from the step
(:mod:`spikegrad.rules.stepfn`) where they can run.
"""

from __future__ import annotations

from typing import Any

import torch

from spikegrad.adapters.spikingjelly import SpikegradNode
from spikegrad.rules import stepfn, surrogate

__all__ = ["Node"]


class Node(SpikegradNode):
    """spikingjelly node running a :class:`~spikegrad.rules.stepfn.StepRule`.

    One step is ``rule.step``; ``v`` is the rule's first state, the others are memories of
    the node under the rule's names (``functional.reset_net`` resets them all). In
    multi-step mode the whole sequence runs the generated kernels (Triton on CUDA) or the
    step's loop (``implementation``), with the same values and gradients.

    Args:
        rule: the step rule.
        step_mode, store_v_seq: as the host's nodes.
        implementation: ``"auto"``, ``"torch"``, ``"triton"`` or ``"cupy"`` (the generated
            CUDA C through CuPy, CUDA tensors) in multi-step mode.
    """

    def __init__(self, rule: stepfn.StepRule, step_mode: str = "s",
                 store_v_seq: bool = False, *, implementation: str = "auto") -> None:
        rule = stepfn.check_rule(rule)
        if implementation not in stepfn.IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {stepfn.IMPLEMENTATIONS}, "
                             f"got {implementation!r}")
        if implementation == "triton":  # an operation the generator lacks is named now
            stepfn.trace(rule)
        self._extra_states = tuple(rule.states[1:])
        self._init_node(v_threshold=1.0, v_reset=None, surrogate_function=surrogate.ATan(),
                        detach_reset=False, step_mode=step_mode, backend="torch",
                        store_v_seq=store_v_seq)
        self.rule = rule
        self.step_implementation = implementation
        self._finish_init()

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}, step_mode={self.step_mode}"

    def _step(self, x: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
              ) -> tuple[torch.Tensor, ...]:
        out, new = self.rule.step(x, (v, *extra), self.rule)
        return (out, *tuple(new))

    def _multi(self, x_seq: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
               ) -> tuple[torch.Tensor, Any, tuple[torch.Tensor, ...]]:
        if self.store_v_seq:  # every step's v: the step's loop records it
            return super()._multi(x_seq, v, *extra)
        out, final = stepfn.sequence(self.rule, x_seq, (v, *extra),
                                     implementation=self.step_implementation)
        return out, None, final
