"""The multi-strength rule's hand-written Triton kernels, their ``triton_op`` operators and the
entry point :func:`sequence` (float32 arithmetic, float32/float16/bfloat16 storage).

Operators ``spikegrad::triton_multistrength_fwd(z, v0, ...) -> (theta, v, h)`` (``h`` float32,
saved) and ``spikegrad::triton_multistrength_bwd``. Shared helpers and conventions:
:mod:`spikegrad.rules.triton_kernels.lib`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from spikegrad.rules._oplib import state_vector
from spikegrad.rules.multistrength.reference import MultiStrength
from spikegrad.rules.triton_kernels.lib import (
    divs,
    flat,
    grad_arg,
    lanes,
    launch,
    load,
    store,
    tn,
)
from spikegrad.rules.triton_kernels.spec import f32, f32_div

__all__ = ["sequence"]

Tensor = torch.Tensor
F32 = torch.float32


# --- kernels -------------------------------------------------------------------------------------
@triton.jit
def multistrength_fwd(z_ptr, v0_ptr, theta_ptr, v_ptr, h_ptr, T, N, tau, inv_tau, beta, cap,
                      CAPPED: tl.constexpr, RECIP: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: strengths ``θ``, remainders ``v``, pre-subtraction ``h`` (float32)."""
    offs, mask = lanes(BLOCK, N)
    v = load(v0_ptr + offs, mask)
    k = offs
    for _ in range(T):
        h = beta * v + load(z_ptr + k, mask)
        th = tl.floor(divs(tl.maximum(h, 0.0), tau, inv_tau, RECIP))
        if CAPPED:
            th = tl.minimum(th, cap)
        v = h - tau * th
        tl.store(h_ptr + k, h, mask=mask)
        store(theta_ptr + k, th, mask)
        store(v_ptr + k, v, mask)
        k += N


@triton.jit
def multistrength_bwd(h_ptr, g_theta_ptr, g_v_ptr, grad_z_ptr, grad_v0_ptr, T, N, last,
                      tau, inv_tau, minus_tau, beta, window_hi, CAPPED: tl.constexpr,
                      DETACH: tl.constexpr, HAS_G_THETA: tl.constexpr, HAS_G_V: tl.constexpr,
                      RECIP: tl.constexpr, BLOCK: tl.constexpr):
    """Backward: straight-through ``1/τ`` on the window, ``-τ`` through an undetached reset."""
    offs, mask = lanes(BLOCK, N)
    dv = tl.zeros([BLOCK], tl.float32)
    k = offs + last
    for _ in range(T):
        if HAS_G_V:
            dv += load(g_v_ptr + k, mask)
        h = tl.load(h_ptr + k, mask=mask, other=0.0)
        if CAPPED:
            window = (h >= 0.0) & (h < window_hi)
        else:
            window = h >= 0.0
        if HAS_G_THETA:
            g_th = load(g_theta_ptr + k, mask)
        else:
            g_th = tl.zeros([BLOCK], tl.float32)
        if not DETACH:
            g_th = g_th + dv * minus_tau
        dh = dv + divs(g_th * tl.where(window, 1.0, 0.0), tau, inv_tau, RECIP)
        store(grad_z_ptr + k, dh, mask)
        dv = beta * dh
        k -= N
    store(grad_v0_ptr + offs, dv, mask)


#: whether the kernels were defined for Triton's CPU interpreter (``TRITON_INTERPRET=1``)


# --- operators -----------------------------------------------------------------------------------
@triton_op("spikegrad::triton_multistrength_fwd", mutates_args=())
def multistrength_fwd_op(z: Tensor, v0: Tensor, tau: float, inv_tau: float, beta: float,
                         capped: bool, cap: float, window_hi: float, detach: bool
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """Multi-strength forward: ``(θ, v, h)`` (``h`` float32, saved for the backward)."""
    z, T, N = z.contiguous(), *z.shape
    theta, v = torch.empty_like(z), torch.empty_like(z)
    h = torch.empty(z.shape, dtype=F32, device=z.device)
    launch(multistrength_fwd, z, z, v0.contiguous(), theta, v, h, T, N, tau, inv_tau, beta,
            cap, CAPPED=capped, RECIP=z.is_cuda)
    return theta, v, h


@triton_op("spikegrad::triton_multistrength_bwd", mutates_args=())
def multistrength_bwd_op(h: Tensor, g_theta: Tensor | None, g_v: Tensor | None, dtype: torch.dtype,
                         tau: float, inv_tau: float, beta: float, capped: bool, cap: float,
                         window_hi: float, detach: bool) -> tuple[Tensor, Tensor]:
    """Multi-strength backward: ``(dL/dz, dL/dv0)`` in ``dtype``."""
    T, N, last = tn(h)
    grad_z = torch.empty(h.shape, dtype=dtype, device=h.device)
    grad_v0 = grad_z.new_empty(N)
    (gt, has_t), (gv, has_v) = grad_arg(g_theta, grad_z), grad_arg(g_v, grad_z)
    launch(multistrength_bwd, h, h, gt, gv, grad_z, grad_v0, T, N, last, tau, inv_tau, -tau,
            beta, window_hi, CAPPED=capped, DETACH=detach, HAS_G_THETA=has_t, HAS_G_V=has_v,
            RECIP=h.is_cuda)
    return grad_z, grad_v0


def _ms_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.save_for_backward(output[2])
    ctx.dtype, ctx.params = inputs[0].dtype, inputs[2:]
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _ms_backward(ctx: Any, g_t: Tensor | None, g_v: Tensor | None, _g_h: Any) -> tuple[Any, ...]:
    (h,) = ctx.saved_tensors
    return multistrength_bwd_op(h, g_t, g_v, ctx.dtype, *ctx.params) + (None,) * len(ctx.params)


multistrength_fwd_op.register_autograd(_ms_backward, setup_context=_ms_setup)


# --- entry point ---------------------------------------------------------------------------------
def sequence(z: torch.Tensor, v0: torch.Tensor | None, cfg: MultiStrength
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-strength IF over a sequence, fused: ``(θ, v)`` as repeated
    :func:`spikegrad.rules.multistrength.step` (gradients to ``z`` and ``v0``).

    Shape:
        z: ``[T, *]``; v0: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    zf = flat(z, "z")
    capped = cfg.max_strength is not None
    d = float(cfg.max_strength) if capped else 0.0
    theta, v, _ = multistrength_fwd_op(
        zf, state_vector(v0, z, "v0"), f32(cfg.threshold), f32_div(1.0, cfg.threshold),
        f32(cfg.beta),
        capped, d, f32(cfg.threshold * (d + 1.0)) if capped else 0.0, cfg.detach_reset)
    return theta.view(z.shape), v.view(z.shape)
