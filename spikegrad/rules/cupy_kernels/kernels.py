"""The four rules as kernel bodies: C transcriptions of the torch references, nothing new.

Each ``*_spec`` function turns a rule's parameters into a :class:`~.source.KernelSpec`; each
body computes exactly what its reference computes (same operations in the same order, so the
forward pass is bit-identical in fp32; equations in the rule modules):

* reset-term: :class:`spikegrad.rules.reset_term.SequenceFunction` and
  :func:`~spikegrad.rules.reset_term.trace` (``ResetTermLIFNode``'s multi-step path);
* NA: :func:`spikegrad.rules.na.forward` and :func:`~spikegrad.rules.na.backward` (all ``T``
  neighbors replayed in registers; the forward trajectory is recomputed in fp32 and the
  errors accumulated into fp32 scratch, so only the inputs are saved between the passes);
* BPSA/BPTA: :func:`spikegrad.rules.bpsta.step_v` (both modes);
* multi-strength: :func:`spikegrad.rules.multistrength.step`.

Half-precision storage: loads are converted to fp32, the state is carried in fp32 and only the
stored values are rounded (the reference for fp16 is the fp32 computation, rounded). NA's
pre-reset potential ``u`` (output and start state) stays fp32 for every storage type: the spike
is ``u > θ``, and a ``u`` rounded to half could be decided again differently (1.0000977 fires,
its half 1.0 does not).
"""

from __future__ import annotations

import functools
from typing import Any

from spikegrad.rules.cupy_kernels.ctext import c_float
from spikegrad.rules.cupy_kernels.source import KernelSpec, Param

__all__ = ["reset_term_spec", "na_spec", "bpsta_spec", "multistrength_spec"]


def _b(value: bool) -> tuple[str, str]:
    return "bool", "true" if value else "false"


def _consts(**items: tuple[str, str] | float) -> tuple[tuple[str, str, str], ...]:
    """``NAME=float`` (a float32 literal), ``NAME=(ctype, C expression)``."""
    out = []
    for name, value in items.items():
        ctype, expr = value if isinstance(value, tuple) else ("float", c_float(value))
        out.append((ctype, name, expr))
    return tuple(out)


def _params(spec: str) -> tuple[Param, ...]:
    """``"name:kind"`` (``[T, N]``) or ``"name:kind:N"`` (one value per neuron) items."""
    return tuple(Param(*item.split(":")) for item in spec.split())


# --- reset-term ---------------------------------------------------------------------------------
_RT_FWD = r"""
  float v = sg_load(v0, i);
  float a = sg_load(a0, i);
  for (long long t = 0; t < T; ++t) {
    const long long k = t * N + i;
    const float u = BETA * v + sg_load(c, k);
    const float x = u - THETA;
    const float s = (INCLUSIVE ? x >= 0.0f : x > 0.0f) ? 1.0f : 0.0f;
    v = SUBTRACT ? u - THETA * s : u * (1.0f - s);
    u_save[k] = u;
    sg_store(v_out, k, v);
    if (TRACE) {
      a = LS * a + s * GAIN;
      sg_store(out, k, a);
    } else {
      sg_store(out, k, s);
    }
  }
"""
_RT_BWD = r"""
  float dv = 0.0f;  /* dL/dv[t], v the post-reset state */
  float ea = 0.0f;  /* dL/da[t] through the trace */
  for (long long t = T - 1; t >= 0; --t) {
    const long long k = t * N + i;
    float gs = has_g_out ? sg_load(g_out, k) : 0.0f;
    if (TRACE) {
      ea = gs + LS * ea;
      gs = SG_DIVS(ea, TAU_S, INV_TAU_S);
    }
    if (has_g_v) dv += sg_load(g_v, k);
    const float u = u_save[k];
    const float x = u - THETA;
    const float dh = surrogate_grad(x);
    const float s = (INCLUSIVE ? x >= 0.0f : x > 0.0f) ? 1.0f : 0.0f;
    const float dv_du = SUBTRACT ? dh * MINUS_K_THETA + 1.0f : (1.0f - s) - K * (dh * u);
    const float du = gs * dh + dv * dv_du;
    sg_store(grad_c, k, du);
    dv = du * BETA;
  }
  sg_store(grad_v0, i, dv);
  if (TRACE) sg_store(grad_a0, i, LS * ea);
"""


@functools.lru_cache(maxsize=256)
def reset_term_spec(beta: float, threshold: float, surrogate: Any, mechanism: str,
                    reset_grad_scale: float, tau_s: float | None) -> KernelSpec:
    """Kernels of ``ResetTermLIFNode``'s multi-step path (spikes, or the trace if ``tau_s``).

    ``surrogate`` must be a spikegrad surrogate (its ``c_derivative`` is the backward's
    ``H'``); its ``inclusive`` flag is the spike convention.
    """
    trace = tau_s is not None
    consts = _consts(
        BETA=beta, THETA=threshold, K=reset_grad_scale,
        MINUS_K_THETA=-reset_grad_scale * threshold,
        SUBTRACT=_b(mechanism == "subtract"), INCLUSIVE=_b(surrogate.inclusive),
        TRACE=_b(trace), LS=1.0 - 1.0 / tau_s if trace else 0.0,
        TAU_S=tau_s if trace else 1.0, INV_TAU_S=("float", "1.0f / TAU_S"),
        GAIN=("float", "1.0f / TAU_S"),  # s / tau_s with s = 1, as torch rounds it
    )
    helper = f"SG_DEVICE float surrogate_grad(float x) {{ return {surrogate.c_derivative('x')}; }}"
    return KernelSpec(
        rule="reset_term", constants=consts, helpers=helper,
        forward_params=_params("c:in v0:in:N a0:in:N out:out v_out:out u_save:fout"),
        backward_params=_params("u_save:fin g_out:in has_g_out:flag g_v:in has_g_v:flag "
                                "grad_c:out grad_v0:out:N grad_a0:out:N"),
        forward_body=_RT_FWD, backward_body=_RT_BWD,
    )


# --- NA -----------------------------------------------------------------------------------------
_NA_RESET = r"""
SG_DEVICE float after_reset(float u, bool fire) {
  if (SUBTRACT) return u - THETA * (fire ? 1.0f : 0.0f);
  return fire ? 0.0f : u;
}
"""
_NA_FWD = r"""
  const float up = sg_load(u_init, i);
  float v = after_reset(up, up > THETA);
  float a = sg_load(a_init, i);
  for (long long t = 0; t < T; ++t) {
    const long long k = t * N + i;
    const float u = BETA * v + sg_load(c, k);
    const bool f = u > THETA;
    v = after_reset(u, f);
    const float s = f ? 1.0f : 0.0f;
    a = TRACE ? LS * a + GAIN * s : s;
    u_out[k] = u;  /* fp32 for every storage type: the spike is decided on it */
    sg_store(out, k, a);
  }
"""
_NA_BWD = r"""
  /* 1. the forward trajectory, recomputed in fp32 (U, A: scratch) */
  const float up = sg_load(u_init, i);
  float v = after_reset(up, up > THETA);
  const float a_before = sg_load(a_init, i);
  float a = a_before;
  for (long long t = 0; t < T; ++t) {
    const long long k = t * N + i;
    const float u = BETA * v + sg_load(c, k);
    const bool f = u > THETA;
    v = after_reset(u, f);
    const float s = f ? 1.0f : 0.0f;
    a = TRACE ? LS * a + GAIN * s : s;
    U[k] = u;
    A[k] = a;
  }
  /* 2. errors e (E: scratch) */
  float e = 0.0f;
  for (long long t = T - 1; t >= 0; --t) {
    const long long k = t * N + i;
    const float g_t = has_g ? sg_load(g, k) : 0.0f;
    e = (ACCUMULATED && TRACE && t < T - 1) ? g_t + LS * e : g_t;
    E[k] = e;
  }
  /* 3. neighbor q flips the spike at step q; replayed in registers (vk, ak, dl) */
  for (long long q = 0; q < T; ++q) {
    const long long kq = q * N + i;
    const float uq = U[kq];
    const float sq = uq > THETA ? 1.0f : 0.0f;
    const float a_prev = q > 0 ? A[kq - N] : a_before;
    const float flipped = 1.0f - sq;
    float ak = TRACE ? LS * a_prev + GAIN * flipped : flipped;
    float vk = THETA * sq;  /* removed spike: parked at exactly THETA; added: reset to 0 */
    float dl = E[kq] * (ak - A[kq]);
    for (long long t = q + 1; t < T; ++t) {
      const long long k = t * N + i;
      const float ut = BETA * vk + sg_load(c, k);
      const bool f = ut > THETA;
      vk = after_reset(ut, f);
      const float s = f ? 1.0f : 0.0f;
      ak = TRACE ? LS * ak + GAIN * s : s;
      dl += E[k] * (ak - A[k]);
    }
    /* 4. distance weight (+CLAMP at u == THETA exactly: 1 / +0 = +inf) */
    float w = 1.0f / (THETA - uq);
    if (CUBE) w = w * w * w;
    float d = dl * sg_clamp(w, CLAMP);
    if (has_g_u) d = d + g_u[kq];
    sg_store(delta, kq, d);
  }
"""


@functools.lru_cache(maxsize=256)
def na_spec(cfg: Any) -> KernelSpec:
    """Kernels of :class:`spikegrad.rules.na.NA` (``cfg``); the rescale stays in torch."""
    consts = _consts(
        BETA=cfg.beta, THETA=cfg.threshold, LS=cfg.trace_decay, GAIN=cfg.trace_gain,
        CLAMP=cfg.clamp, TRACE=_b(cfg.tau_s is not None), SUBTRACT=_b(cfg.reset == "subtract"),
        CUBE=_b(cfg.distance == "inverse_cube"), ACCUMULATED=_b(cfg.error == "accumulated"),
    )
    return KernelSpec(
        rule="na", constants=consts, helpers=_NA_RESET.strip("\n"),
        forward_params=_params("c:in u_init:fin:N a_init:in:N out:out u_out:fout"),
        backward_params=_params("c:in u_init:fin:N a_init:in:N g:in has_g:flag g_u:fin "
                                "has_g_u:flag delta:out U:fout A:fout E:fout"),
        forward_body=_NA_FWD, backward_body=_NA_BWD,
    )


# --- BPSA / BPTA (HTDGLIF) ----------------------------------------------------------------------
_HT_FWD = r"""
  float v = sg_load(v0, i);
  for (long long t = 0; t < T; ++t) {
    const long long k = t * N + i;
    const float xr = sg_relu(sg_load(x, k));
    const float h = PAPER ? DECAY * v + xr : v + DT * xr;
    const bool fired = h >= THETA;
    const float f = fired ? 1.0f : 0.0f;
    float o;
    if (PAPER) {
      o = f;
      v = fired ? 0.0f : h;
    } else {
      o = h * f;
      v = (h * (1.0f - f) + 0.0f) * DT;  /* + alpha (o - sg(o)): zero forward */
    }
    h_save[k] = h;
    sg_store(o_out, k, o);
    sg_store(v_out, k, v);
  }
"""
_HT_BWD = r"""
  float dv = 0.0f;  /* dL/dv[t], v the post-reset state */
  for (long long t = T - 1; t >= 0; --t) {
    const long long k = t * N + i;
    if (has_g_v) dv += sg_load(g_v, k);
    const float go = has_g_o ? sg_load(g_o, k) : 0.0f;
    const float h = h_save[k];
    const bool fired = h >= THETA;
    const float f = fired ? 1.0f : 0.0f;
    float dh;
    if (PAPER) {  /* BPSA: o / h; BPTA: (1 - o) + alpha o / h */
      const float d_spike = fired ? (go * f) / h : go * f;
      dh = d_spike + dv * (fired ? ALPHA / h : 1.0f);
    } else {  /* do/dh = H; dv/dh = dt ((1 - H) + alpha H) */
      const float inner = dv * DT;
      dh = inner * (1.0f - f) + (go + inner * ALPHA) * f;
    }
    const float dxr = PAPER ? dh : dh * DT;
    sg_store(grad_x, k, sg_load(x, k) > 0.0f ? dxr : 0.0f);
    dv = PAPER ? DECAY * dh : dh;
  }
  sg_store(grad_v0, i, dv);
"""


@functools.lru_cache(maxsize=256)
def bpsta_spec(cfg: Any) -> KernelSpec:
    """Kernels of :class:`spikegrad.rules.bpsta.HTDGLIF` (``cfg``, either mode)."""
    paper = cfg.mode == "paper"
    consts = _consts(
        PAPER=_b(paper), THETA=cfg.threshold, ALPHA=cfg.alpha,
        DECAY=cfg.decay if paper else 1.0, DT=1.0 if paper else cfg.dt,
    )
    return KernelSpec(
        rule="bpsta", constants=consts, helpers="",
        forward_params=_params("x:in v0:in:N o_out:out v_out:out h_save:fout"),
        backward_params=_params("x:in h_save:fin g_o:in has_g_o:flag g_v:in has_g_v:flag "
                                "grad_x:out grad_v0:out:N"),
        forward_body=_HT_FWD, backward_body=_HT_BWD,
    )


# --- multi-strength -----------------------------------------------------------------------------
_MS_FWD = r"""
  float v = sg_load(v0, i);
  for (long long t = 0; t < T; ++t) {
    const long long k = t * N + i;
    const float h = BETA * v + sg_load(z, k);
    const float hc = h < 0.0f ? 0.0f : h;
    float theta = floorf(SG_DIVS(hc, TAU, INV_TAU));
    if (CAPPED) theta = theta > CAP ? CAP : theta;
    v = h - TAU * theta;
    h_save[k] = h;
    sg_store(theta_out, k, theta);
    sg_store(v_out, k, v);
  }
"""
_MS_BWD = r"""
  float dv = 0.0f;  /* dL/dv[t], v the remainder */
  for (long long t = T - 1; t >= 0; --t) {
    const long long k = t * N + i;
    if (has_g_v) dv += sg_load(g_v, k);
    const float h = h_save[k];
    const bool window = h >= 0.0f && (!CAPPED || h < WINDOW_HI);
    float g_theta = has_g_theta ? sg_load(g_theta_in, k) : 0.0f;
    if (!DETACH) g_theta = g_theta + dv * MINUS_TAU;
    const float dh = dv + SG_DIVS(g_theta * (window ? 1.0f : 0.0f), TAU, INV_TAU);
    sg_store(grad_z, k, dh);
    dv = BETA * dh;
  }
  sg_store(grad_v0, i, dv);
"""


@functools.lru_cache(maxsize=256)
def multistrength_spec(cfg: Any) -> KernelSpec:
    """Kernels of :class:`spikegrad.rules.multistrength.MultiStrength` (``cfg``)."""
    capped = cfg.max_strength is not None
    d = float(cfg.max_strength) if capped else 0.0
    consts = _consts(
        TAU=cfg.threshold, INV_TAU=("float", "1.0f / TAU"), MINUS_TAU=-cfg.threshold,
        BETA=cfg.beta, CAPPED=_b(capped), CAP=d,
        WINDOW_HI=cfg.threshold * (d + 1.0) if capped else 0.0, DETACH=_b(cfg.detach_reset),
    )
    return KernelSpec(
        rule="multistrength", constants=consts, helpers="",
        forward_params=_params("z:in v0:in:N theta_out:out v_out:out h_save:fout"),
        backward_params=_params("h_save:fin g_theta_in:in has_g_theta:flag g_v:in has_g_v:flag "
                                "grad_z:out grad_v0:out:N"),
        forward_body=_MS_FWD, backward_body=_MS_BWD,
    )
