"""The multi-strength rule's whole-sequence torch operators.

``spikegrad::multistrength_forward(z, v0, threshold, beta, max_strength, detach_reset) ->
(theta, v, h)`` and ``spikegrad::multistrength_backward``: :mod:`spikegrad.rules.multistrength`
(``max_strength = 0``: no cap). Any float dtype, any device (the bodies are plain torch).
"""

from typing import Any

import torch

from spikegrad.rules import _oplib
from spikegrad.rules._oplib import add_optional, stack_steps, step_of, zeros_if_none

__all__ = ["BODIES", "multistrength_sequence"]

#: the torch bodies of the operators defined here, by operator name; plain functions, so that
#: tests run them on ``meta`` tensors, where the dispatcher would call the fake implementations
BODIES: dict[str, Any] = {}
_op = _oplib.registrar(BODIES)


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
    return stack_steps(thetas), stack_steps(rems), stack_steps(pots)


@_op("multistrength_backward", (
    f"(Tensor g_theta, Tensor? g_v, Tensor? g_h, Tensor h, {_MULTI_ARGS}) -> (Tensor, Tensor)"))
def _multistrength_backward(g_theta: torch.Tensor, g_v: torch.Tensor | None,
                            g_h: torch.Tensor | None, h: torch.Tensor, threshold: float,
                            beta: float, max_strength: int, detach_reset: bool
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    grads = []
    carry = None  # dL/dv[t] from the future (None: zero)
    for t in range(h.shape[0] - 1, -1, -1):
        dv = add_optional(None if g_v is None else g_v[t], carry)
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
    return stack_steps(grads[::-1]), carry


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
        zeros_if_none(g_theta, h), g_v, g_h, h, *ctx.params)
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
        z, step_of(v0, z), float(threshold), float(beta),
        0 if max_strength is None else int(max_strength), bool(detach_reset))
