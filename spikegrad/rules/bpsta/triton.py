"""The HTDGLIF node's (BPSA/BPTA) hand-written Triton kernels, their ``triton_op`` operators and
the entry point :func:`sequence` (both modes; float32 arithmetic, float32/float16/bfloat16
storage).

Operators ``spikegrad::triton_bpsta_fwd(x, v0, ...) -> (o, v, h)`` (``h`` float32, saved) and
``spikegrad::triton_bpsta_bwd``. Shared helpers and conventions:
:mod:`spikegrad.rules.triton_kernels.lib`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from spikegrad.rules._oplib import state_vector
from spikegrad.rules.bpsta.reference import HTDGLIF
from spikegrad.rules.triton_kernels.lib import (
    flat,
    grad_arg,
    lanes,
    launch,
    load,
    store,
    tn,
)
from spikegrad.rules.triton_kernels.spec import f32

__all__ = ["sequence"]

Tensor = torch.Tensor
F32 = torch.float32


# --- kernels -------------------------------------------------------------------------------------
@triton.jit
def bpsta_fwd(x_ptr, v0_ptr, o_ptr, v_ptr, h_ptr, T, N, theta, decay, dt,
              PAPER: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: ``o`` (binary or graded), ``v`` (post-reset), ``h`` (pre-reset, float32)."""
    offs, mask = lanes(BLOCK, N)
    v = load(v0_ptr + offs, mask)
    k = offs
    for _ in range(T):
        xr = tl.maximum(load(x_ptr + k, mask), 0.0)
        if PAPER:
            h = decay * v + xr
        else:
            h = v + dt * xr
        fired = h >= theta
        f = tl.where(fired, 1.0, 0.0)
        if PAPER:
            o = f
            v = tl.where(fired, 0.0, h)
        else:
            o = h * f
            v = (h * (1.0 - f) + 0.0) * dt  # + alpha (o - sg(o)): zero in the forward pass
        tl.store(h_ptr + k, h, mask=mask)
        store(o_ptr + k, o, mask)
        store(v_ptr + k, v, mask)
        k += N


@triton.jit
def bpsta_bwd(x_ptr, h_ptr, g_o_ptr, g_v_ptr, grad_x_ptr, grad_v0_ptr, T, N, last,
              theta, alpha, decay, dt, PAPER: tl.constexpr, HAS_G_O: tl.constexpr,
              HAS_G_V: tl.constexpr, BLOCK: tl.constexpr):
    """Backward (BPSA ``o/h``, BPTA ``(1 - o) + α o/h``; braincog ``H`` and ``dt((1-H) + αH)``)."""
    offs, mask = lanes(BLOCK, N)
    dv = tl.zeros([BLOCK], tl.float32)
    k = offs + last
    for _ in range(T):
        if HAS_G_V:
            dv += load(g_v_ptr + k, mask)
        if HAS_G_O:
            go = load(g_o_ptr + k, mask)
        else:
            go = tl.zeros([BLOCK], tl.float32)
        h = tl.load(h_ptr + k, mask=mask, other=1.0)
        fired = h >= theta
        f = tl.where(fired, 1.0, 0.0)
        if PAPER:
            hs = tl.where(fired, h, 1.0)
            d_spike = tl.where(fired, tl.math.div_rn(go * f, hs), go * f)
            # torch computes α / h as reciprocal(h) * α
            dh = d_spike + dv * tl.where(fired, tl.math.div_rn(1.0, hs) * alpha, 1.0)
            dxr = dh
        else:
            inner = dv * dt
            dh = inner * (1.0 - f) + (go + inner * alpha) * f
            dxr = dh * dt
        store(grad_x_ptr + k, tl.where(load(x_ptr + k, mask) > 0.0, dxr, 0.0), mask)
        if PAPER:
            dv = decay * dh
        else:
            dv = dh
        k -= N
    store(grad_v0_ptr + offs, dv, mask)


# --- operators -----------------------------------------------------------------------------------
@triton_op("spikegrad::triton_bpsta_fwd", mutates_args=())
def bpsta_fwd_op(x: Tensor, v0: Tensor, paper: bool, threshold: float, alpha: float, decay: float,
                 dt: float) -> tuple[Tensor, Tensor, Tensor]:
    """HTDGLIF forward: ``(o, v, h)`` (``h`` float32, saved for the backward)."""
    x, T, N = x.contiguous(), *x.shape
    o, v = torch.empty_like(x), torch.empty_like(x)
    h = torch.empty(x.shape, dtype=F32, device=x.device)
    launch(bpsta_fwd, x, x, v0.contiguous(), o, v, h, T, N, threshold, decay, dt, PAPER=paper)
    return o, v, h


@triton_op("spikegrad::triton_bpsta_bwd", mutates_args=())
def bpsta_bwd_op(x: Tensor, h: Tensor, g_o: Tensor | None, g_v: Tensor | None, paper: bool,
                 threshold: float, alpha: float, decay: float, dt: float
                 ) -> tuple[Tensor, Tensor]:
    """HTDGLIF backward: ``(dL/dx, dL/dv0)`` in ``x``'s dtype."""
    T, N, last = tn(h)
    grad_x, grad_v0 = torch.empty_like(x), x.new_empty(N)
    (go, has_o), (gv, has_v) = grad_arg(g_o, grad_x), grad_arg(g_v, grad_x)
    launch(bpsta_bwd, h, x.contiguous(), h, go, gv, grad_x, grad_v0, T, N, last, threshold,
            alpha, decay, dt, PAPER=paper, HAS_G_O=has_o, HAS_G_V=has_v)
    return grad_x, grad_v0


def _ht_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.save_for_backward(inputs[0], output[2])
    ctx.params = inputs[2:]
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _ht_backward(ctx: Any, g_o: Tensor | None, g_v: Tensor | None, _g_h: Any) -> tuple[Any, ...]:
    x, h = ctx.saved_tensors
    return bpsta_bwd_op(x, h, g_o, g_v, *ctx.params) + (None,) * len(ctx.params)


bpsta_fwd_op.register_autograd(_ht_backward, setup_context=_ht_setup)


# --- entry point ---------------------------------------------------------------------------------
def sequence(x: torch.Tensor, v0: torch.Tensor | None, cfg: HTDGLIF
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The HTDGLIF node over a sequence, fused: ``(o, v)`` as repeated
    :func:`spikegrad.rules.bpsta.step_v` (gradients to ``x`` and ``v0``), either mode.

    Shape:
        x: ``[T, *]``; v0: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    xf = flat(x, "x")
    paper = cfg.mode == "paper"
    o, v, _ = bpsta_fwd_op(xf, state_vector(v0, x, "v0"), paper, f32(cfg.threshold), f32(cfg.alpha),
                           f32(cfg.decay) if paper else 1.0, 1.0 if paper else f32(cfg.dt))
    return o.view(x.shape), v.view(x.shape)
