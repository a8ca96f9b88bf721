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
from spikegrad.rules.stepfn import cuda_gen

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
        backend: the host's switch, as on spikegrad's own nodes: ``"torch"`` (default: the
            node's own path, which ``implementation`` chooses: by default the generated Triton
            kernels on CUDA, without the first-use probe and fall-back of the other values),
            ``"cupy"`` (the generated CUDA C through CuPy), ``"triton"`` (the generated Triton
            kernels) or ``"auto"`` (Triton, then CuPy, where they run; else the node's own
            path), multi-step mode; an explicit ``"cupy"``/``"triton"`` that cannot run
            raises, naming why. With
            ``store_v_seq=True`` the generated kernels do not apply (they return the final
            states, not every step's ``v``).
        implementation: what the node's own path (``backend="torch"``) runs: ``"auto"``
            (the generated Triton kernels on CUDA, else the step's loop), ``"torch"``,
            ``"triton"`` or ``"cupy"``.
    """

    def __init__(self, rule: stepfn.StepRule, step_mode: str = "s",
                 store_v_seq: bool = False, *, backend: str = "torch",
                 implementation: str = "auto") -> None:
        rule = stepfn.check_rule(rule)
        if implementation not in stepfn.IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {stepfn.IMPLEMENTATIONS}, "
                             f"got {implementation!r}")
        if implementation == "triton":  # an operation the generator lacks is named now
            stepfn.trace(rule)
        self._extra_states = tuple(rule.states[1:])
        self._init_node(v_threshold=1.0, v_reset=None, surrogate_function=surrogate.ATan(),
                        detach_reset=False, step_mode=step_mode, backend=backend,
                        store_v_seq=store_v_seq)
        self.rule = rule
        self.step_implementation = implementation
        self._finish_init()

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}, step_mode={self.step_mode}, backend={self.backend}"

    def _step(self, x: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
              ) -> tuple[torch.Tensor, ...]:
        out, new = self.rule.step(x, (v, *extra), self.rule)
        return (out, *tuple(new))

    def _generated(self, family: str) -> stepfn.GeneratedKernel | str:
        if self.store_v_seq:
            return ("store_v_seq=True records every step's v, and the generated kernels return "
                    "only the final states")
        return stepfn.kernel(self.rule, family)

    def _cupy_kernel(self) -> stepfn.GeneratedKernel | str:
        return self._generated("cupy")

    def _triton_kernel(self) -> stepfn.GeneratedKernel | str:
        return self._generated("triton")

    def _multi_cupy(self, x_seq: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
                    ) -> tuple[torch.Tensor, Any, tuple[torch.Tensor, ...]]:
        out, final = cuda_gen.sequence(self.rule, x_seq, (v, *extra))
        return out, None, final

    def _multi_triton(self, x_seq: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
                      ) -> tuple[torch.Tensor, Any, tuple[torch.Tensor, ...]]:
        out, final = stepfn.sequence(self.rule, x_seq, (v, *extra), implementation="triton")
        return out, None, final

    def _multi(self, x_seq: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
               ) -> tuple[torch.Tensor, Any, tuple[torch.Tensor, ...]]:
        if self.store_v_seq:  # every step's v: the step's loop records it
            return super()._multi(x_seq, v, *extra)
        out, final = stepfn.sequence(self.rule, x_seq, (v, *extra),
                                     implementation=self.step_implementation)
        return out, None, final
