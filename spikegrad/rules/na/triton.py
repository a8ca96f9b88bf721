"""NA's hand-written Triton kernels, their ``triton_op`` operators and the entry point
:func:`sequence` (whole windows; float32 arithmetic, float32/float16/bfloat16 storage; ``u``
and ``u0`` float32 for every storage type).

Operators ``spikegrad::triton_na_fwd(c, u0, a0, ...) -> (out, u)`` and
``spikegrad::triton_na_bwd``: NA saves only its inputs and its backward kernel recomputes the
trajectory and replays all ``T`` neighbors of a neuron in registers. The jit helpers
``after_reset`` and ``trace`` are shared with the replay kernel
(:mod:`spikegrad.rules.na.triton_replay`). Shared helpers and conventions:
:mod:`spikegrad.rules.triton_kernels.lib`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from spikegrad.rules._oplib import state_vector
from spikegrad.rules.na.reference import NA, Rescale
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

__all__ = ["sequence", "after_reset", "trace"]

Tensor = torch.Tensor
F32 = torch.float32


# --- kernels -------------------------------------------------------------------------------------
@triton.jit
def after_reset(u, fire, theta, SUBTRACT: tl.constexpr):
    """The post-reset state: ``u - ϑ s`` (subtract) or ``0`` where it fired (zero)."""
    if SUBTRACT:
        r = u - theta * tl.where(fire, 1.0, 0.0)
    else:
        r = tl.where(fire, 0.0, u)
    return r


@triton.jit
def trace(a, s, ls, gain, TRACE: tl.constexpr):
    """``a[t] = λs a[t-1] + s/τs`` (or ``s`` without a trace)."""
    if TRACE:
        r = ls * a + gain * s
    else:
        r = s
    return r


@triton.jit
def na_fwd(c_ptr, u0_ptr, a0_ptr, out_ptr, u_ptr, T, N, beta, theta, ls, gain,
           TRACE: tl.constexpr, SUBTRACT: tl.constexpr, BLOCK: tl.constexpr):
    """Forward from the pre-reset potential ``u0`` (float32) and trace ``a0``: ``out`` (trace
    or spikes, storage type) and ``u`` (float32)."""
    offs, mask = lanes(BLOCK, N)
    up = tl.load(u0_ptr + offs, mask=mask, other=0.0)
    v = after_reset(up, up > theta, theta, SUBTRACT)
    a = load(a0_ptr + offs, mask)
    k = offs
    for _ in range(T):
        u = beta * v + load(c_ptr + k, mask)
        f = u > theta
        v = after_reset(u, f, theta, SUBTRACT)
        a = trace(a, tl.where(f, 1.0, 0.0), ls, gain, TRACE)
        tl.store(u_ptr + k, u, mask=mask)
        store(out_ptr + k, a, mask)
        k += N


@triton.jit
def na_bwd(c_ptr, u0_ptr, a0_ptr, g_ptr, g_u_ptr, delta_ptr, U_ptr, A_ptr, E_ptr, T, N, last,
           beta, theta, ls, gain, clamp, TRACE: tl.constexpr, SUBTRACT: tl.constexpr,
           CUBE: tl.constexpr, ACCUMULATED: tl.constexpr, HAS_G: tl.constexpr,
           HAS_G_U: tl.constexpr, BLOCK: tl.constexpr):
    """``δ = dL/dc`` (steps 1-4 of :mod:`spikegrad.rules.na`, plus ``dL/du`` unchanged)."""
    offs, mask = lanes(BLOCK, N)
    # 1. the forward trajectory, recomputed in float32 (U, A: scratch)
    up = tl.load(u0_ptr + offs, mask=mask, other=0.0)
    v = after_reset(up, up > theta, theta, SUBTRACT)
    a_before = load(a0_ptr + offs, mask)
    a = a_before
    k = offs
    for _ in range(T):
        u = beta * v + load(c_ptr + k, mask)
        f = u > theta
        v = after_reset(u, f, theta, SUBTRACT)
        a = trace(a, tl.where(f, 1.0, 0.0), ls, gain, TRACE)
        tl.store(U_ptr + k, u, mask=mask)
        tl.store(A_ptr + k, a, mask=mask)
        k += N
    # 2. errors e ("accumulated": e[t] = g[t] + λs e[t+1]; E: scratch)
    e = tl.zeros([BLOCK], tl.float32)
    k = offs + last
    for _ in range(T):
        if HAS_G:
            g_t = load(g_ptr + k, mask)
        else:
            g_t = tl.zeros([BLOCK], tl.float32)
        if ACCUMULATED and TRACE:
            e = g_t + ls * e
        else:
            e = g_t
        tl.store(E_ptr + k, e, mask=mask)
        k -= N
    # 3. neighbor q flips the spike at step q; replayed in registers (vk, ak, dl)
    a_prev = a_before
    kq = offs
    for q in range(T):
        uq = tl.load(U_ptr + kq, mask=mask, other=0.0)
        aq = tl.load(A_ptr + kq, mask=mask, other=0.0)
        sq = tl.where(uq > theta, 1.0, 0.0)
        ak = trace(a_prev, 1.0 - sq, ls, gain, TRACE)
        vk = theta * sq  # removed spike: parked at exactly ϑ; added spike: reset to 0
        dl = tl.load(E_ptr + kq, mask=mask, other=0.0) * (ak - aq)
        kt = kq + N
        for _t in range(q + 1, T):
            ut = beta * vk + load(c_ptr + kt, mask)
            f = ut > theta
            vk = after_reset(ut, f, theta, SUBTRACT)
            ak = trace(ak, tl.where(f, 1.0, 0.0), ls, gain, TRACE)
            at = tl.load(A_ptr + kt, mask=mask, other=0.0)
            dl += tl.load(E_ptr + kt, mask=mask, other=0.0) * (ak - at)
            kt += N
        # 4. distance weight, clamped (u == ϑ exactly: 1 / +0 = +inf, so +clamp)
        w = tl.math.div_rn(1.0, theta - uq)
        if CUBE:
            w = w * w * w
        w = tl.where(w > clamp, clamp, tl.where(w < -clamp, -clamp, w))
        d = dl * w
        if HAS_G_U:
            d = d + tl.load(g_u_ptr + kq, mask=mask, other=0.0)
        store(delta_ptr + kq, d, mask)
        a_prev = aq
        kq += N


# --- operators -----------------------------------------------------------------------------------
@triton_op("spikegrad::triton_na_fwd", mutates_args=())
def na_fwd_op(c: Tensor, u0: Tensor, a0: Tensor, beta: float, threshold: float, ls: float,
              gain: float, clamp: float, trace: bool, subtract: bool, cube: bool,
              accumulated: bool) -> tuple[Tensor, Tensor]:
    """NA forward: ``(out, u)`` (``u`` float32; ``u0`` float32)."""
    c, T, N = c.contiguous(), *c.shape
    out = torch.empty_like(c)
    u = torch.empty(c.shape, dtype=F32, device=c.device)
    launch(na_fwd, c, c, u0.contiguous(), a0.contiguous(), out, u, T, N, beta, threshold, ls,
            gain, TRACE=trace, SUBTRACT=subtract)
    return out, u


@triton_op("spikegrad::triton_na_bwd", mutates_args=())
def na_bwd_op(c: Tensor, u0: Tensor, a0: Tensor, g: Tensor | None, g_u: Tensor | None,
              beta: float, threshold: float, ls: float, gain: float, clamp: float, trace: bool,
              subtract: bool, cube: bool, accumulated: bool) -> Tensor:
    """NA backward: ``δ = dL/dc`` (``g_u``, float32, added unchanged), in ``c``'s dtype."""
    c, (T, N, last) = c.contiguous(), tn(c)
    delta = torch.empty_like(c)
    U, A, E = (torch.empty(c.shape, dtype=F32, device=c.device) for _ in range(3))
    (gg, has_g), (gu, has_u) = grad_arg(g, delta), grad_arg(g_u, U)
    launch(na_bwd, c, c, u0.contiguous(), a0.contiguous(), gg, gu, delta, U, A, E, T, N, last,
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


# --- entry point ---------------------------------------------------------------------------------
def _na_args(cfg: NA) -> tuple[Any, ...]:
    return (f32(cfg.beta), f32(cfg.threshold), f32(cfg.trace_decay), f32(cfg.trace_gain),
            f32(cfg.clamp), cfg.tau_s is not None, cfg.reset == "subtract",
            cfg.distance == "inverse_cube", cfg.error == "accumulated")


class _NARescaled(torch.autograd.Function):
    """The NA operators with the Python-side :class:`~spikegrad.rules.na.Rescale` applied
    between the backward kernel and the ``u`` gradient, as :class:`~spikegrad.rules.na.NAFunction`
    does (the rescale needs the whole layer's ``δ`` and keeps state, so it stays out of the
    operator; this path is not traceable by ``torch.compile``)."""

    @staticmethod
    def forward(c: torch.Tensor, u0: torch.Tensor, a0: torch.Tensor,  # type: ignore[override]
                args: tuple[Any, ...], rescale: Rescale) -> tuple[torch.Tensor, torch.Tensor]:
        return na_fwd_op(c, u0, a0, *args)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        c, u0, a0, args, rescale = inputs
        ctx.save_for_backward(c, u0, a0)
        ctx.args, ctx.rescale = args, rescale
        ctx.set_materialize_grads(False)
        rescale.begin()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor | None, g_u: torch.Tensor | None  # type: ignore[override]
                 ) -> tuple[Any, ...]:
        c, u0, a0 = ctx.saved_tensors
        delta = ctx.rescale(na_bwd_op(c, u0, a0, g, None, *ctx.args))
        if g_u is not None:
            delta = delta + g_u.to(delta.dtype)
        return delta, None, None, None, None


def sequence(c: torch.Tensor, cfg: NA, rescale: Rescale | None = None,
             u_init: torch.Tensor | None = None, a_init: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`spikegrad.rules.na.NAFunction` fused: ``(out, u)`` with the NA backward.

    ``out`` is the trace (the spikes without ``tau_s``) in ``c``'s dtype; ``u`` (and
    ``u_init``) is float32 for every input dtype (the spike is decided on it). All ``T``
    neighbors of a neuron are replayed in registers by the backward kernel. The gradient
    flows to ``c`` only (``u_init``, ``a_init`` continue an earlier state, not differentiated);
    one arriving at ``u`` is added to ``δ`` unchanged.

    ``rescale`` (a :class:`~spikegrad.rules.na.Rescale`, Python-side state coupling the
    layers) is applied outside the operators, in a small autograd node, to the kernel's ``δ``
    before the ``u`` gradient is added, as the reference does; that path runs eagerly only.

    Shape:
        c: ``[T, *]``; u_init, a_init: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    cf = flat(c, "c")
    u0 = state_vector(u_init, c, "u_init", F32).detach()
    a0 = state_vector(a_init, c, "a_init").detach()
    if rescale is None:
        out, u = na_fwd_op(cf, u0, a0, *_na_args(cfg))
    else:
        out, u = _NARescaled.apply(cf, u0, a0, _na_args(cfg), rescale)
    return out.view(c.shape), u.view(c.shape)
