"""What every hand-written Triton kernel shares (imports Triton).

* ``@triton.jit`` helpers: ``store`` (float32 rounded to nearest even to the pointer's
  type), ``load`` (widened to float32), ``divs`` ("tensor / scalar" as torch does on
  each device), ``lanes`` (one program's neurons), ``surrogate_grad`` (the Sigmoid/ATan
  derivative the kernels know);
* the launch (:func:`launch`: ``ceil(N / BLOCK)`` programs, no FMA on CUDA) and argument
  helpers of the ``triton_op`` operators (:func:`tn`, :func:`grad_arg`);
* the entry points' input handling (:func:`flat`: ``[T, *]`` to contiguous ``[T, N]`` after
  the device and dtype checks; :func:`spikegrad.rules._oplib.state_vector`, shared with CuPy:
  a state broadcast to one step, as ``[N]``).

The kernels themselves sit with their rules: ``spikegrad/rules/<rule>/triton.py``. Conventions
(as in every kernel): one program per ``BLOCK`` neurons of ``[T, N]`` (element ``t * N + i``),
a loop over time inside, the state in float32 registers; loads are widened to float32 and only
stored values are rounded to the storage type. Divisions are IEEE-rounded (``div_rn``), never
Triton's approximate ``/``. "Tensor / Python scalar" follows torch on each device: the CPU
divides, CUDA multiplies by the float32 reciprocal (``RECIP``). Launch on CUDA with
``enable_fp_fusion=False`` (no FMA: torch's CPU and CUDA elementwise kernels round the product
and the sum separately). Under ``TRITON_INTERPRET=1`` ``wrap_triton`` returns the interpreted
kernel unchanged: the operators run eagerly on CPU tensors but cannot be traced by
``torch.compile``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from spikegrad.rules.triton_kernels.spec import device_problem

__all__ = ["INTERPRETED", "BLOCK", "store", "load", "divs", "lanes", "surrogate_grad", "launch",
           "tn", "grad_arg", "flat"]

Tensor = torch.Tensor
#: neurons per program (one per thread with 4 warps)
BLOCK = 128


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
def surrogate_grad(x, sg_a, sg_b, KIND: tl.constexpr, RECIP: tl.constexpr):
    """``H'(x)``: Sigmoid (``sg_a = T, sg_b = 1/T``) or ATan (``sg_a = α/2, sg_b = πα/2``)."""
    if KIND == 0:
        sig = tl.math.div_rn(1.0, 1.0 + tl.exp(-divs(x, sg_a, sg_b, RECIP)))
        r = divs(sig * (1.0 - sig), sg_a, sg_b, RECIP)
    else:
        k = sg_b * x
        r = tl.math.div_rn(1.0, 1.0 + k * k) * sg_a  # torch: scalar / t = reciprocal(t) * s
    return r


#: whether Triton runs the kernels in its CPU interpreter (``TRITON_INTERPRET=1`` when imported)
INTERPRETED = type(store).__name__ == "InterpretedFunction"


def launch(kernel: Any, x: Tensor, *args: Any, **meta: Any) -> None:
    """Launch ``kernel`` over ``ceil(N / BLOCK)`` programs (``x`` is ``[T, N]``)."""
    options = dict(num_warps=4, enable_fp_fusion=False) if x.is_cuda else {}
    grid = (triton.cdiv(x.shape[1], BLOCK),)
    wrap_triton(kernel)[grid](*args, BLOCK=BLOCK, **meta, **options)


def tn(x: Tensor) -> tuple[int, int, int]:
    """``T``, ``N`` and the offset of the last step, ``(T - 1) N``."""
    T, N = x.shape
    return T, N, (T - 1) * N


def grad_arg(g: Tensor | None, like: Tensor) -> tuple[Tensor, bool]:
    """An optional upstream gradient as a kernel argument (contiguous) and its presence."""
    return (like, False) if g is None else (g.contiguous(), True)


def flat(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as ``[T, N]`` (contiguous) after the device and dtype checks.

    Raises:
        TypeError: ``x`` is not a floating-point tensor of a kernel dtype.
        ValueError: ``x`` has no time dimension, or its device cannot run the kernels.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', x)}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be time-major [T, *] with T >= 1, got {tuple(x.shape)}")
    problem = None if torch.compiler.is_compiling() else device_problem(x.device, x.dtype)
    if problem is not None:
        raise (TypeError if "dtype" in problem else ValueError)(
            f"the Triton kernels cannot run this call: {problem}")
    return x.reshape(x.shape[0], -1).contiguous()


