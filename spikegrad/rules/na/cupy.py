"""NA's hand-written CUDA C kernels (CuPy ``RawKernel``; the host shim on CPU tensors):
:func:`spec` from an :class:`~spikegrad.rules.na.NA`, :func:`sequence` runs it.

The bodies compute what :func:`spikegrad.rules.na.forward` and
:func:`~spikegrad.rules.na.backward` compute: all ``T`` neighbors are replayed in registers; the
forward trajectory is recomputed in float32 and the errors accumulated into float32 scratch,
so only the inputs are saved between the passes. The pre-reset potential ``u`` (output and
start state) stays float32 for every storage type: the spike is ``u > θ``, and a ``u``
rounded to half could be decided again differently (1.0000977 fires, its half 1.0 does not).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from spikegrad.rules._oplib import state_vector
from spikegrad.rules.cupy_kernels.functions import F32, flat, grad_arg
from spikegrad.rules.cupy_kernels.launch import run
from spikegrad.rules.cupy_kernels.source import KernelSpec, bool_const, constants, param_list

__all__ = ["spec", "sequence"]


# --- the kernel source ---------------------------------------------------------------------------
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
def spec(cfg: Any) -> KernelSpec:
    """Kernels of :class:`spikegrad.rules.na.NA` (``cfg``); the rescale stays in torch."""
    consts = constants(
        BETA=cfg.beta, THETA=cfg.threshold, LS=cfg.trace_decay, GAIN=cfg.trace_gain,
        CLAMP=cfg.clamp, TRACE=bool_const(cfg.tau_s is not None),
        SUBTRACT=bool_const(cfg.reset == "subtract"),
        CUBE=bool_const(cfg.distance == "inverse_cube"),
        ACCUMULATED=bool_const(cfg.error == "accumulated"),
    )
    return KernelSpec(
        rule="na", constants=consts, helpers=_NA_RESET.strip("\n"),
        forward_params=param_list("c:in u_init:fin:N a_init:in:N out:out u_out:fout"),
        backward_params=param_list("c:in u_init:fin:N a_init:in:N g:in has_g:flag g_u:fin "
                                "has_g_u:flag delta:out U:fout A:fout E:fout"),
        forward_body=_NA_FWD, backward_body=_NA_BWD,
    )


# --- the entry point -----------------------------------------------------------------------------
class _NAKernel(torch.autograd.Function):
    """``(c, spec, rescale, u_init, a_init) -> (out, u)``, as
    :class:`spikegrad.rules.na.NAFunction` (gradient to ``c`` only)."""

    @staticmethod
    def forward(c: torch.Tensor, spec: KernelSpec, rescale: Any,  # type: ignore[override]
                u_init: torch.Tensor | None, a_init: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        cf = flat(c)
        out, u = torch.empty_like(cf), torch.empty(cf.shape, dtype=F32, device=c.device)
        run(spec, "forward", cf.shape[0], cf.shape[1],
            dict(c=cf, u_init=state_vector(u_init, c, "u_init", F32),
                 a_init=state_vector(a_init, c, "a_init"),
                 out=out, u_out=u))
        return out.view(c.shape), u.view(c.shape)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        c, spec, rescale, u_init, a_init = inputs
        ctx.save_for_backward(c, u_init, a_init)
        ctx.spec, ctx.rescale = spec, rescale
        ctx.set_materialize_grads(False)
        if rescale is not None:
            rescale.begin()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_a: torch.Tensor | None, g_u: torch.Tensor | None  # type: ignore[override]
                 ) -> tuple[Any, ...]:
        c, u_init, a_init = ctx.saved_tensors
        cf = flat(c)
        delta = torch.empty_like(cf)
        g, has_g = grad_arg(g_a, delta)
        fused_u = ctx.rescale is None
        scratch = [torch.empty(cf.shape, dtype=F32, device=c.device) for _ in "UAE"]
        gu, has_gu = grad_arg(g_u if fused_u else None, scratch[0])
        run(ctx.spec, "backward", cf.shape[0], cf.shape[1],
            dict(c=cf, u_init=state_vector(u_init, c, "u_init", F32),
                 a_init=state_vector(a_init, c, "a_init"),
                 g=g, has_g=has_g,
                 g_u=gu, has_g_u=has_gu, delta=delta, U=scratch[0], A=scratch[1], E=scratch[2]))
        delta = delta.view(c.shape)
        if not fused_u:
            delta = ctx.rescale(delta)
            if g_u is not None:
                delta = delta + g_u.to(delta.dtype)
        return delta, None, None, None, None


def sequence(c: torch.Tensor, spec: KernelSpec, rescale: Any = None,
             u_init: torch.Tensor | None = None, a_init: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`spikegrad.rules.na.NAFunction` fused: ``(out, u)`` with the NA backward.

    ``u`` (and ``u_init``) is float32 for every input dtype: the spike is ``u > θ``, and a
    float16 ``u`` read back could decide it differently (for float32 inputs: the same values
    as the reference; for float16, ``u`` is the float32 computation, unrounded).

    All ``T`` neighbors of a neuron are replayed by one thread in registers (no ``[T, T, *]``
    tensor); the rescale (``rescale``, needs the whole layer) runs in torch afterwards.
    ``spec`` from :func:`spec`.

    Shape:
        c: ``[T, *]``; u_init, a_init: ``[*]``; outputs: ``[T, *]``.
    """
    return _NAKernel.apply(c, spec, rescale, u_init, a_init)
