"""The BPSA/BPTA (HTDGLIF) rule's reference: the math in plain torch, the specification its
operators (:mod:`spikegrad.rules.bpsta.ops`) and fused kernels
(:mod:`spikegrad.rules.bpsta.triton`, :mod:`spikegrad.rules.bpsta.cupy`) are checked against.
The equations: :mod:`spikegrad.rules.bpsta`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spikegrad._checks import check_choice, check_float_tensor, check_number
from spikegrad.rules import _oplib
from spikegrad.rules.bpsta import ops

__all__ = ["MODES", "HTDGLIF", "spike", "reset", "integrate", "step", "step_v", "operator_step",
           "reference_step", "reference_step_v", "forward"]

MODES = ("paper", "braincog")


@dataclass(frozen=True)
class HTDGLIF:
    """Hyperparameters of the HTDGLIF node, validated once.

    Args:
        mode: ``"paper"`` (binary spikes, BPSA ``1/h``) or ``"braincog"`` (graded output).
        threshold: ``θ > 0`` (BPSA divides by ``h >= θ``).
        decay: paper mode's ``λ`` in ``[0, 1]`` (``None`` means 0.9); must be ``None`` in
            braincog mode, which has no leak.
        alpha: the BPTA residual ``α`` (backward only).
        dt: braincog mode's step (``None`` means 1.0); must be ``None`` in paper mode.
    """

    mode: str = "paper"
    threshold: float = 0.5
    decay: float | None = None
    alpha: float = 0.2
    dt: float | None = None

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        set_ = object.__setattr__
        set_(self, "threshold", check_number("threshold", self.threshold, positive=True))
        set_(self, "alpha", check_number("alpha", self.alpha))
        if self.mode == "paper":
            if self.dt is not None:
                raise ValueError("dt applies to mode='braincog' only; leave dt=None in paper mode")
            decay = 0.9 if self.decay is None else self.decay
            set_(self, "decay", check_number("decay (beta)", decay, low=0.0, high=1.0))
        else:
            if self.decay is not None:
                raise ValueError(
                    "mode='braincog' has no leak (BrainCog's HTDGLIFNode ignores tau); "
                    "leave decay/beta=None, or use mode='paper'"
                )
            dt = 1.0 if self.dt is None else self.dt
            set_(self, "dt", check_number("dt", dt, positive=True))


class _BPSASpike(torch.autograd.Function):
    """``H(h - θ)`` (inclusive) forward; ``o / h`` backward."""

    @staticmethod
    def forward(h: torch.Tensor, threshold: float) -> torch.Tensor:  # type: ignore[override]
        return (h >= threshold).to(h.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0], output)
        ctx.threshold = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        h, o = ctx.saved_tensors
        # o/h where it fired (h >= θ > 0), else 0 (the clamp only moves where o = 0)
        return grad * (o / h.clamp_min(ctx.threshold)), None


class _BPTAReset(torch.autograd.Function):
    """``h (1 - o)`` forward; ``(1 - o) + α o / h`` backward."""

    @staticmethod
    def forward(h: torch.Tensor, threshold: float, alpha: float) -> torch.Tensor:  # type: ignore[override]
        # where(h >= θ, 0, h) as arithmetic (a CPU torch.where is several times slower)
        return h * (1.0 - (h >= threshold).to(h.dtype))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        h, threshold, alpha = inputs
        ctx.save_for_backward(h)
        ctx.threshold, ctx.alpha = threshold, alpha

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (h,) = ctx.saved_tensors
        fired = (h >= ctx.threshold).to(h.dtype)
        # α/h where it fired (h >= θ > 0), else 1; the clamp only moves the potentials that
        # did not fire (multiplied by 0), so the division stays finite
        local = torch.add(1.0 - fired, fired / h.clamp_min(ctx.threshold), alpha=ctx.alpha)
        return grad * local, None, None


def spike(h: torch.Tensor, cfg: HTDGLIF) -> torch.Tensor:
    """The node's output from the pre-reset potential ``h`` (binary or graded, by mode)."""
    if cfg.mode == "paper":
        return _BPSASpike.apply(h, cfg.threshold)
    return h * (h >= cfg.threshold).to(h.dtype)


def reset(h: torch.Tensor, cfg: HTDGLIF) -> torch.Tensor:
    """The post-reset state ``v`` (BPTA residual in the backward; ``dt``-scaled in braincog)."""
    if cfg.mode == "paper":
        return _BPTAReset.apply(h, cfg.threshold, cfg.alpha)
    fired = (h >= cfg.threshold).to(h.dtype)
    o = h * fired
    return (h * (1.0 - fired) + cfg.alpha * (o - o.detach())) * cfg.dt


def integrate(v_prev: torch.Tensor, x: torch.Tensor, cfg: HTDGLIF) -> torch.Tensor:
    """``h[t]`` from the post-reset state and the (not yet rectified) input."""
    if cfg.mode == "paper":
        return cfg.decay * v_prev + F.relu(x)
    return v_prev + cfg.dt * F.relu(x)


def step(
    x: torch.Tensor, h_prev: torch.Tensor, cfg: HTDGLIF
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from the previous pre-reset potential (zeros at a window's start).

    :func:`operator_step` while ``torch.compile`` traces, :func:`reference_step` eagerly
    (:func:`spikegrad.rules._oplib.step_path`).

    Returns:
        ``(o[t], h[t])``.

    Shape:
        x, and the state: any shapes that broadcast; outputs: the broadcast shape.
    """
    return _oplib.step_path(operator_step, reference_step)(x, h_prev, cfg)


def operator_step(
    x: torch.Tensor, h_prev: torch.Tensor, cfg: HTDGLIF
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from the previous pre-reset potential (zeros at a window's start).

    The reset of ``h_prev`` (BPTA) runs here; the step itself is the operator
    ``spikegrad::bpsta_forward`` on a one-step sequence (its registered autograd is the
    BPSA/BPTA recursion), so a compiled per-step loop sees one opaque node per step; same
    values and gradients as :func:`reference_step`.

    Returns:
        ``(o[t], h[t])``.

    Shape:
        x, h_prev: any shapes that broadcast; outputs: the broadcast shape.
    """
    check_float_tensor("x", x)
    o, _, h = _one_step(x, reset(h_prev, cfg), cfg)
    return o, h


def reference_step(
    x: torch.Tensor, h_prev: torch.Tensor, cfg: HTDGLIF
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`step` written out with :func:`integrate`, :func:`reset` and :func:`spike` (the
    eager path, and the reference the operators are tested against)."""
    check_float_tensor("x", x)
    h = integrate(reset(h_prev, cfg), x, cfg)
    return spike(h, cfg), h


def _one_step(x: torch.Tensor, v_prev: torch.Tensor, cfg: HTDGLIF
              ) -> tuple[torch.Tensor, ...]:
    return _oplib.one_step(ops.bpsta_sequence, x, v_prev, cfg.mode, cfg.threshold,
                            cfg.decay, cfg.alpha, cfg.dt)


def forward(
    x: torch.Tensor, cfg: HTDGLIF, *, v0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole sequence, fused: the torch operator ``spikegrad::bpsta_forward`` (its
    registered autograd, ``spikegrad::bpsta_backward``, is the BPSA/BPTA recursion; same values
    and gradients as repeated :func:`step_v`; see :mod:`spikegrad.rules.bpsta.ops`).

    Returns:
        ``(o, h)``: outputs and pre-reset potentials.

    Shape:
        x: ``[T, B, *]``; outputs: ``[T, B, *]``.
    """
    check_float_tensor("x", x, min_dim=1)
    v = torch.zeros_like(x[0]) if v0 is None else v0
    o, _, h = ops.bpsta_sequence(x, v, cfg.mode, cfg.threshold, cfg.decay, cfg.alpha,
                                     cfg.dt)
    return o, h


def step_v(
    x: torch.Tensor, v_prev: torch.Tensor, cfg: HTDGLIF
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step from the previous *post-reset* state (the state spikingjelly passes around);
    written out eager, the operator while ``torch.compile`` traces, as :func:`step`.

    Returns:
        ``(o[t], h[t], v[t])``.
    """
    check_float_tensor("x", x)
    return _oplib.step_path(_operator_step_v, reference_step_v)(x, v_prev, cfg)


def _operator_step_v(x: torch.Tensor, v_prev: torch.Tensor, cfg: HTDGLIF
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    o, v, h = _one_step(x, v_prev, cfg)
    return o, h, v


def reference_step_v(
    x: torch.Tensor, v_prev: torch.Tensor, cfg: HTDGLIF
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`step_v` written out (the eager path and the reference)."""
    h = integrate(v_prev, x, cfg)
    return spike(h, cfg), h, reset(h, cfg)
