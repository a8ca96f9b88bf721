"""spikegrad's snntorch neurons: subclasses of ``snntorch.Leaky`` wiring a rule to the host.

No equations here: each class maps the host's arguments to a rule of :mod:`spikegrad.rules`
and the per-step call to that rule's ``step``; the host idioms live in
:mod:`spikegrad.adapters.snntorch`. Names, defaults and outputs follow API.md.
"""

from __future__ import annotations

from typing import Any

import torch

from spikegrad._checks import check_choice, check_number, check_parameter
from spikegrad.adapters.silence import (
    BPSA_DEAD_FIX,
    BPSA_FIX,
    MULTISTRENGTH_FIX,
    MULTISTRENGTH_REASON,
    MULTISTRENGTH_SILENT,
    SilenceWatch,
    multistrength_window,
)
from spikegrad.adapters.snntorch import SpikegradLeaky
from spikegrad.rules import bpsta, multistrength, reset_term, surrogate

__all__ = ["ResetTermLeaky", "HTDGLIFLeaky", "MultiStrengthLeaky"]

_RULE_GRADIENT = "the rule defines the gradient itself"
_UNSUPPORTED = "not supported by this rule"


def _host_flags(
    surrogate_disable: bool, inhibition: bool, state_quant: Any
) -> dict[str, tuple[Any, Any, str]]:
    return {
        "surrogate_disable": (surrogate_disable, False, _RULE_GRADIENT),
        "inhibition": (inhibition, False, _UNSUPPORTED),
        "state_quant": (state_quant, False, _UNSUPPORTED),
    }


def _check_tau_s(tau_s: float | None) -> float | None:
    return None if tau_s is None else check_number("tau_s", tau_s, low=1.0)


def _exact(value: float) -> torch.Tensor:
    """A float64 buffer value, so that ``_on_load`` rebuilds the rule with the exact float."""
    return torch.tensor(value, dtype=torch.float64)


# The host's default ``spike_grad`` is ``snn.surrogate.atan()``, a closure that cannot be
# pickled; neurons whose rule defines the gradient itself hand the host this picklable
# equivalent instead (it is never called by them).
_UNUSED_SPIKE_GRAD = surrogate.ATan()


class ResetTermLeaky(SpikegradLeaky):
    """Leaky integrate-and-fire with the reset-term gradient (Yang 2020); see
    :mod:`spikegrad.rules.reset_term`.

    Spikes when ``mem > threshold``; ``mem`` is the pre-reset potential. With
    ``reset_grad="full"`` the gradient flows through the reset (the paper's rule); with
    ``"detach"`` the neuron equals ``snn.Leaky(reset_mechanism="zero",
    spike_grad=snn.surrogate.sigmoid(slope=1/0.3))`` (spikes, ``mem`` and gradients; with the
    default ``spike_grad`` the surrogates differ).

    Args:
        beta: membrane decay ``1 - 1/τm`` (clamped to ``[0, 1]`` as in the host).
        threshold: ``ϑ``.
        spike_grad: any snntorch surrogate; ``None`` means ``surrogate.Sigmoid(0.3)``.
        reset_mechanism: ``"zero"`` (default, the paper's) or ``"subtract"``.
        reset_grad: ``"full"`` (the reset term) or ``"detach"``.
        reset_grad_scale: factor ``k`` on the reset path (``"full"`` only).
        tau_s: if set (``>= 1``), the first output is the PSP trace ``a`` instead of spikes.

    The other arguments are ``snntorch.Leaky``'s (``surrogate_disable=True``: spikes without a
    gradient, as the host; ``graded_spikes_factor``/``learn_graded_spikes_factor``: a
    (learnable) scale of the output); ``inhibition``, ``state_quant`` and
    ``reset_delay=False`` raise.
    """

    def __init__(
        self,
        beta: float | torch.Tensor,
        threshold: float | torch.Tensor = 1.0,
        spike_grad: Any = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "zero",
        state_quant: Any = False,
        output: bool = False,
        graded_spikes_factor: float = 1.0,
        learn_graded_spikes_factor: bool = False,
        reset_delay: bool = True,
        *,
        reset_grad: str = "full",
        reset_grad_scale: float = 1.0,
        tau_s: float | None = None,
    ) -> None:
        check_parameter("beta", beta, unit=True)  # snntorch would clamp silently
        check_parameter("threshold", threshold, positive=True)
        check_choice("reset_mechanism", reset_mechanism, reset_term.MECHANISMS)
        check_choice("reset_grad", reset_grad, ("full", "detach"))
        scale = check_number("reset_grad_scale", reset_grad_scale)
        if reset_grad == "detach" and scale != 1.0:
            raise ValueError(
                "reset_grad_scale applies to reset_grad='full' only; with reset_grad='detach' "
                "leave it at 1.0 (reset_grad_scale=0 with 'full' equals 'detach')"
            )
        tau_s = _check_tau_s(tau_s)  # before the host registers this instance
        super().__init__(
            beta, threshold, spike_grad or surrogate.Sigmoid(temperature=0.3),
            surrogate_disable, init_hidden, False, learn_beta, learn_threshold, reset_mechanism,
            False, output, graded_spikes_factor, learn_graded_spikes_factor, True,
        )
        self.reset_grad = reset_grad
        self.reset_grad_scale = 0.0 if reset_grad == "detach" else scale
        self.tau_s = tau_s
        flags = _host_flags(False, inhibition, state_quant)
        del flags["surrogate_disable"]  # the host's: spikes without a gradient (inference)
        self._setup(flags, reset_delay)
        if self.tau_s is not None:
            self._add_state("trace")

    def _set_reset(self, reset_mechanism: str) -> None:
        check_choice("reset_mechanism", reset_mechanism, reset_term.MECHANISMS)  # no "none"

    def _step(self, input_: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spk, u = reset_term.step(
            input_, mem, beta=self.beta.clamp(0, 1), threshold=self.threshold,
            spike_fn=self.spike_grad, mechanism=self.reset_mechanism,
            reset_grad_scale=self.reset_grad_scale,
        )
        if self.tau_s is None:
            return spk, u
        self.trace = reset_term.trace_step(self.trace, spk, self.tau_s)
        return self.trace, u


class HTDGLIFLeaky(SpikegradLeaky):
    """The HTDGLIF node with BPSA/BPTA (Shen et al. 2022; BrainCog); see
    :mod:`spikegrad.rules.bpsta`.

    Spikes when ``mem >= threshold``; ``mem`` is the pre-reset potential ``h``.

    Args:
        beta: paper mode's decay ``λ`` (``None`` means 0.9); must stay ``None`` in braincog mode.
        threshold: ``θ > 0`` (0.5 as in the paper).
        reset_mechanism: ``"zero"`` only (the node resets to zero).
        mode: ``"paper"`` (binary spikes) or ``"braincog"`` (graded output ``h·H(h-θ)``).
        alpha: BPTA residual (backward only).
        dt: braincog mode's step (``None`` means 1.0); must stay ``None`` in paper mode.
        warm_up: if ``True`` the output is ``relu(input_)`` and the state is left alone.

    The other arguments are ``snntorch.Leaky``'s (``graded_spikes_factor`` /
    ``learn_graded_spikes_factor``: a (learnable) scale of the output, after the rule);
    ``spike_grad``, ``learn_beta``, ``learn_threshold`` and the flags of the host that do
    not apply raise at non-default values.
    """

    def __init__(
        self,
        beta: float | None = None,
        threshold: float = 0.5,
        spike_grad: Any = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "zero",
        state_quant: Any = False,
        output: bool = False,
        graded_spikes_factor: float = 1.0,
        learn_graded_spikes_factor: bool = False,
        reset_delay: bool = True,
        *,
        mode: str = "paper",
        alpha: float = 0.2,
        dt: float | None = None,
        warm_up: bool = False,
    ) -> None:
        rule = bpsta.HTDGLIF(mode=mode, threshold=threshold, decay=beta, alpha=alpha, dt=dt)
        super().__init__(
            _exact(1.0 if rule.decay is None else rule.decay), _exact(rule.threshold),
            _UNUSED_SPIKE_GRAD, False, init_hidden, False, False, False, "zero", False, output,
            graded_spikes_factor, learn_graded_spikes_factor, True,
        )
        self.rule = rule
        self.warm_up = bool(warm_up)
        flags = _host_flags(surrogate_disable, inhibition, state_quant)
        flags.update(
            spike_grad=(spike_grad, None, "BPSA defines the spike gradient (1/h at spikes)"),
            learn_beta=(learn_beta, False, _UNSUPPORTED),
            learn_threshold=(learn_threshold, False, _UNSUPPORTED),
            reset_mechanism=(reset_mechanism, "zero", "the HTDGLIF node resets to zero"),
        )
        self._setup(flags, reset_delay)
        self._silence = SilenceWatch(type(self).__name__, BPSA_FIX, BPSA_DEAD_FIX)

    def _step(self, input_: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.warm_up:
            return torch.relu(input_), mem
        out, mem = bpsta.step(input_, mem, self.rule)
        if self.training and input_.requires_grad and torch.is_grad_enabled():
            self._silence.observe(out)
        return out, mem

    def _on_reset(self) -> None:
        self._silence.boundary()  # a silent layer, or one with dead neurons, warns (once)

    def _on_load(self) -> None:
        decay = None if self.rule.mode == "braincog" else float(self.beta)
        self.rule = bpsta.HTDGLIF(
            mode=self.rule.mode, threshold=float(self.threshold), decay=decay,
            alpha=self.rule.alpha, dt=self.rule.dt,
        )


class MultiStrengthLeaky(SpikegradLeaky):
    """Integrate-and-fire with integer-valued (multi-strength) spikes (Chen et al. 2018); see
    :mod:`spikegrad.rules.multistrength`.

    The first output is the strength ``θ = floor(relu(h)/τ)`` (a float tensor of non-negative
    integers), spiking when ``h >= τ``; ``mem`` is the remainder ``v = h - τθ`` after the
    subtraction (the documented exception to the pre-reset rule).

    Args:
        beta: leak on the remainder (1.0: the paper's IF).
        threshold: ``τ > 0``.
        reset_mechanism: ``"subtract"`` only.
        max_strength: cap ``D`` on the strength (``None``: no cap).
        detach_reset: detach ``θ`` in the subtraction (default).

    The other arguments are ``snntorch.Leaky``'s (``graded_spikes_factor`` /
    ``learn_graded_spikes_factor``: a (learnable) scale of the strength output; ``mem`` is
    unscaled); ``spike_grad``, ``learn_beta``, ``learn_threshold`` and the host flags that
    do not apply raise at non-default values.
    """

    def __init__(
        self,
        beta: float = 1.0,
        threshold: float = 1.0,
        spike_grad: Any = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "subtract",
        state_quant: Any = False,
        output: bool = False,
        graded_spikes_factor: float = 1.0,
        learn_graded_spikes_factor: bool = False,
        reset_delay: bool = True,
        *,
        max_strength: int | None = None,
        detach_reset: bool = True,
    ) -> None:
        rule = multistrength.MultiStrength(
            threshold=threshold, beta=beta, max_strength=max_strength, detach_reset=detach_reset
        )
        super().__init__(
            _exact(rule.beta), _exact(rule.threshold), _UNUSED_SPIKE_GRAD, False, init_hidden,
            False, False, False, "subtract", False, output, graded_spikes_factor,
            learn_graded_spikes_factor, True,
        )
        self.rule = rule
        flags = _host_flags(surrogate_disable, inhibition, state_quant)
        flags.update(
            spike_grad=(spike_grad, None, "the strength uses a straight-through estimator"),
            learn_beta=(learn_beta, False, _UNSUPPORTED),
            learn_threshold=(learn_threshold, False, _UNSUPPORTED),
            reset_mechanism=(reset_mechanism, "subtract", "the reset subtracts τ·θ"),
        )
        self._setup(flags, reset_delay)
        self._dead = SilenceWatch(type(self).__name__, None, MULTISTRENGTH_FIX,
                                  reason=MULTISTRENGTH_REASON,
                                  narrow_silent=MULTISTRENGTH_SILENT)

    def _step(self, input_: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta, v = multistrength.step(input_, mem, self.rule)
        if self.training and input_.requires_grad and torch.is_grad_enabled():
            self._dead.observe(theta, False, multistrength_window(
                theta, v, self.rule.threshold, self.rule.max_strength))
        return theta, v

    def _on_reset(self) -> None:
        self._dead.boundary()  # neurons outside the gradient window for a long time warn (once)

    def _on_load(self) -> None:
        self.rule = multistrength.MultiStrength(
            threshold=float(self.threshold), beta=float(self.beta),
            max_strength=self.rule.max_strength, detach_reset=self.rule.detach_reset,
        )
