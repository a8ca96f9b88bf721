"""The reset-term rule's parameters for the fused kernels (Triton and CuPy), without importing
either: the reset-term rule has no configuration object of its own."""

from __future__ import annotations

import math
from dataclasses import dataclass

from spikegrad._checks import check_choice, check_number
from spikegrad.rules.reset_term.reference import MECHANISMS
from spikegrad.rules.surrogate import ATan, Sigmoid, Surrogate
from spikegrad.rules.triton_kernels.spec import ATAN, SIGMOID, f32, f32_div

__all__ = ["ResetTermSpec", "reset_term_spec"]


@dataclass(frozen=True)
class ResetTermSpec:
    """The reset-term rule's parameters for the fused kernels (validated once).

    Args:
        beta: leak ``β`` of ``u[t] = β v[t-1] + c[t]``.
        threshold: ``ϑ``.
        surrogate: a spikegrad :class:`~spikegrad.rules.surrogate.Sigmoid` or
            :class:`~spikegrad.rules.surrogate.ATan` (``spiking=True``); its ``inclusive`` flag
            is the spike convention (``u >= ϑ`` when set, else ``u > ϑ``).
        mechanism: ``"zero"`` or ``"subtract"``.
        reset_grad_scale: ``k`` of :mod:`spikegrad.rules.reset_term` (0 detaches the reset).
        tau_s: the trace time constant (the output is the trace ``a``), or ``None`` (spikes).
    """

    beta: float
    threshold: float
    surrogate: Surrogate
    mechanism: str = "zero"
    reset_grad_scale: float = 1.0
    tau_s: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "beta", check_number("beta", self.beta))
        set_(self, "threshold", check_number("threshold", self.threshold))
        set_(self, "reset_grad_scale", check_number("reset_grad_scale", self.reset_grad_scale))
        check_choice("mechanism", self.mechanism, MECHANISMS)
        if self.tau_s is not None:
            set_(self, "tau_s", check_number("tau_s", self.tau_s, low=1.0))
        if type(self.surrogate) not in (Sigmoid, ATan) or not self.surrogate.spiking:
            raise ValueError(
                f"the Triton kernels know spikegrad's Sigmoid and ATan surrogates "
                f"(spiking=True), got {self.surrogate!r}; use the torch reference for others"
            )

    @property
    def surrogate_args(self) -> tuple[int, float, float]:
        """``(kind, a, b)``: Sigmoid ``(T, 1/T)``; ATan ``(α/2, πα/2)`` (float32 values)."""
        s = self.surrogate
        if isinstance(s, Sigmoid):
            return SIGMOID, f32(s.temperature), f32_div(1.0, s.temperature)
        return ATAN, f32(s.alpha / 2), f32(math.pi / 2 * s.alpha)


def reset_term_spec(beta: float, threshold: float, surrogate: Surrogate, mechanism: str,
                    reset_grad_scale: float, tau_s: float | None) -> ResetTermSpec:
    """A :class:`ResetTermSpec` (the signature of :func:`spikegrad.rules.reset_term.cupy.spec`)."""
    return ResetTermSpec(beta, threshold, surrogate, mechanism, reset_grad_scale, tau_s)
