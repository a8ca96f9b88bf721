"""The HTDGLIF node's (BPSA/BPTA) hand-written CUDA C kernels (CuPy ``RawKernel``; the host shim
on CPU tensors): :func:`spec` from the rule's configuration, :func:`sequence` runs it, both
modes, computing exactly what :func:`spikegrad.rules.bpsta.step_v` computes, step after step.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from spikegrad.rules.cupy_kernels.functions import LIFKernel
from spikegrad.rules.cupy_kernels.source import KernelSpec, bool_const, constants, param_list

__all__ = ["spec", "sequence"]


# --- the kernel source ---------------------------------------------------------------------------
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
def spec(cfg: Any) -> KernelSpec:
    """Kernels of :class:`spikegrad.rules.bpsta.HTDGLIF` (``cfg``, either mode)."""
    paper = cfg.mode == "paper"
    consts = constants(
        PAPER=bool_const(paper), THETA=cfg.threshold, ALPHA=cfg.alpha,
        DECAY=cfg.decay if paper else 1.0, DT=1.0 if paper else cfg.dt,
    )
    return KernelSpec(
        rule="bpsta", constants=consts, helpers="",
        forward_params=param_list("x:in v0:in:N o_out:out v_out:out h_save:fout"),
        backward_params=param_list("x:in h_save:fin g_o:in has_g_o:flag g_v:in has_g_v:flag "
                                "grad_x:out grad_v0:out:N"),
        forward_body=_HT_FWD, backward_body=_HT_BWD,
    )


# --- the entry point -----------------------------------------------------------------------------
def sequence(x: torch.Tensor, v0: torch.Tensor, spec: KernelSpec
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The HTDGLIF node over a sequence, fused: ``(o, v)`` as repeated
    :func:`spikegrad.rules.bpsta.step_v` (gradients to ``x`` and ``v0``); ``spec`` from
    :func:`spec`.

    Shape:
        x: ``[T, *]``; v0: ``[*]``; outputs: ``[T, *]``.
    """
    o, v, _ = LIFKernel.apply(x, v0, None, spec)
    return o, v
