"""The reset-term rule's reference: the math in plain torch, the specification its operators
(:mod:`spikegrad.rules.reset_term.ops`) and fused kernels
(:mod:`spikegrad.rules.reset_term.triton`, :mod:`spikegrad.rules.reset_term.cupy`) are checked
against. The equations: :mod:`spikegrad.rules.reset_term`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from spikegrad._checks import check_choice, check_float_tensor, check_number, check_same
from spikegrad.rules.reset_term import ops
from spikegrad.rules.surrogate import Surrogate

__all__ = [
    "MECHANISMS",
    "reset",
    "step",
    "step_v",
    "forward",
    "SequenceFunction",
    "spikes_from_trace",
    "fused_applicable",
    "trace_step",
    "trace",
    "van_rossum_loss",
    "jacobian",
]

MECHANISMS = ("zero", "subtract")
SpikeFn = Callable[[torch.Tensor], torch.Tensor]
Scalar = float | torch.Tensor


def _scale_grad(s: torch.Tensor, k: float) -> torch.Tensor:
    """``s`` in value, ``k`` times its gradient (``k = 0`` detaches)."""
    if k == 1.0:
        return s
    if k == 0.0:
        return s.detach()
    return s.detach() + k * (s - s.detach())


def reset(
    u: torch.Tensor, s: torch.Tensor, *, threshold: Scalar, mechanism: str = "zero",
    reset_grad_scale: float = 1.0,
) -> torch.Tensor:
    """The post-reset state ``v`` from the pre-reset potential ``u`` and its spike ``s``.

    Shape:
        u, s: any shape (the same); output: the same.
    """
    check_choice("mechanism", mechanism, MECHANISMS)
    s_r = _scale_grad(s, reset_grad_scale)
    if mechanism == "zero":
        return u * (1.0 - s_r)
    return u - threshold * s_r


def step(
    c: torch.Tensor, u_prev: torch.Tensor, *, beta: Scalar, threshold: Scalar, spike_fn: SpikeFn,
    mechanism: str = "zero", reset_grad_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from the previous *pre-reset* potential (the state snntorch passes around).

    The previous spike is recomputed from ``u_prev`` (with the surrogate, so its reset gradient
    is exact), the reset applied, then the new potential integrated and thresholded.

    Args:
        c: input current ``c[t]``.
        u_prev: ``u[t-1]`` (zeros at the start of a window).
        beta: leak ``β`` (float or tensor, broadcast).
        threshold: ``ϑ``.
        spike_fn: ``x -> H(x)`` with a surrogate backward, e.g. ``surrogate.Sigmoid(0.3)``.
        mechanism: ``"zero"`` or ``"subtract"``.
        reset_grad_scale: ``k`` in the module docstring.

    Returns:
        ``(s[t], u[t])``.

    Shape:
        c, u_prev: ``[B, *]`` (any shape, the same); outputs: the same.
    """
    check_float_tensor("c", c)
    if reset_grad_scale == 0.0:
        with torch.no_grad():  # same convention at u == threshold as spike_fn (inclusive or not)
            s_prev = spike_fn(u_prev - threshold)
    else:
        s_prev = spike_fn(u_prev - threshold)
    v_prev = reset(u_prev, s_prev, threshold=threshold, mechanism=mechanism,
                   reset_grad_scale=reset_grad_scale)
    u = beta * v_prev + c
    return spike_fn(u - threshold), u


def forward(
    c: torch.Tensor, *, beta: Scalar, threshold: Scalar, spike_fn: SpikeFn,
    mechanism: str = "zero", reset_grad_scale: float = 1.0, v0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole sequence (the reference the neurons are tested against).

    Args:
        c: input currents, time-major.
        v0: initial post-reset state (zeros if ``None``).
        beta, threshold, spike_fn, mechanism, reset_grad_scale: as in :func:`step`.

    Returns:
        ``(s, u)``: spikes and pre-reset potentials.

    Shape:
        c: ``[T, B, *]``; outputs: ``[T, B, *]``.
    """
    check_float_tensor("c", c, min_dim=1)
    check_choice("mechanism", mechanism, MECHANISMS)
    v = torch.zeros_like(c[0]) if v0 is None else v0
    spikes, potentials = [], []
    for t in range(c.shape[0]):
        s, u, v = step_v(c[t], v, beta=beta, threshold=threshold, spike_fn=spike_fn,
                         mechanism=mechanism, reset_grad_scale=reset_grad_scale)
        spikes.append(s)
        potentials.append(u)
    return torch.stack(spikes), torch.stack(potentials)


def step_v(
    c: torch.Tensor, v_prev: torch.Tensor, *, beta: Scalar, threshold: Scalar,
    spike_fn: SpikeFn, mechanism: str = "zero", reset_grad_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step from the previous *post-reset* state (the state spikingjelly passes around).

    Returns:
        ``(s[t], u[t], v[t])``.

    Shape:
        c, v_prev: any shape (the same); outputs: the same.
    """
    u = beta * v_prev + c
    s = spike_fn(u - threshold)
    v = reset(u, s, threshold=threshold, mechanism=mechanism, reset_grad_scale=reset_grad_scale)
    return s, u, v


class SequenceFunction:
    """:func:`forward` as one differentiable call with the closed-form backward (fast path).

    ``SequenceFunction.apply(c, v0, beta, threshold, spike_fn, mechanism, reset_grad_scale)
    -> (s, v, u)``: spikes, post-reset states and (not differentiable) pre-reset potentials of
    the whole sequence for a spikegrad :class:`~spikegrad.rules.surrogate.Surrogate`; the
    backward pass is the recursion of the module docstring, run once over time instead of
    through one autograd node per operation. Same values and gradients as :func:`forward`.
    Runs the torch operator ``spikegrad::reset_term_forward`` (its registered autograd is
    ``spikegrad::reset_term_backward``) for Sigmoid/ATan; see :mod:`spikegrad.rules.reset_term.ops`.
    """

    @staticmethod
    def apply(c: torch.Tensor, v0: torch.Tensor, beta: float, threshold: float, spike_fn: Any,
              mechanism: str, reset_grad_scale: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return ops.reset_term_sequence(c, v0, beta, threshold, spike_fn, mechanism,
                                           reset_grad_scale)


def fused_applicable(spike_fn: Any, beta: Any, threshold: Any) -> bool:
    """Whether :class:`SequenceFunction` can run: a spikegrad surrogate, constant parameters."""
    return (isinstance(spike_fn, Surrogate) and spike_fn.spiking
            and not isinstance(beta, torch.Tensor) and not isinstance(threshold, torch.Tensor))


def trace_step(a_prev: torch.Tensor, s: torch.Tensor, tau_s: float) -> torch.Tensor:
    """``a[t] = (1 - 1/τs) a[t-1] + s[t]/τs`` (``τs = 1`` gives ``a = s``)."""
    return (1.0 - 1.0 / tau_s) * a_prev + s / tau_s


def trace(s: torch.Tensor, tau_s: float = 2.0, *, a0: torch.Tensor | None = None
          ) -> torch.Tensor:
    """The synaptic trace ``ε * s`` of a spike train (from ``a0``, zero by default).

    Shape:
        s: ``[T, B, *]``; a0: ``[B, *]``; output: ``[T, B, *]``.
    """
    check_float_tensor("s", s, min_dim=1)
    tau_s = check_number("tau_s", tau_s, low=1.0)
    a = torch.zeros_like(s[0]) if a0 is None else a0
    out = []
    for t in range(s.shape[0]):
        a = trace_step(a, s[t], tau_s)
        out.append(a)
    return torch.stack(out)


def spikes_from_trace(a: torch.Tensor, tau_s: float = 2.0) -> torch.Tensor:
    """Invert :func:`trace` from rest: ``s[t] = τs (a[t] - (1 - 1/τs) a[t-1])``, ``a[-1] = 0``.

    For reading the spikes back from a layer whose output is its trace (records, spike
    counts); no gradient is meant to flow through it.

    Shape:
        a: ``[T, B, *]``; output: ``[T, B, *]``.
    """
    check_float_tensor("a", a, min_dim=1)
    tau_s = check_number("tau_s", tau_s, low=1.0)
    prev = torch.cat([torch.zeros_like(a[:1]), a[:-1]])
    return tau_s * (a - (1.0 - 1.0 / tau_s) * prev)


def van_rossum_loss(
    spikes: torch.Tensor, target_spikes: torch.Tensor, *, tau_s: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Van Rossum distance ``½ Σ_t Σ_n ((ε*d)[t] - (ε*s)[t])²`` per sample, then reduced.

    Args:
        spikes: the network's output spikes ``s`` (or any signal to be filtered).
        target_spikes: the desired spike trains ``d``.
        tau_s: trace time constant (``>= 1``).
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (one value per sample).

    Shape:
        spikes, target_spikes: ``[T, B, *]``; output: scalar, or ``[B]`` for ``"none"``.
    """
    check_float_tensor("spikes", spikes, min_dim=2)
    check_float_tensor("target_spikes", target_spikes, min_dim=2)
    check_same("target_spikes", target_spikes, "spikes", spikes)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    diff = trace(target_spikes, tau_s) - trace(spikes, tau_s)
    per_sample = 0.5 * diff.pow(2).transpose(0, 1).reshape(spikes.shape[1], -1).sum(dim=1)
    if reduction == "none":
        return per_sample
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def jacobian(
    u: torch.Tensor, *, beta: Scalar, threshold: Scalar, surrogate_derivative: SpikeFn,
    mechanism: str = "zero", reset_grad_scale: float = 1.0,
) -> torch.Tensor:
    """Closed-form temporal Jacobian ``∂u[t+1]/∂u[t]`` (paper eq. 8), elementwise.

    Args:
        u: pre-reset potentials ``u[t]``.
        surrogate_derivative: ``x -> H'(x)``, e.g. ``surrogate.Sigmoid(0.3).derivative``.

    Shape:
        u: any shape; output: the same.
    """
    check_choice("mechanism", mechanism, MECHANISMS)
    dh = surrogate_derivative(u - threshold)
    if mechanism == "zero":
        s = (u > threshold).to(u.dtype)
        return beta * ((1.0 - s) - reset_grad_scale * u * dh)
    return beta * (1.0 - reset_grad_scale * threshold * dh)
