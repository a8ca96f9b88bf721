"""A neuron of your own, written once as a torch step: LIF with a spike-driven threshold.

The rule is a frozen dataclass (its fields are the hyperparameters) with one elementwise
``step``; spikegrad makes it a neuron of either host (``neurons.Leaky(rule)`` for snntorch,
``neurons.Node(rule)`` for spikingjelly) and fuses whole sequences into generated kernels.
"""

import dataclasses

from spikegrad.rules import stepfn, surrogate


@dataclasses.dataclass(frozen=True)
class AdaptiveLIF(stepfn.StepRule):
    beta: float = 0.95       # membrane leak
    rho: float = 0.9         # threshold adaptation decay
    gain: float = 1.8        # threshold rise per spike
    spike: surrogate.Surrogate = surrogate.ATan(2.0)
    states = ("v", "b")      # membrane potential, adaptation

    @staticmethod
    def step(x, state, cfg):
        v, b = state
        u = cfg.beta * v + x
        threshold = 1.0 + cfg.gain * b
        s = cfg.spike(u - threshold)
        return s, (u - s * threshold, cfg.rho * b + (1 - cfg.rho) * s)
