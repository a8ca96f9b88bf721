"""The multi-strength rule's hand-written CUDA C kernels (CuPy ``RawKernel``; the host shim on
CPU tensors): :func:`spec` from the rule's configuration, :func:`sequence` runs it, computing
exactly what :func:`spikegrad.rules.multistrength.step` computes, step after step.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from spikegrad.rules.cupy_kernels.functions import LIFKernel
from spikegrad.rules.cupy_kernels.source import KernelSpec, bool_const, constants, param_list

__all__ = ["spec", "sequence"]


# --- the kernel source ---------------------------------------------------------------------------
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
def spec(cfg: Any) -> KernelSpec:
    """Kernels of :class:`spikegrad.rules.multistrength.MultiStrength` (``cfg``)."""
    capped = cfg.max_strength is not None
    d = float(cfg.max_strength) if capped else 0.0
    consts = constants(
        TAU=cfg.threshold, INV_TAU=("float", "1.0f / TAU"), MINUS_TAU=-cfg.threshold,
        BETA=cfg.beta, CAPPED=bool_const(capped), CAP=d,
        WINDOW_HI=cfg.threshold * (d + 1.0) if capped else 0.0, DETACH=bool_const(cfg.detach_reset),
    )
    return KernelSpec(
        rule="multistrength", constants=consts, helpers="",
        forward_params=param_list("z:in v0:in:N theta_out:out v_out:out h_save:fout"),
        backward_params=param_list("h_save:fin g_theta_in:in has_g_theta:flag g_v:in has_g_v:flag "
                                "grad_z:out grad_v0:out:N"),
        forward_body=_MS_FWD, backward_body=_MS_BWD,
    )


# --- the entry point -----------------------------------------------------------------------------
def sequence(z: torch.Tensor, v0: torch.Tensor, spec: KernelSpec
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-strength IF over a sequence, fused: ``(θ, v)`` as repeated
    :func:`spikegrad.rules.multistrength.step` (gradients to ``z`` and ``v0``); ``spec`` from
    :func:`spec`.

    Shape:
        z: ``[T, *]``; v0: ``[*]``; outputs: ``[T, *]``.
    """
    theta, v, _ = LIFKernel.apply(z, v0, None, spec)
    return theta, v
