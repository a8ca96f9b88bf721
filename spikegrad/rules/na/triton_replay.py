"""NA's neighbor replay (the operator ``spikegrad::na_replay``) as one Triton kernel.

What it computes is :func:`spikegrad.rules.na.reference_deltas` (the torch body of
``spikegrad::na_replay``, and ``spikegrad::na_replay_cpp`` on the CPU): for the window (or its
suffix) ``c, u, a, e`` (``[L, *]``), the trace before it ``a_init`` and the optional mask
``changed``, ``δ[k] = ΔL[k] w(u[k])`` for the first ``neighbors`` steps ``k``. Neighbor ``k``
flips the spike at step ``k`` (a removed spike parks the state at exactly ``ϑ``, an added one
resets it to 0), is replayed over ``t = k+1 .. L-1`` with the same inputs, and where
``changed[t]`` is set its potential is the recorded ``u[t]`` (the replay merges with the
original trajectory there; only the trace gap carries on). The per-step NA window
(:mod:`spikegrad.adapters.na_window`) calls it with ``neighbors=1`` on the suffix from step
``k``; the whole-window backward with ``neighbors = L``.

Kernel: one program per ``BLOCK`` neurons of the flattened ``[L, M]`` layout (element
``t * M + i``), a loop over neighbors and, inside, over time; the neighbor's state (potential,
trace, loss change) lives in float32 registers (no ``[K, L, M]`` tensor). Loads are widened to
float32 and ``δ`` is rounded once to the storage type (float32, float16 or bfloat16). The
replay runs every step (no early merge as the C++ kernel does): it follows the torch
reference operation by operation, so float32 results equal it up to rounding of nothing but
the order torch already uses. At ``u == ϑ`` exactly ``1 / (ϑ - u) = +inf`` and ``w = +clamp``.

Entry points: :func:`na_replay` (the arguments of ``spikegrad::na_replay``, any ``[L, *]``
shape) and the operator ``spikegrad::triton_na_replay`` (``na_replay_op``, flattened
contiguous ``[L, M]`` inputs and float32 constants), registered with
``torch.library.triton_op`` so ``torch.compile`` sees the kernel on CUDA. The dispatcher
(:func:`spikegrad.rules.dispatch.replay_choice`) sends CUDA tensors of ``spikegrad::na_replay``
here.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from spikegrad.rules.na.triton import after_reset, trace
from spikegrad.rules.triton_kernels.lib import lanes, load, store
from spikegrad.rules.triton_kernels.spec import device_problem, f32

__all__ = ["BLOCK", "na_replay_kernel", "na_replay_op", "na_replay"]

Tensor = torch.Tensor
#: neurons per program (one per thread with 4 warps)
BLOCK = 128


@triton.jit
def na_replay_kernel(c_ptr, u_ptr, a_ptr, e_ptr, a0_ptr, ch_ptr, delta_ptr, L, M, K, beta,
                     theta, ls, gain, clamp, TRACE: tl.constexpr, SUBTRACT: tl.constexpr,
                     CUBE: tl.constexpr, HAS_A0: tl.constexpr, HAS_CHANGED: tl.constexpr,
                     BLOCK: tl.constexpr):
    """``δ[k] = ΔL[k] w(u[k])`` for ``k < K`` (``[K, M]``, the storage type of ``delta``)."""
    offs, mask = lanes(BLOCK, M)
    if HAS_A0:
        a_prev = load(a0_ptr + offs, mask)
    else:
        a_prev = tl.zeros([BLOCK], tl.float32)
    kk = offs
    for k in range(K):
        uk = load(u_ptr + kk, mask)
        a_orig = load(a_ptr + kk, mask)
        sk = tl.where(uk > theta, 1.0, 0.0)
        ak = trace(a_prev, 1.0 - sk, ls, gain, TRACE)
        vk = theta * sk  # removed spike: parked at exactly ϑ; added spike: reset to 0
        dl = load(e_ptr + kk, mask) * (ak - a_orig)
        kt = kk + M
        for _t in range(k + 1, L):
            ut = beta * vk + load(c_ptr + kt, mask)
            if HAS_CHANGED:  # the state set from outside: the recorded potential
                ch = tl.load(ch_ptr + kt, mask=mask, other=0)
                ut = tl.where(ch != 0, load(u_ptr + kt, mask), ut)
            f = ut > theta
            vk = after_reset(ut, f, theta, SUBTRACT)
            ak = trace(ak, tl.where(f, 1.0, 0.0), ls, gain, TRACE)
            dl += load(e_ptr + kt, mask) * (ak - load(a_ptr + kt, mask))
            kt += M
        # distance weight, clamped (u == ϑ exactly: 1 / +0 = +inf, so +clamp)
        w = tl.math.div_rn(1.0, theta - uk)
        if CUBE:
            w = w * w * w
        w = tl.where(w > clamp, clamp, tl.where(w < -clamp, -clamp, w))
        store(delta_ptr + kk, dl * w, mask)
        a_prev = a_orig
        kk += M


@triton_op("spikegrad::triton_na_replay", mutates_args=())
def na_replay_op(c: Tensor, u: Tensor, a: Tensor, e: Tensor, a_init: Tensor | None,
                 changed: Tensor | None, neighbors: int, beta: float, threshold: float,
                 ls: float, gain: float, clamp: float, trace: bool, subtract: bool,
                 cube: bool) -> Tensor:
    """The replay on ``[L, M]`` inputs (``a_init`` ``[M]``, ``changed`` bool ``[L, M]``):
    ``δ`` ``[neighbors, M]`` in ``c``'s dtype. Constants are float32 values."""
    L, M = c.shape
    delta = torch.empty((neighbors, M), dtype=c.dtype, device=c.device)
    if neighbors == 0 or M == 0:
        return delta
    c, u, a, e = (x.contiguous() for x in (c, u, a, e))
    a0 = c if a_init is None else a_init.contiguous()
    ch = c if changed is None else changed.contiguous().view(torch.uint8)
    options: dict[str, Any] = dict(num_warps=4, enable_fp_fusion=False) if c.is_cuda else {}
    grid = (triton.cdiv(M, BLOCK),)
    wrap_triton(na_replay_kernel)[grid](
        c, u, a, e, a0, ch, delta, L, M, neighbors, beta, threshold, ls, gain, clamp,
        TRACE=trace, SUBTRACT=subtract, CUBE=cube, HAS_A0=a_init is not None,
        HAS_CHANGED=changed is not None, BLOCK=BLOCK, **options)
    return delta


def na_replay(c: Tensor, u: Tensor, a: Tensor, e: Tensor, a_init: Tensor | None,
              changed: Tensor | None, neighbors: int, beta: float, threshold: float,
              tau_s: float | None, reset: str, distance: str, clamp: float) -> Tensor:
    """``spikegrad::na_replay``'s arguments and result, through the Triton kernel.

    Shape:
        c, u, a, e (and ``changed``, bool): ``[L, *]``; a_init: ``[*]``; output
        ``[neighbors, *]`` in ``c``'s dtype.

    Raises:
        ValueError: shapes, ``neighbors``, ``reset``/``distance``, or a device/dtype the
            kernel cannot run (see :func:`spikegrad.rules.triton_kernels.available`).
    """
    if c.dim() < 1:
        raise ValueError("na_replay: c must be time-major [L, *]")
    for name, x in (("u", u), ("a", a), ("e", e)) + ((("changed", changed),) if changed
                                                      is not None else ()):
        if x.shape != c.shape or x.device != c.device:
            raise ValueError(f"na_replay: {name} must have c's shape {tuple(c.shape)} and "
                             f"device, got {tuple(x.shape)} on {x.device}")
    if changed is not None and changed.dtype != torch.bool:
        raise ValueError(f"na_replay: changed must be a bool tensor, got {changed.dtype}")
    L = c.shape[0]
    if not 0 <= neighbors <= L:
        raise ValueError(f"na_replay: neighbors must be in [0, {L}], got {neighbors}")
    if reset not in ("zero", "subtract") or distance not in ("inverse_cube", "inverse"):
        raise ValueError(f"na_replay: reset must be 'zero' or 'subtract' and distance "
                         f"'inverse_cube' or 'inverse', got {reset!r}, {distance!r}")
    problem = device_problem(c.device, c.dtype)
    if problem is not None:
        raise ValueError(f"the Triton replay cannot run this call: {problem}")
    out_shape = (neighbors, *c.shape[1:])
    if L == 0:
        return c.new_empty(out_shape)
    M = c.numel() // L
    flat = [x.reshape(L, M) for x in (c, u, a, e)]
    a0 = None if a_init is None else a_init.expand(c.shape[1:]).reshape(M)
    ch = None if changed is None else changed.reshape(L, M)
    trace = tau_s is not None
    delta = na_replay_op(*flat, a0, ch, neighbors, f32(beta), f32(threshold),
                         f32(1.0 - 1.0 / tau_s) if trace else 0.0,
                         f32(1.0 / tau_s) if trace else 1.0, f32(clamp), trace,
                         reset == "subtract", distance == "inverse_cube")
    return delta.view(out_shape)
