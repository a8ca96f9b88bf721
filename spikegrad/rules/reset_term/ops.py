"""The reset-term rule's whole-sequence torch operators.

``spikegrad::reset_term_forward(c, v0, beta, threshold, surrogate, surrogate_param, inclusive,
mechanism, reset_grad_scale) -> (s, v, u)`` and ``spikegrad::reset_term_backward``: the
closed-form recursion of :mod:`spikegrad.rules.reset_term` (``u``, the pre-reset potential, is
not differentiable); ``surrogate`` is ``"Sigmoid"`` (``surrogate_param`` the temperature) or
``"ATan"`` (alpha). A spikegrad surrogate other than these two (a user's subclass, which an
operator cannot take) runs the same loops in an ``autograd.Function``. Any float dtype, any
device (the bodies are plain torch).
"""

from typing import Any

import torch

from spikegrad.rules import _oplib
from spikegrad.rules._oplib import make_surrogate, stack_steps, step_of, surrogate_args
from spikegrad.rules.surrogate import Surrogate, heaviside

__all__ = ["BODIES", "reset_term_sequence"]

#: the torch bodies of the operators defined here, by operator name; plain functions, so that
#: tests run them on ``meta`` tensors, where the dispatcher would call the fake implementations
BODIES: dict[str, Any] = {}
_op = _oplib.registrar(BODIES)


def _rt_forward_loop(c: torch.Tensor, v0: torch.Tensor, beta: float, threshold: float,
                     inclusive: bool, mechanism: str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v, spikes, states, potentials = v0, [], [], []
    for t in range(c.shape[0]):
        u = beta * v + c[t]
        s = heaviside(u - threshold, inclusive=inclusive)
        v = u * (1.0 - s) if mechanism == "zero" else u - threshold * s
        spikes.append(s)
        states.append(v)
        potentials.append(u)
    if not spikes:
        return torch.empty_like(c), torch.empty_like(c), torch.empty_like(c)
    return stack_steps(spikes), stack_steps(states), stack_steps(potentials)


def _rt_backward_loop(g_s: torch.Tensor | None, g_v: torch.Tensor | None, s: torch.Tensor,
                      u: torch.Tensor, beta: float, threshold: float, derivative: Any,
                      mechanism: str, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    grad_c = torch.empty_like(u)
    dv = None  # dL/dv[t], accumulated from the future; one time step at a time (cache-sized)
    for t in range(u.shape[0] - 1, -1, -1):
        if g_v is not None:
            dv = g_v[t] if dv is None else dv + g_v[t]
        dh = derivative(u[t] - threshold)
        du = grad_c[t]
        if g_s is not None:
            torch.mul(g_s[t], dh, out=du)
        else:
            du.zero_()
        if dv is not None:
            if mechanism == "zero":
                dv_du = (1.0 - s[t]).sub_(dh.mul_(u[t]), alpha=k)
            else:
                dv_du = dh.mul_(-k * threshold).add_(1.0)
            du.addcmul_(dv, dv_du)
        dv = du * beta
    return grad_c, (torch.zeros_like(u[0]) if dv is None else dv)


@_op("reset_term_forward", (
    "(Tensor c, Tensor v0, float beta, float threshold, str surrogate, float surrogate_param, "
    "bool inclusive, str mechanism, float reset_grad_scale) -> (Tensor, Tensor, Tensor)"))
def _reset_term_forward(c: torch.Tensor, v0: torch.Tensor, beta: float, threshold: float,
                        surrogate: str, surrogate_param: float, inclusive: bool, mechanism: str,
                        reset_grad_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _rt_forward_loop(c, v0, beta, threshold, inclusive, mechanism)


@_op("reset_term_backward", (
    "(Tensor? g_s, Tensor? g_v, Tensor s, Tensor u, float beta, float threshold, str surrogate, "
    "float surrogate_param, bool inclusive, str mechanism, float reset_grad_scale) "
    "-> (Tensor, Tensor)"))
def _reset_term_backward(g_s: torch.Tensor | None, g_v: torch.Tensor | None, s: torch.Tensor,
                         u: torch.Tensor, beta: float, threshold: float, surrogate: str,
                         surrogate_param: float, inclusive: bool, mechanism: str,
                         reset_grad_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    fn = make_surrogate(surrogate, surrogate_param, inclusive)
    return _rt_backward_loop(g_s, g_v, s, u, beta, threshold, fn.derivative, mechanism,
                             reset_grad_scale)


@torch.library.register_fake("spikegrad::reset_term_forward")
def _(c: torch.Tensor, v0: torch.Tensor, *_: Any) -> tuple[torch.Tensor, ...]:
    return tuple(torch.empty_like(c, memory_format=torch.contiguous_format) for _ in range(3))


@torch.library.register_fake("spikegrad::reset_term_backward")
def _(g_s: Any, g_v: Any, s: torch.Tensor, u: torch.Tensor, *_: Any
      ) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(u, memory_format=torch.contiguous_format), u.new_empty(u.shape[1:])


def _rt_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(output[0], output[2])
    ctx.params = inputs[2:]
    ctx.mark_non_differentiable(output[2])


def _rt_backward(ctx: Any, g_s: torch.Tensor | None, g_v: torch.Tensor | None,
                 _g_u: Any) -> tuple[Any, ...]:
    s, u = ctx.saved_tensors
    grad_c, grad_v0 = torch.ops.spikegrad.reset_term_backward(g_s, g_v, s, u, *ctx.params)
    return (grad_c, grad_v0) + (None,) * 7


torch.library.register_autograd("spikegrad::reset_term_forward", _rt_backward,
                                setup_context=_rt_setup)


class _GenericResetTerm(torch.autograd.Function):
    """The same loops for a spikegrad surrogate an operator cannot take (a user's subclass)."""

    @staticmethod
    def forward(c: torch.Tensor, v0: torch.Tensor, beta: float, threshold: float,  # type: ignore[override]
                spike_fn: Any, mechanism: str, k: float):
        return _rt_forward_loop(c, v0, beta, threshold, spike_fn.inclusive, mechanism)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, _, beta, threshold, spike_fn, mechanism, k = inputs
        ctx.save_for_backward(output[0], output[2])
        ctx.params = (beta, threshold, spike_fn.derivative, mechanism, k)
        ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g_s: torch.Tensor | None, g_v: torch.Tensor | None, _g_u: Any):  # type: ignore[override]
        s, u = ctx.saved_tensors
        grad_c, grad_v0 = _rt_backward_loop(g_s, g_v, s, u, *ctx.params)
        return grad_c, grad_v0, None, None, None, None, None


def reset_term_sequence(c: torch.Tensor, v0: torch.Tensor, beta: float, threshold: float,
                        spike_fn: Surrogate, mechanism: str, reset_grad_scale: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s, v, u)`` of the whole sequence: ``spikegrad::reset_term_forward`` for Sigmoid/ATan.

    Shape:
        c: ``[T, B, *]``; v0: ``[B, *]`` (broadcast); outputs: ``[T, B, *]``.
    """
    v0 = step_of(v0, c)
    args = surrogate_args(spike_fn)
    if args is None:
        return _GenericResetTerm.apply(c, v0, float(beta), float(threshold), spike_fn,
                                       mechanism, float(reset_grad_scale))
    return torch.ops.spikegrad.reset_term_forward(
        c, v0, float(beta), float(threshold), args[0], args[1], spike_fn.inclusive, mechanism,
        float(reset_grad_scale))
