"""Triton kernels of Neighborhood Aggregation (NA): the forward pass and the neighbor replay.

Transcription of the CuPy kernels (:mod:`spikegrad.rules.cupy_kernels.kernels`), which follow
:func:`spikegrad.rules.na.forward` and :func:`~spikegrad.rules.na.backward`: one program per
``BLOCK`` neurons, time loops inside, float32 state in registers. The pre-reset potential
``u`` (output and initial state) is float32 for every storage type: the spike is ``u > ϑ``
(strict), and a ``u`` rounded to half could be decided differently when read back.

The backward kernel recomputes the forward trajectory into float32 scratch ``U``, ``A``
(``[T, N]``), the errors into ``E``, then replays neighbor ``q`` (the spike at ``q`` flipped)
over ``t = q+1 .. T-1`` in registers: ``T (T - 1) / 2`` steps per neuron, no ``[T, T, N]``
tensor. Helpers (rounded stores, lanes) are those of :mod:`.kernels_lif`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from spikegrad.rules.triton_kernels.kernels_lif import lanes, load, store

__all__ = ["na_fwd", "na_bwd"]


@triton.jit
def _after_reset(u, fire, theta, SUBTRACT: tl.constexpr):
    """The post-reset state: ``u - ϑ s`` (subtract) or ``0`` where it fired (zero)."""
    if SUBTRACT:
        r = u - theta * tl.where(fire, 1.0, 0.0)
    else:
        r = tl.where(fire, 0.0, u)
    return r


@triton.jit
def _trace(a, s, ls, gain, TRACE: tl.constexpr):
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
    v = _after_reset(up, up > theta, theta, SUBTRACT)
    a = load(a0_ptr + offs, mask)
    k = offs
    for _ in range(T):
        u = beta * v + load(c_ptr + k, mask)
        f = u > theta
        v = _after_reset(u, f, theta, SUBTRACT)
        a = _trace(a, tl.where(f, 1.0, 0.0), ls, gain, TRACE)
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
    v = _after_reset(up, up > theta, theta, SUBTRACT)
    a_before = load(a0_ptr + offs, mask)
    a = a_before
    k = offs
    for _ in range(T):
        u = beta * v + load(c_ptr + k, mask)
        f = u > theta
        v = _after_reset(u, f, theta, SUBTRACT)
        a = _trace(a, tl.where(f, 1.0, 0.0), ls, gain, TRACE)
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
        ak = _trace(a_prev, 1.0 - sq, ls, gain, TRACE)
        vk = theta * sq  # removed spike: parked at exactly ϑ; added spike: reset to 0
        dl = tl.load(E_ptr + kq, mask=mask, other=0.0) * (ak - aq)
        kt = kq + N
        for _t in range(q + 1, T):
            ut = beta * vk + load(c_ptr + kt, mask)
            f = ut > theta
            vk = _after_reset(ut, f, theta, SUBTRACT)
            ak = _trace(ak, tl.where(f, 1.0, 0.0), ls, gain, TRACE)
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
