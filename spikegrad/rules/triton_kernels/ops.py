"""The kernels as ``torch.library.triton_op`` operators, differentiable through
``register_autograd``, so that ``torch.compile`` (Inductor) sees the Triton kernels inside.

Operators (namespace ``spikegrad``), on flattened contiguous ``[T, N]`` inputs and ``[N]``
states (the entry points of :mod:`spikegrad.rules.triton_kernels.functions` flatten, broadcast
and check):

* ``triton_reset_term_fwd(c, v0, a0, ...) -> (out, v, u)``, ``triton_reset_term_bwd``;
* ``triton_na_fwd(c, u0, a0, ...) -> (out, u)``, ``triton_na_bwd``;
* ``triton_bpsta_fwd(x, v0, ...) -> (o, v, h)``, ``triton_bpsta_bwd``;
* ``triton_multistrength_fwd(z, v0, ...) -> (theta, v, h)``, ``triton_multistrength_bwd``.

The third output of the LIF-type forward operators is the float32 pre-reset potential saved
for the backward pass (not differentiable). NA saves only its inputs and recomputes the
trajectory in its backward kernel; NA's ``u`` and ``u0`` are float32 for every storage type.

On CUDA the kernels launch with ``enable_fp_fusion=False`` (no FMA, as torch rounds).
Under ``TRITON_INTERPRET=1`` ``wrap_triton`` returns the interpreted kernel unchanged: the
operators run eagerly on CPU tensors but cannot be traced by ``torch.compile``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
from torch.library import triton_op, wrap_triton

from spikegrad.rules.triton_kernels import kernels_lif as K
from spikegrad.rules.triton_kernels.kernels_na import na_bwd, na_fwd

__all__ = ["BLOCK", "reset_term_fwd", "reset_term_bwd", "bpsta_fwd", "bpsta_bwd",
           "multistrength_fwd", "multistrength_bwd", "na_fwd_op", "na_bwd_op"]

Tensor = torch.Tensor
F32 = torch.float32
#: neurons per program (one per thread with 4 warps)
BLOCK = 128


def _launch(kernel: Any, x: Tensor, *args: Any, **meta: Any) -> None:
    """Launch ``kernel`` over ``ceil(N / BLOCK)`` programs (``x`` is ``[T, N]``)."""
    options = dict(num_warps=4, enable_fp_fusion=False) if x.is_cuda else {}
    grid = (triton.cdiv(x.shape[1], BLOCK),)
    wrap_triton(kernel)[grid](*args, BLOCK=BLOCK, **meta, **options)


def _tn(x: Tensor) -> tuple[int, int, int]:
    """``T``, ``N`` and the offset of the last step, ``(T - 1) N``."""
    T, N = x.shape
    return T, N, (T - 1) * N


def _g(g: Tensor | None, like: Tensor) -> tuple[Tensor, bool]:
    """An optional upstream gradient as a kernel argument (contiguous) and its presence."""
    return (like, False) if g is None else (g.contiguous(), True)


# --- reset-term ---------------------------------------------------------------------------------
@triton_op("spikegrad::triton_reset_term_fwd", mutates_args=())
def reset_term_fwd(c: Tensor, v0: Tensor, a0: Tensor, beta: float, threshold: float,
                   subtract: bool, inclusive: bool, trace: bool, ls: float, gain: float,
                   surrogate: int, sg_a: float, sg_b: float, k_scale: float, tau_s: float,
                   inv_tau_s: float) -> tuple[Tensor, Tensor, Tensor]:
    """Reset-term forward: ``(out, v, u)`` (``u`` float32, saved for the backward)."""
    c, T, N = c.contiguous(), *c.shape
    out, v = torch.empty_like(c), torch.empty_like(c)
    u = torch.empty(c.shape, dtype=F32, device=c.device)
    _launch(K.reset_term_fwd, c, c, v0.contiguous(), a0.contiguous(), out, v, u, T, N, beta,
            threshold, ls, gain, SUBTRACT=subtract, INCLUSIVE=inclusive, TRACE=trace)
    return out, v, u


@triton_op("spikegrad::triton_reset_term_bwd", mutates_args=())
def reset_term_bwd(u: Tensor, g_out: Tensor | None, g_v: Tensor | None, dtype: torch.dtype,
                   beta: float, threshold: float, subtract: bool, inclusive: bool, trace: bool,
                   ls: float, gain: float, surrogate: int, sg_a: float, sg_b: float,
                   k_scale: float, tau_s: float, inv_tau_s: float
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Reset-term backward: ``(dL/dc, dL/dv0, dL/da0)`` in ``dtype``."""
    T, N, last = _tn(u)
    grad_c = torch.empty(u.shape, dtype=dtype, device=u.device)
    grad_v0, grad_a0 = grad_c.new_empty(N), grad_c.new_zeros(N)
    (g_o, has_o), (g_vv, has_v) = _g(g_out, grad_c), _g(g_v, grad_c)
    _launch(K.reset_term_bwd, u, u, g_o, g_vv, grad_c, grad_v0, grad_a0, T, N, last, beta,
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
    gc, gv0, ga0 = reset_term_bwd(u, g_out, g_v, ctx.dtype, *ctx.params)
    trace = ctx.params[4]
    return (gc, gv0, ga0 if trace else None) + (None,) * len(ctx.params)


reset_term_fwd.register_autograd(_rt_backward, setup_context=_rt_setup)


# --- BPSA / BPTA --------------------------------------------------------------------------------
@triton_op("spikegrad::triton_bpsta_fwd", mutates_args=())
def bpsta_fwd(x: Tensor, v0: Tensor, paper: bool, threshold: float, alpha: float, decay: float,
              dt: float) -> tuple[Tensor, Tensor, Tensor]:
    """HTDGLIF forward: ``(o, v, h)`` (``h`` float32, saved for the backward)."""
    x, T, N = x.contiguous(), *x.shape
    o, v = torch.empty_like(x), torch.empty_like(x)
    h = torch.empty(x.shape, dtype=F32, device=x.device)
    _launch(K.bpsta_fwd, x, x, v0.contiguous(), o, v, h, T, N, threshold, decay, dt, PAPER=paper)
    return o, v, h


@triton_op("spikegrad::triton_bpsta_bwd", mutates_args=())
def bpsta_bwd(x: Tensor, h: Tensor, g_o: Tensor | None, g_v: Tensor | None, paper: bool,
              threshold: float, alpha: float, decay: float, dt: float
              ) -> tuple[Tensor, Tensor]:
    """HTDGLIF backward: ``(dL/dx, dL/dv0)`` in ``x``'s dtype."""
    T, N, last = _tn(h)
    grad_x, grad_v0 = torch.empty_like(x), x.new_empty(N)
    (go, has_o), (gv, has_v) = _g(g_o, grad_x), _g(g_v, grad_x)
    _launch(K.bpsta_bwd, h, x.contiguous(), h, go, gv, grad_x, grad_v0, T, N, last, threshold,
            alpha, decay, dt, PAPER=paper, HAS_G_O=has_o, HAS_G_V=has_v)
    return grad_x, grad_v0


def _ht_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.save_for_backward(inputs[0], output[2])
    ctx.params = inputs[2:]
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _ht_backward(ctx: Any, g_o: Tensor | None, g_v: Tensor | None, _g_h: Any) -> tuple[Any, ...]:
    x, h = ctx.saved_tensors
    return bpsta_bwd(x, h, g_o, g_v, *ctx.params) + (None,) * len(ctx.params)


bpsta_fwd.register_autograd(_ht_backward, setup_context=_ht_setup)


# --- multi-strength -----------------------------------------------------------------------------
@triton_op("spikegrad::triton_multistrength_fwd", mutates_args=())
def multistrength_fwd(z: Tensor, v0: Tensor, tau: float, inv_tau: float, beta: float,
                      capped: bool, cap: float, window_hi: float, detach: bool
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Multi-strength forward: ``(θ, v, h)`` (``h`` float32, saved for the backward)."""
    z, T, N = z.contiguous(), *z.shape
    theta, v = torch.empty_like(z), torch.empty_like(z)
    h = torch.empty(z.shape, dtype=F32, device=z.device)
    _launch(K.multistrength_fwd, z, z, v0.contiguous(), theta, v, h, T, N, tau, inv_tau, beta,
            cap, CAPPED=capped, RECIP=z.is_cuda)
    return theta, v, h


@triton_op("spikegrad::triton_multistrength_bwd", mutates_args=())
def multistrength_bwd(h: Tensor, g_theta: Tensor | None, g_v: Tensor | None, dtype: torch.dtype,
                      tau: float, inv_tau: float, beta: float, capped: bool, cap: float,
                      window_hi: float, detach: bool) -> tuple[Tensor, Tensor]:
    """Multi-strength backward: ``(dL/dz, dL/dv0)`` in ``dtype``."""
    T, N, last = _tn(h)
    grad_z = torch.empty(h.shape, dtype=dtype, device=h.device)
    grad_v0 = grad_z.new_empty(N)
    (gt, has_t), (gv, has_v) = _g(g_theta, grad_z), _g(g_v, grad_z)
    _launch(K.multistrength_bwd, h, h, gt, gv, grad_z, grad_v0, T, N, last, tau, inv_tau, -tau,
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
    return multistrength_bwd(h, g_t, g_v, ctx.dtype, *ctx.params) + (None,) * len(ctx.params)


multistrength_fwd.register_autograd(_ms_backward, setup_context=_ms_setup)


# --- NA -----------------------------------------------------------------------------------------
@triton_op("spikegrad::triton_na_fwd", mutates_args=())
def na_fwd_op(c: Tensor, u0: Tensor, a0: Tensor, beta: float, threshold: float, ls: float,
              gain: float, clamp: float, trace: bool, subtract: bool, cube: bool,
              accumulated: bool) -> tuple[Tensor, Tensor]:
    """NA forward: ``(out, u)`` (``u`` float32; ``u0`` float32)."""
    c, T, N = c.contiguous(), *c.shape
    out = torch.empty_like(c)
    u = torch.empty(c.shape, dtype=F32, device=c.device)
    _launch(na_fwd, c, c, u0.contiguous(), a0.contiguous(), out, u, T, N, beta, threshold, ls,
            gain, TRACE=trace, SUBTRACT=subtract)
    return out, u


@triton_op("spikegrad::triton_na_bwd", mutates_args=())
def na_bwd_op(c: Tensor, u0: Tensor, a0: Tensor, g: Tensor | None, g_u: Tensor | None,
              beta: float, threshold: float, ls: float, gain: float, clamp: float, trace: bool,
              subtract: bool, cube: bool, accumulated: bool) -> Tensor:
    """NA backward: ``δ = dL/dc`` (``g_u``, float32, added unchanged), in ``c``'s dtype."""
    c, (T, N, last) = c.contiguous(), _tn(c)
    delta = torch.empty_like(c)
    U, A, E = (torch.empty(c.shape, dtype=F32, device=c.device) for _ in range(3))
    (gg, has_g), (gu, has_u) = _g(g, delta), _g(g_u, U)
    _launch(na_bwd, c, c, u0.contiguous(), a0.contiguous(), gg, gu, delta, U, A, E, T, N, last,
            beta, threshold, ls, gain, clamp, TRACE=trace, SUBTRACT=subtract, CUBE=cube,
            ACCUMULATED=accumulated, HAS_G=has_g, HAS_G_U=has_u)
    return delta


def _na_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.save_for_backward(*inputs[:3])
    ctx.params = inputs[3:]
    ctx.set_materialize_grads(False)


def _na_backward(ctx: Any, g: Tensor | None, g_u: Tensor | None) -> tuple[Any, ...]:
    c, u0, a0 = ctx.saved_tensors
    delta = na_bwd_op(c, u0, a0, g, g_u, *ctx.params)
    return (delta, None, None) + (None,) * len(ctx.params)


na_fwd_op.register_autograd(_na_backward, setup_context=_na_setup)
