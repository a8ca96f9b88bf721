"""The HTDGLIF node's whole-sequence torch operators (BPSA/BPTA).

``spikegrad::bpsta_forward(x, v0, mode, threshold, decay, alpha, dt) -> (o, v, h)`` and
``spikegrad::bpsta_backward``: the node of :mod:`spikegrad.rules.bpsta` in ``"paper"`` or
``"braincog"`` mode (gradients to ``x`` and ``v0``; ``h`` is differentiable). Any float
dtype, any device (the bodies are plain torch).
"""

from typing import Any

import torch

from spikegrad.rules import _oplib
from spikegrad.rules._oplib import add_optional, stack_steps, step_of, zeros_if_none

__all__ = ["BODIES", "bpsta_sequence"]

#: the torch bodies of the operators defined here, by operator name; plain functions, so that
#: tests run them on ``meta`` tensors, where the dispatcher would call the fake implementations
BODIES: dict[str, Any] = {}
_op = _oplib.registrar(BODIES)


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
    return stack_steps(outs), stack_steps(states), stack_steps(pots)


@_op("bpsta_backward", (
    f"(Tensor g_o, Tensor? g_v, Tensor? g_h, Tensor x, Tensor h, {_BPSTA_ARGS}) "
    "-> (Tensor, Tensor)"))
def _bpsta_backward(g_o: torch.Tensor, g_v: torch.Tensor | None, g_h: torch.Tensor | None,
                    x: torch.Tensor, h: torch.Tensor, mode: str, threshold: float, decay: float,
                    alpha: float, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    grads = []
    carry = None  # dL/dv[t] from the future (None: zero, the terms it multiplies are skipped)
    for t in range(h.shape[0] - 1, -1, -1):
        dv = add_optional(None if g_v is None else g_v[t], carry)
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
    return stack_steps(grads[::-1]), carry



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



def _bpsta_grad(ctx: Any, g_o: Any, g_v: Any, g_h: Any) -> tuple[Any, ...]:
    x, h = ctx.saved_tensors
    grad_x, grad_v0 = torch.ops.spikegrad.bpsta_backward(
        zeros_if_none(g_o, h), g_v, g_h, x, h, *ctx.params)
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
        x, step_of(v0, x), mode, float(threshold), float(0.0 if decay is None else decay),
        float(alpha), float(1.0 if dt is None else dt))
