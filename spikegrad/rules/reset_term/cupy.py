"""The reset-term rule's hand-written CUDA C kernels (CuPy ``RawKernel``; the host shim on CPU
tensors, for tests): :func:`spec` turns the rule's parameters into a
:class:`~spikegrad.rules.cupy_kernels.source.KernelSpec`, :func:`sequence` runs it.

The bodies compute exactly what :class:`spikegrad.rules.reset_term.SequenceFunction` and
:func:`~spikegrad.rules.reset_term.trace` compute (same operations in the same order: the
forward is bit-identical in float32); the surrogate writes its own derivative
(``Surrogate.c_derivative``). Half-precision storage: loads widen to float32, the state is
float32, only stored values are rounded.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from spikegrad.rules.cupy_kernels.functions import LIFKernel
from spikegrad.rules.cupy_kernels.source import KernelSpec, bool_const, constants, param_list

__all__ = ["spec", "sequence"]


# --- the kernel source ---------------------------------------------------------------------------
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
def spec(beta: float, threshold: float, surrogate: Any, mechanism: str,
                    reset_grad_scale: float, tau_s: float | None) -> KernelSpec:
    """Kernels of ``ResetTermLIFNode``'s multi-step path (spikes, or the trace if ``tau_s``).

    ``surrogate`` must be a spikegrad surrogate (its ``c_derivative`` is the backward's
    ``H'``); its ``inclusive`` flag is the spike convention.
    """
    trace = tau_s is not None
    consts = constants(
        BETA=beta, THETA=threshold, K=reset_grad_scale,
        MINUS_K_THETA=-reset_grad_scale * threshold,
        SUBTRACT=bool_const(mechanism == "subtract"), INCLUSIVE=bool_const(surrogate.inclusive),
        TRACE=bool_const(trace), LS=1.0 - 1.0 / tau_s if trace else 0.0,
        TAU_S=tau_s if trace else 1.0, INV_TAU_S=("float", "1.0f / TAU_S"),
        GAIN=("float", "1.0f / TAU_S"),  # s / tau_s with s = 1, as torch rounds it
    )
    helper = f"SG_DEVICE float surrogate_grad(float x) {{ return {surrogate.c_derivative('x')}; }}"
    return KernelSpec(
        rule="reset_term", constants=consts, helpers=helper,
        forward_params=param_list("c:in v0:in:N a0:in:N out:out v_out:out u_save:fout"),
        backward_params=param_list("u_save:fin g_out:in has_g_out:flag g_v:in has_g_v:flag "
                                "grad_c:out grad_v0:out:N grad_a0:out:N"),
        forward_body=_RT_FWD, backward_body=_RT_BWD,
    )


# --- the entry point -----------------------------------------------------------------------------
def sequence(c: torch.Tensor, v0: torch.Tensor, a0: torch.Tensor | None,
             spec: KernelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``ResetTermLIFNode``'s multi-step path fused: ``(spikes or trace, v)``.

    Same values and gradients (to ``c``, ``v0`` and the trace state ``a0``) as
    :class:`spikegrad.rules.reset_term.SequenceFunction` followed by
    :func:`spikegrad.rules.reset_term.trace` (when the spec has a trace); ``spec`` from
    :func:`spec`.

    Shape:
        c: ``[T, *]``; v0, a0: ``[*]``; outputs: ``[T, *]``.
    """
    out, v, _ = LIFKernel.apply(c, v0, a0, spec)
    return out, v
