"""The fused whole-sequence torch operators of reset-term, BPSA/BPTA and multi-strength.

One forward and one backward operator per rule (namespace ``spikegrad``), the forward's
registered autograd calling the backward, each with a fake implementation:

* ``spikegrad::reset_term_forward(c, v0, beta, threshold, surrogate, surrogate_param,
  inclusive, mechanism, reset_grad_scale) -> (s, v, u)`` and ``reset_term_backward``: the
  closed-form recursion of :mod:`spikegrad.rules.reset_term` (``u`` is not differentiable);
  ``surrogate`` is ``"Sigmoid"`` (``surrogate_param`` the temperature) or ``"ATan"`` (alpha);
* ``spikegrad::bpsta_forward(x, v0, mode, threshold, decay, alpha, dt) -> (o, v, h)`` and
  ``bpsta_backward``: the HTDGLIF node of :mod:`spikegrad.rules.bpsta` in ``"paper"`` or
  ``"braincog"`` mode (gradients to ``x`` and ``v0``; ``h`` is differentiable);
* ``spikegrad::multistrength_forward(z, v0, threshold, beta, max_strength, detach_reset) ->
  (theta, v, h)`` and ``multistrength_backward``: :mod:`spikegrad.rules.multistrength`
  (``max_strength = 0``: no cap).

Inputs are time-major ``[T, *]`` with ``v0`` one step ``[*]``, any float dtype, any device (the
bodies are plain torch). The rules' own modules call these through :func:`reset_term_sequence`,
:func:`bpsta_sequence` and :func:`multistrength_sequence`. A spikegrad surrogate other than
Sigmoid/ATan (a user's subclass, which an operator cannot take) runs the same loops in an
``autograd.Function``.
"""

from collections.abc import Callable
from typing import Any

import torch

from spikegrad.rules import _oplib
from spikegrad.rules.surrogate import ATan, Sigmoid, Surrogate, heaviside

__all__ = ["BODIES", "one_step", "step_path", "reset_term_sequence", "bpsta_sequence",
           "multistrength_sequence", "surrogate_args", "SURROGATES"]

#: the torch bodies of the operators defined here, by operator name; plain functions, so that
#: tests run them on ``meta`` tensors, where the dispatcher would call the fake implementations
BODIES: dict[str, Callable[..., Any]] = {}
_op = _oplib.registrar(BODIES)


#: the surrogates an operator can take, by name, and their one parameter
SURROGATES: dict[str, tuple[type[Surrogate], str]] = {"Sigmoid": (Sigmoid, "temperature"),
                                                      "ATan": (ATan, "alpha")}


def surrogate_args(fn: Any) -> tuple[str, float] | None:
    """``(name, parameter)`` of a spiking Sigmoid/ATan surrogate, else ``None``."""
    for name, (cls, field) in SURROGATES.items():
        if type(fn) is cls and fn.spiking:
            return name, float(getattr(fn, field))
    return None


def _surrogate(name: str, param: float, inclusive: bool) -> Surrogate:
    if name not in SURROGATES:
        raise ValueError(f"surrogate must be one of {tuple(SURROGATES)}, got {name!r}")
    cls, field = SURROGATES[name]
    return cls(**{field: param}, inclusive=inclusive)


def one_step(sequence: Callable[..., tuple[torch.Tensor, ...]], x: torch.Tensor,
             state: torch.Tensor, *args: Any) -> tuple[torch.Tensor, ...]:
    """One step of a whole-sequence operator: ``sequence(x[None], state, *args)``'s outputs at
    step 0 (the per-step functions the neurons call, as operators: opaque to Inductor, so a
    compiled per-step loop keeps each step's fused backward instead of re-deriving the chain
    through time inside one kernel). ``x`` and ``state`` are broadcast to one shape and
    promoted to one dtype first (gradients sum back through both)."""
    if x.shape != state.shape or x.dtype != state.dtype:
        dtype = torch.promote_types(x.dtype, state.dtype)
        x, state = (y.to(dtype) for y in torch.broadcast_tensors(x, state))
    return tuple(y[0] for y in sequence(x.unsqueeze(0), state, *args))


def _stack(steps: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(steps)``; one step is a view (no copy: the per-step calls of a neuron)."""
    return steps[0].unsqueeze(0) if len(steps) == 1 else torch.stack(steps)


def step_path(operator: Callable[..., Any], reference: Callable[..., Any]
              ) -> Callable[..., Any]:
    """The per-step function a rule runs now: ``operator`` (:func:`one_step` of its fused
    operator) while ``torch.compile`` traces, ``reference`` (written out: a few torch
    operations and the rule's autograd functions, fewer Python hops) eagerly. The two give the
    same values and gradients (tests/rules/test_ops.py)."""
    return operator if torch.compiler.is_compiling() else reference


def _step_of(v0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``v0`` as one step of ``x`` (broadcast; its gradient sums back through ``expand``)."""
    return v0 if v0.shape == x.shape[1:] else v0.expand(x.shape[1:])


# === reset-term ================================================================================
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
    return _stack(spikes), _stack(states), _stack(potentials)


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
    fn = _surrogate(surrogate, surrogate_param, inclusive)
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
    v0 = _step_of(v0, c)
    args = surrogate_args(spike_fn)
    if args is None:
        return _GenericResetTerm.apply(c, v0, float(beta), float(threshold), spike_fn,
                                       mechanism, float(reset_grad_scale))
    return torch.ops.spikegrad.reset_term_forward(
        c, v0, float(beta), float(threshold), args[0], args[1], spike_fn.inclusive, mechanism,
        float(reset_grad_scale))


# === BPSA / BPTA (HTDGLIF) =====================================================================
_BPSTA_ARGS = "str mode, float threshold, float decay, float alpha, float dt"


@_op("bpsta_forward", (
    f"(Tensor x, Tensor v0, {_BPSTA_ARGS}) -> (Tensor, Tensor, Tensor)"))
def _bpsta_forward(x: torch.Tensor, v0: torch.Tensor, mode: str, threshold: float,
                   decay: float, alpha: float, dt: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if mode not in ("paper", "braincog"):
        raise ValueError(f"mode must be 'paper' or 'braincog', got {mode!r}")
    v, outs, states, pots = v0, [], [], []
    for t in range(x.shape[0]):
        if mode == "paper":
            h = decay * v + torch.relu(x[t])
            o = (h >= threshold).to(h.dtype)
            v = h * (1.0 - o)
        else:
            h = v + dt * torch.relu(x[t])
            fired = (h >= threshold).to(h.dtype)
            o = h * fired
            v = (h * (1.0 - fired)) * dt
        outs.append(o)
        states.append(v)
        pots.append(h)
    if not outs:
        return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    return _stack(outs), _stack(states), _stack(pots)


@_op("bpsta_backward", (
    f"(Tensor g_o, Tensor? g_v, Tensor? g_h, Tensor x, Tensor h, {_BPSTA_ARGS}) "
    "-> (Tensor, Tensor)"))
def _bpsta_backward(g_o: torch.Tensor, g_v: torch.Tensor | None, g_h: torch.Tensor | None,
                    x: torch.Tensor, h: torch.Tensor, mode: str, threshold: float, decay: float,
                    alpha: float, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    grads = []
    carry = None  # dL/dv[t] from the future (None: zero, the terms it multiplies are skipped)
    for t in range(h.shape[0] - 1, -1, -1):
        dv = _plus(None if g_v is None else g_v[t], carry)
        ht = h[t]
        f = (ht >= threshold).to(ht.dtype)
        if mode == "paper":
            # 1/h where it fired (h >= threshold > 0), else 0: the clamp only moves the
            # potentials that did not fire (multiplied by f = 0), so the division stays finite
            inv = f / ht.clamp_min(threshold)
            dh = g_o[t] * inv if g_h is None else torch.addcmul(g_h[t], g_o[t], inv)
            if dv is not None:
                dh = dh.addcmul_(dv, torch.add(1.0 - f, inv, alpha=alpha))  # α/h if fired, else 1
            grads.append(torch.ops.aten.threshold_backward(dh, x[t], 0.0))  # relu's backward
            carry = decay * dh
        else:
            dh = g_o[t] * f
            if dv is not None:
                dh = dh + dv * (((1.0 - f) + alpha * f) * dt)
            if g_h is not None:
                dh = dh + g_h[t]
            grads.append(dh * dt * (x[t] > 0).to(ht.dtype))
            carry = dh
    if not grads:
        return torch.empty_like(x), x.new_zeros(x.shape[1:])
    return _stack(grads[::-1]), carry


def _plus(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """``a + b`` where ``None`` is zero (and stays ``None`` when both are)."""
    if a is None:
        return b
    return a if b is None else a + b


@torch.library.register_fake("spikegrad::bpsta_forward")
def _(x: torch.Tensor, v0: torch.Tensor, *_: Any) -> tuple[torch.Tensor, ...]:
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(3))


@torch.library.register_fake("spikegrad::bpsta_backward")
def _(g_o: torch.Tensor, g_v: torch.Tensor | None, g_h: torch.Tensor | None, x: torch.Tensor,
      h: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[1:])


def _bpsta_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(inputs[0], output[2])
    ctx.params = inputs[2:]


def _zeros_if_none(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def _bpsta_grad(ctx: Any, g_o: Any, g_v: Any, g_h: Any) -> tuple[Any, ...]:
    x, h = ctx.saved_tensors
    grad_x, grad_v0 = torch.ops.spikegrad.bpsta_backward(
        _zeros_if_none(g_o, h), g_v, g_h, x, h, *ctx.params)
    return (grad_x, grad_v0) + (None,) * 5


torch.library.register_autograd("spikegrad::bpsta_forward", _bpsta_grad,
                                setup_context=_bpsta_setup)


def bpsta_sequence(x: torch.Tensor, v0: torch.Tensor, mode: str, threshold: float,
                   decay: float | None, alpha: float, dt: float | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(o, v, h)`` of the whole sequence through ``spikegrad::bpsta_forward``.

    Shape:
        x: ``[T, B, *]``; v0: ``[B, *]`` (broadcast); outputs: ``[T, B, *]``.
    """
    return torch.ops.spikegrad.bpsta_forward(
        x, _step_of(v0, x), mode, float(threshold), float(0.0 if decay is None else decay),
        float(alpha), float(1.0 if dt is None else dt))


# === multi-strength ============================================================================
_MULTI_ARGS = "float threshold, float beta, int max_strength, bool detach_reset"


@_op("multistrength_forward", (
    f"(Tensor z, Tensor v0, {_MULTI_ARGS}) -> (Tensor, Tensor, Tensor)"))
def _multistrength_forward(z: torch.Tensor, v0: torch.Tensor, threshold: float, beta: float,
                           max_strength: int, detach_reset: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v, thetas, rems, pots = v0, [], [], []
    for t in range(z.shape[0]):
        h = v + z[t] if beta == 1.0 else beta * v + z[t]
        theta = torch.floor(torch.clamp(h, min=0.0) / threshold)
        if max_strength > 0:
            theta = torch.clamp(theta, max=float(max_strength))
        v = h - threshold * theta
        thetas.append(theta)
        rems.append(v)
        pots.append(h)
    if not thetas:
        return torch.empty_like(z), torch.empty_like(z), torch.empty_like(z)
    return _stack(thetas), _stack(rems), _stack(pots)


@_op("multistrength_backward", (
    f"(Tensor g_theta, Tensor? g_v, Tensor? g_h, Tensor h, {_MULTI_ARGS}) -> (Tensor, Tensor)"))
def _multistrength_backward(g_theta: torch.Tensor, g_v: torch.Tensor | None,
                            g_h: torch.Tensor | None, h: torch.Tensor, threshold: float,
                            beta: float, max_strength: int, detach_reset: bool
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    grads = []
    carry = None  # dL/dv[t] from the future (None: zero)
    for t in range(h.shape[0] - 1, -1, -1):
        dv = _plus(None if g_v is None else g_v[t], carry)
        window = h[t] >= 0
        if max_strength > 0:
            window = window & (h[t] < threshold * (max_strength + 1))
        w = window.to(h.dtype)
        g_strength = g_theta[t] if detach_reset or dv is None else g_theta[t] + dv * (-threshold)
        dh = g_strength * w / threshold
        if dv is not None:
            dh = dv + dh
        if g_h is not None:
            dh = dh + g_h[t]
        grads.append(dh)
        carry = dh if beta == 1.0 else beta * dh
    if not grads:
        return torch.empty_like(h), h.new_zeros(h.shape[1:])
    if carry is grads[0]:  # beta == 1 and one step: the two outputs must not share memory
        carry = carry.clone()
    return _stack(grads[::-1]), carry


@torch.library.register_fake("spikegrad::multistrength_forward")
def _(z: torch.Tensor, v0: torch.Tensor, *_: Any) -> tuple[torch.Tensor, ...]:
    return tuple(torch.empty_like(z, memory_format=torch.contiguous_format) for _ in range(3))


@torch.library.register_fake("spikegrad::multistrength_backward")
def _(g_theta: torch.Tensor, g_v: torch.Tensor | None, g_h: torch.Tensor | None,
      h: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(h, memory_format=torch.contiguous_format), h.new_empty(h.shape[1:])


def _multi_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(output[2])
    ctx.params = inputs[2:]


def _multi_grad(ctx: Any, g_theta: Any, g_v: Any, g_h: Any) -> tuple[Any, ...]:
    (h,) = ctx.saved_tensors
    grad_z, grad_v0 = torch.ops.spikegrad.multistrength_backward(
        _zeros_if_none(g_theta, h), g_v, g_h, h, *ctx.params)
    return (grad_z, grad_v0) + (None,) * 4


torch.library.register_autograd("spikegrad::multistrength_forward", _multi_grad,
                                setup_context=_multi_setup)


def multistrength_sequence(z: torch.Tensor, v0: torch.Tensor, threshold: float, beta: float,
                           max_strength: int | None, detach_reset: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(θ, v, h)`` of the whole sequence through ``spikegrad::multistrength_forward``.

    Shape:
        z: ``[T, B, *]``; v0: ``[B, *]`` (broadcast); outputs: ``[T, B, *]``.
    """
    return torch.ops.spikegrad.multistrength_forward(
        z, _step_of(v0, z), float(threshold), float(beta),
        0 if max_strength is None else int(max_strength), bool(detach_reset))
