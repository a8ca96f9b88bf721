"""The multi-strength rule's reference: the math in plain torch, the specification its operators
(:mod:`spikegrad.rules.multistrength.ops`) and fused kernels
(:mod:`spikegrad.rules.multistrength.triton`, :mod:`spikegrad.rules.multistrength.cupy`) are
checked against. The equations: :mod:`spikegrad.rules.multistrength`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from spikegrad._checks import check_float_tensor, check_number
from spikegrad.rules import _oplib
from spikegrad.rules.multistrength import ops

__all__ = ["MultiStrength", "strength", "step", "operator_step", "reference_step",
           "forward"]


@dataclass(frozen=True)
class MultiStrength:
    """Hyperparameters, validated once.

    Args:
        threshold: ``τ > 0``, the charge of one unit of strength.
        beta: leak on the remainder, in ``[0, 1]`` (1.0: no leak, the paper's IF).
        max_strength: cap ``D`` (a positive integer) or ``None`` for no cap.
        detach_reset: detach ``θ`` in ``v = h - τθ`` (default ``True``).
    """

    threshold: float = 1.0
    beta: float = 1.0
    max_strength: int | None = None
    detach_reset: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "threshold", check_number("threshold", self.threshold, positive=True))
        set_(self, "beta", check_number("beta", self.beta, low=0.0, high=1.0))
        d = self.max_strength
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
            raise ValueError(f"max_strength must be a positive int or None, got {d!r}")
        if not isinstance(self.detach_reset, bool):
            raise TypeError(f"detach_reset must be a bool, got {self.detach_reset!r}")


class _FloorSTE(torch.autograd.Function):
    """``min(floor(relu(h)/τ), D)`` forward; ``1/τ`` on the window backward."""

    @staticmethod
    def forward(h: torch.Tensor, tau: float, cap: int | None) -> torch.Tensor:  # type: ignore[override]
        theta = torch.floor(torch.clamp(h, min=0.0) / tau)
        return theta if cap is None else torch.clamp(theta, max=float(cap))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        h, tau, cap = inputs
        ctx.save_for_backward(h)
        ctx.tau, ctx.cap = tau, cap

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (h,) = ctx.saved_tensors
        window = h >= 0
        if ctx.cap is not None:
            window = window & (h < ctx.tau * (ctx.cap + 1))
        return grad * window.to(h.dtype) / ctx.tau, None, None


def strength(h: torch.Tensor, cfg: MultiStrength) -> torch.Tensor:
    """The integer strength ``θ`` (a float tensor) with the straight-through backward."""
    return _FloorSTE.apply(h, cfg.threshold, cfg.max_strength)


def step(
    z: torch.Tensor, v_prev: torch.Tensor, cfg: MultiStrength
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from the previous remainder ``v[t-1]`` (zeros at a window's start).

    :func:`operator_step` while ``torch.compile`` traces, :func:`reference_step` eagerly
    (:func:`spikegrad.rules._oplib.step_path`).

    Returns:
        ``(θ[t], v[t])``: strength and remainder after subtraction.

    Shape:
        z, and the state: any shapes that broadcast; outputs: the broadcast shape.
    """
    return _oplib.step_path(operator_step, reference_step)(z, v_prev, cfg)


def operator_step(
    z: torch.Tensor, v_prev: torch.Tensor, cfg: MultiStrength
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from the previous remainder ``v[t-1]`` (zeros at a window's start).

    Runs the operator ``spikegrad::multistrength_forward`` on a one-step sequence (its
    registered autograd is the straight-through recursion), so a compiled per-step loop sees
    one opaque node per step; same values and gradients as :func:`reference_step`.

    Returns:
        ``(θ[t], v[t])``: strength and remainder after subtraction.

    Shape:
        z, v_prev: any shapes that broadcast; outputs: the broadcast shape.
    """
    check_float_tensor("z", z)
    theta, v, _ = _oplib.one_step(ops.multistrength_sequence, z, v_prev, cfg.threshold,
                                   cfg.beta, cfg.max_strength, cfg.detach_reset)
    return theta, v


def reference_step(
    z: torch.Tensor, v_prev: torch.Tensor, cfg: MultiStrength
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`step` written out in torch with :func:`strength`'s autograd function (the eager
    path, and the reference the operators are tested against)."""
    check_float_tensor("z", z)
    h = v_prev + z if cfg.beta == 1.0 else cfg.beta * v_prev + z
    theta = strength(h, cfg)
    emitted = theta.detach() if cfg.detach_reset else theta
    return theta, h - cfg.threshold * emitted


def forward(
    z: torch.Tensor, cfg: MultiStrength, *, v0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole sequence, fused: the torch operator ``spikegrad::multistrength_forward`` (its
    registered autograd, ``spikegrad::multistrength_backward``, is the straight-through
    recursion; same values and gradients as repeated :func:`step`; see
    :mod:`spikegrad.rules.multistrength.ops`).

    Returns:
        ``(θ, v)``: strengths and remainders.

    Shape:
        z: ``[T, B, *]``; outputs: ``[T, B, *]``.
    """
    check_float_tensor("z", z, min_dim=1)
    v = torch.zeros_like(z[0]) if v0 is None else v0
    theta, rem, _ = ops.multistrength_sequence(z, v, cfg.threshold, cfg.beta,
                                                   cfg.max_strength, cfg.detach_reset)
    return theta, rem
