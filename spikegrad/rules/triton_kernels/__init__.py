"""Fused Triton kernels (forward and backward) for the multi-step paths of the rules.

Entry points (the signatures and returns of :mod:`spikegrad.rules.cupy_kernels.functions`;
inputs ``[T, *]`` in float32, float16 or bfloat16 with float32 arithmetic; states broadcast to
one step ``[*]``; all differentiable through ``torch.library.triton_op`` operators with
``register_autograd``, so ``torch.compile``/Inductor sees the kernels on CUDA):

* ``reset_term_sequence(c, v0, a0, spec) -> (out, v)``: reset-term LIF (zero/subtract reset,
  ``reset_grad_scale``, Sigmoid/ATan surrogate, ``inclusive`` convention); ``out`` is the spike
  train, or the trace from ``a0`` when ``spec.tau_s`` is set; ``v`` the post-reset states.
  Gradients to ``c``, ``v0``, ``a0``. ``spec`` from
  ``reset_term_spec(beta, threshold, surrogate, mechanism, reset_grad_scale, tau_s)``
  (:class:`~.spec.ResetTermSpec`; the CuPy ``kernels.reset_term_spec`` signature).
* ``na_sequence(c, cfg, rescale=None, u_init=None, a_init=None) -> (out, u)``: NA
  (``cfg`` a :class:`spikegrad.rules.na.NA`); ``out`` the trace (spikes without ``tau_s``),
  ``u`` the float32 pre-reset potentials; ``u_init`` (float32) / ``a_init`` continue an
  earlier state. Gradient to ``c`` only (the NA backward; a ``u`` gradient is added to
  ``δ``). ``rescale`` (:class:`spikegrad.rules.na.Rescale`) is applied outside the operators
  in a small autograd node (eager only, not traceable by ``torch.compile``).
* ``bpsta_sequence(x, v0, cfg) -> (o, v)``: HTDGLIF, ``cfg`` a
  :class:`spikegrad.rules.bpsta.HTDGLIF` (``"paper"`` or ``"braincog"``); gradients to
  ``x``, ``v0``.
* ``multistrength_sequence(z, v0, cfg) -> (theta, v)``: ``cfg`` a
  :class:`spikegrad.rules.multistrength.MultiStrength` (cap, ``detach_reset``); strengths and
  remainders; gradients to ``z``, ``v0``.
* ``available(device=None, dtype=None) -> str | None``: ``None`` when the kernels can run
  (Triton present; a CUDA device, or CPU tensors under ``TRITON_INTERPRET=1``; a kernel
  dtype), else the reason. The entry points raise with that reason.

Modules: :mod:`.spec` (no Triton), :mod:`.kernels_lif` and :mod:`.kernels_na` (the
``@triton.jit`` kernels), :mod:`.ops` (operator registration), :mod:`.functions`. Importing
this package does not import Triton; the first entry-point call does (set ``TRITON_INTERPRET=1``
before it to run the kernels on CPU tensors in Triton's interpreter, for tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from spikegrad.rules.triton_kernels.spec import ResetTermSpec, available, reset_term_spec

if TYPE_CHECKING:
    from spikegrad.rules.bpsta import HTDGLIF
    from spikegrad.rules.multistrength import MultiStrength
    from spikegrad.rules.na import NA, Rescale

Tensor = torch.Tensor
Pair = tuple[torch.Tensor, torch.Tensor]

__all__ = ["available", "ResetTermSpec", "reset_term_spec", "reset_term_sequence",
           "na_sequence", "bpsta_sequence", "multistrength_sequence"]


def _functions() -> Any:
    """:mod:`.functions` (imports Triton), or ImportError saying why Triton is unusable."""
    from spikegrad.rules.triton_kernels.spec import _triton_problem

    problem = _triton_problem()
    if problem is not None:
        raise ImportError(f"the Triton kernels cannot run: {problem}")
    from spikegrad.rules.triton_kernels import functions

    return functions


def reset_term_sequence(c: Tensor, v0: Tensor | None, a0: Tensor | None,
                        spec: ResetTermSpec) -> Pair:
    """See :func:`.functions.reset_term_sequence` (imports Triton on the first call)."""
    return _functions().reset_term_sequence(c, v0, a0, spec)


def na_sequence(c: Tensor, cfg: NA, rescale: Rescale | None = None,
                u_init: Tensor | None = None, a_init: Tensor | None = None) -> Pair:
    """See :func:`.functions.na_sequence` (imports Triton on the first call)."""
    return _functions().na_sequence(c, cfg, rescale, u_init, a_init)


def bpsta_sequence(x: Tensor, v0: Tensor | None, cfg: HTDGLIF) -> Pair:
    """See :func:`.functions.bpsta_sequence` (imports Triton on the first call)."""
    return _functions().bpsta_sequence(x, v0, cfg)


def multistrength_sequence(z: Tensor, v0: Tensor | None, cfg: MultiStrength) -> Pair:
    """See :func:`.functions.multistrength_sequence` (imports Triton on the first call)."""
    return _functions().multistrength_sequence(z, v0, cfg)
