"""Triton kernels of reset-term, BPSA/BPTA (HTDGLIF) and multi-strength, and shared helpers.

Transcriptions of the CuPy kernels (:mod:`spikegrad.rules.cupy_kernels.kernels`), which follow
the torch references operation by operation: one program per ``BLOCK`` neurons of ``[T, N]``
(element ``t * N + i``), a loop over time inside, the state in float32 registers; loads are
widened to float32 and only stored values are rounded (to nearest even) to the storage type.
Structural choices are ``tl.constexpr``; the rule's constants are float32 scalar arguments.

Divisions are IEEE-rounded (``div_rn``), never Triton's approximate ``/``. "Tensor / Python
scalar" follows torch on each device: the CPU divides, CUDA multiplies by the float32
reciprocal (``RECIP``). Launch on CUDA with ``enable_fp_fusion=False`` (no FMA: torch's CPU
and CUDA elementwise kernels round the product and the sum separately).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["INTERPRETED", "reset_term_fwd", "reset_term_bwd", "bpsta_fwd", "bpsta_bwd",
           "multistrength_fwd", "multistrength_bwd"]


@triton.jit
def store(ptr, x, mask):
    """Store float32 ``x`` rounded to nearest even to ``ptr``'s type (bfloat16 by integer
    rounding: Triton's interpreter truncates otherwise; the GPU result is the same)."""
    if ptr.dtype.element_ty == tl.bfloat16:
        b = x.to(tl.uint32, bitcast=True)
        r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        r = tl.where(x != x, 0x7FC0, r)  # NaN stays NaN
        tl.store(ptr, r.to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=mask)
    else:
        tl.store(ptr, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def load(ptr, mask):
    """Load and widen to float32."""
    return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def divs(x, b, inv_b, RECIP: tl.constexpr):
    """``x / b`` for a Python-scalar ``b`` as torch computes it (CUDA: ``x * (1/b)``)."""
    if RECIP:
        r = x * inv_b
    else:
        r = tl.math.div_rn(x, b)
    return r


@triton.jit
def lanes(BLOCK: tl.constexpr, N):
    """This program's neuron indices (int64) and their mask."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < N


@triton.jit
def _surrogate_grad(x, sg_a, sg_b, KIND: tl.constexpr, RECIP: tl.constexpr):
    """``H'(x)``: Sigmoid (``sg_a = T, sg_b = 1/T``) or ATan (``sg_a = α/2, sg_b = πα/2``)."""
    if KIND == 0:
        sig = tl.math.div_rn(1.0, 1.0 + tl.exp(-divs(x, sg_a, sg_b, RECIP)))
        r = divs(sig * (1.0 - sig), sg_a, sg_b, RECIP)
    else:
        k = sg_b * x
        r = tl.math.div_rn(1.0, 1.0 + k * k) * sg_a  # torch: scalar / t = reciprocal(t) * s
    return r


# --- reset-term ---------------------------------------------------------------------------------
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
        dh = _surrogate_grad(x, sg_a, sg_b, SURROGATE, RECIP)
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


# --- BPSA / BPTA (HTDGLIF) ----------------------------------------------------------------------
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


# --- multi-strength -----------------------------------------------------------------------------
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
INTERPRETED = type(reset_term_fwd).__name__ == "InterpretedFunction"
