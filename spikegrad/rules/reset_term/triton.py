"""The reset-term rule's hand-written Triton kernels, their ``triton_op`` operators and the entry
point :func:`sequence` (whole sequences; float32 arithmetic, float32/float16/bfloat16 storage).

Operators ``spikegrad::triton_reset_term_fwd(c, v0, a0, ...) -> (out, v, u)`` (``u``: the
float32 pre-reset potential, saved for the backward, not differentiable) and
``spikegrad::triton_reset_term_bwd``, differentiable through ``register_autograd``. Shared
helpers and conventions: :mod:`spikegrad.rules.triton_kernels.lib`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from spikegrad.rules._oplib import state_vector
from spikegrad.rules.reset_term.spec import ResetTermSpec
from spikegrad.rules.triton_kernels.lib import (
    divs,
    flat,
    grad_arg,
    lanes,
    launch,
    load,
    store,
    surrogate_grad,
    tn,
)
from spikegrad.rules.triton_kernels.spec import f32, f32_div

__all__ = ["sequence"]

Tensor = torch.Tensor
F32 = torch.float32


# --- kernels -------------------------------------------------------------------------------------
@triton.jit
def reset_term_fwd(c_ptr, v0_ptr, a0_ptr, out_ptr, v_ptr, u_ptr, T, N, beta, theta, ls, gain,
                   SUBTRACT: tl.constexpr, INCLUSIVE: tl.constexpr, TRACE: tl.constexpr,
                   BLOCK: tl.constexpr):
    """Forward: ``out`` (spikes or trace), ``v`` (post-reset), ``u`` (pre-reset, float32)."""
    offs, mask = lanes(BLOCK, N)
    v = load(v0_ptr + offs, mask)
    a = load(a0_ptr + offs, mask)
    k = offs
    for _ in range(T):
        u = beta * v + load(c_ptr + k, mask)
        x = u - theta
        if INCLUSIVE:
            s = tl.where(x >= 0.0, 1.0, 0.0)
        else:
            s = tl.where(x > 0.0, 1.0, 0.0)
        if SUBTRACT:
            v = u - theta * s
        else:
            v = u * (1.0 - s)
        tl.store(u_ptr + k, u, mask=mask)
        store(v_ptr + k, v, mask)
        if TRACE:
            a = ls * a + s * gain
            store(out_ptr + k, a, mask)
        else:
            store(out_ptr + k, s, mask)
        k += N


@triton.jit
def reset_term_bwd(u_ptr, g_out_ptr, g_v_ptr, grad_c_ptr, grad_v0_ptr, grad_a0_ptr, T, N, last,
                   beta, theta, k_scale, minus_k_theta, ls, tau_s, inv_tau_s, sg_a, sg_b,
                   SURROGATE: tl.constexpr, SUBTRACT: tl.constexpr, INCLUSIVE: tl.constexpr,
                   TRACE: tl.constexpr, HAS_G_OUT: tl.constexpr, HAS_G_V: tl.constexpr,
                   RECIP: tl.constexpr, BLOCK: tl.constexpr):
    """Backward from ``t = T-1`` (``last = (T-1) N``): ``dL/dc``, ``dL/dv0``, ``dL/da0``."""
    offs, mask = lanes(BLOCK, N)
    dv = tl.zeros([BLOCK], tl.float32)  # dL/dv[t], v the post-reset state
    ea = tl.zeros([BLOCK], tl.float32)  # dL/da[t] through the trace
    k = offs + last
    for _ in range(T):
        if HAS_G_OUT:
            gs = load(g_out_ptr + k, mask)
        else:
            gs = tl.zeros([BLOCK], tl.float32)
        if TRACE:
            ea = gs + ls * ea
            gs = divs(ea, tau_s, inv_tau_s, RECIP)
        if HAS_G_V:
            dv += load(g_v_ptr + k, mask)
        u = tl.load(u_ptr + k, mask=mask, other=0.0)
        x = u - theta
        dh = surrogate_grad(x, sg_a, sg_b, SURROGATE, RECIP)
        if SUBTRACT:
            dv_du = dh * minus_k_theta + 1.0
        else:
            if INCLUSIVE:
                s = tl.where(x >= 0.0, 1.0, 0.0)
            else:
                s = tl.where(x > 0.0, 1.0, 0.0)
            dv_du = (1.0 - s) - k_scale * (dh * u)
        du = gs * dh + dv * dv_du
        store(grad_c_ptr + k, du, mask)
        dv = du * beta
        k -= N
    store(grad_v0_ptr + offs, dv, mask)
    if TRACE:
        store(grad_a0_ptr + offs, ls * ea, mask)


# --- operators -----------------------------------------------------------------------------------
@triton_op("spikegrad::triton_reset_term_fwd", mutates_args=())
def reset_term_fwd_op(c: Tensor, v0: Tensor, a0: Tensor, beta: float, threshold: float,
                      subtract: bool, inclusive: bool, trace: bool, ls: float, gain: float,
                      surrogate: int, sg_a: float, sg_b: float, k_scale: float, tau_s: float,
                      inv_tau_s: float) -> tuple[Tensor, Tensor, Tensor]:
    """Reset-term forward: ``(out, v, u)`` (``u`` float32, saved for the backward)."""
    c, T, N = c.contiguous(), *c.shape
    out, v = torch.empty_like(c), torch.empty_like(c)
    u = torch.empty(c.shape, dtype=F32, device=c.device)
    launch(reset_term_fwd, c, c, v0.contiguous(), a0.contiguous(), out, v, u, T, N, beta,
            threshold, ls, gain, SUBTRACT=subtract, INCLUSIVE=inclusive, TRACE=trace)
    return out, v, u


@triton_op("spikegrad::triton_reset_term_bwd", mutates_args=())
def reset_term_bwd_op(u: Tensor, g_out: Tensor | None, g_v: Tensor | None, dtype: torch.dtype,
                      beta: float, threshold: float, subtract: bool, inclusive: bool, trace: bool,
                      ls: float, gain: float, surrogate: int, sg_a: float, sg_b: float,
                      k_scale: float, tau_s: float, inv_tau_s: float
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Reset-term backward: ``(dL/dc, dL/dv0, dL/da0)`` in ``dtype``."""
    T, N, last = tn(u)
    grad_c = torch.empty(u.shape, dtype=dtype, device=u.device)
    grad_v0, grad_a0 = grad_c.new_empty(N), grad_c.new_zeros(N)
    (g_o, has_o), (g_vv, has_v) = grad_arg(g_out, grad_c), grad_arg(g_v, grad_c)
    launch(reset_term_bwd, u, u, g_o, g_vv, grad_c, grad_v0, grad_a0, T, N, last, beta,
            threshold, k_scale, -k_scale * threshold, ls, tau_s, inv_tau_s, sg_a, sg_b,
            SURROGATE=surrogate, SUBTRACT=subtract, INCLUSIVE=inclusive, TRACE=trace,
            HAS_G_OUT=has_o, HAS_G_V=has_v, RECIP=u.is_cuda)
    return grad_c, grad_v0, grad_a0


def _rt_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.save_for_backward(output[2])
    ctx.dtype, ctx.params = inputs[0].dtype, inputs[3:]
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _rt_backward(ctx: Any, g_out: Tensor | None, g_v: Tensor | None, _g_u: Any) -> tuple[Any, ...]:
    (u,) = ctx.saved_tensors
    gc, gv0, ga0 = reset_term_bwd_op(u, g_out, g_v, ctx.dtype, *ctx.params)
    trace = ctx.params[4]
    return (gc, gv0, ga0 if trace else None) + (None,) * len(ctx.params)


reset_term_fwd_op.register_autograd(_rt_backward, setup_context=_rt_setup)


# --- entry point ---------------------------------------------------------------------------------
def sequence(c: torch.Tensor, v0: torch.Tensor | None, a0: torch.Tensor | None,
             spec: ResetTermSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Reset-term LIF over a sequence, fused: ``(spikes or trace, v)``.

    Same values and gradients (to ``c``, ``v0`` and the trace state ``a0``) as
    :class:`spikegrad.rules.reset_term.SequenceFunction` followed, when ``spec.tau_s`` is set,
    by :func:`spikegrad.rules.reset_term.trace` from ``a0``.

    Args:
        c: input currents.
        v0: initial post-reset state (zeros if ``None``).
        a0: initial trace (zeros if ``None``; unused without ``tau_s``).
        spec: the rule's parameters.

    Returns:
        ``(out, v)``: spikes (or the trace) and post-reset states, in ``c``'s dtype.

    Shape:
        c: ``[T, *]``; v0, a0: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    cf = flat(c, "c")
    trace = spec.tau_s is not None
    tau_s = spec.tau_s if trace else 1.0
    kind, sg_a, sg_b = spec.surrogate_args
    out, v, _ = reset_term_fwd_op(
        cf, state_vector(v0, c, "v0"), state_vector(a0, c, "a0"), f32(spec.beta),
        f32(spec.threshold),
        spec.mechanism == "subtract", spec.surrogate.inclusive, trace,
        f32(1.0 - 1.0 / tau_s) if trace else 0.0, f32_div(1.0, tau_s), kind, sg_a, sg_b,
        f32(spec.reset_grad_scale), f32(tau_s), f32_div(1.0, tau_s))
    return out.view(c.shape), v.view(c.shape)
