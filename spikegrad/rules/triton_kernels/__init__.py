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
* ``na_replay(c, u, a, e, a_init, changed, neighbors, beta, threshold, tau_s, reset,
  distance, clamp) -> delta``: NA's neighbor replay with the arguments of the operator
  ``spikegrad::na_replay`` (:mod:`.replay`, the operator ``spikegrad::triton_na_replay``;
  not differentiable), which runs it on CUDA tensors (the per-step NA backward).
* ``available(device=None, dtype=None) -> str | None``: ``None`` when the kernels can run
  (Triton present; a CUDA device, or CPU tensors under ``TRITON_INTERPRET=1``; a kernel
  dtype), else the reason. The entry points raise with that reason.

Modules: :mod:`.spec` (no Triton), :mod:`.kernels_lif` and :mod:`.kernels_na` (the
``@triton.jit`` kernels), :mod:`.ops` (operator registration), :mod:`.functions`,
:mod:`.replay` (NA's neighbor replay: kernel and operator), :mod:`.check` (GPU-free
checks: PTX for sm_90, ``torch.compile`` graphs). Importing
this package does not import Triton; the first entry-point call does (set ``TRITON_INTERPRET=1``
before it to run the kernels on CPU tensors in Triton's interpreter, for tests).
"""

from __future__ import annotations

from typing import Any

from spikegrad.rules.triton_kernels.spec import (
    ResetTermSpec,
    available,
    reset_term_spec,
    triton_problem,
)

__all__ = ["available", "ResetTermSpec", "reset_term_spec", "reset_term_sequence",
           "na_sequence", "bpsta_sequence", "multistrength_sequence", "na_replay"]

_ENTRY_POINTS = ("reset_term_sequence", "na_sequence", "bpsta_sequence",
                 "multistrength_sequence", "na_replay")


def __getattr__(name: str) -> Any:
    """The entry points of :mod:`.functions`, imported (with Triton) on first access.

    Raises:
        ImportError: Triton is missing or broken (the message says which).
        AttributeError: ``name`` is not an entry point.
    """
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    problem = triton_problem()
    if problem is not None:
        raise ImportError(f"spikegrad.rules.triton_kernels.{name}: {problem}")
    from spikegrad.rules.triton_kernels import functions, replay

    fn = getattr(replay if name == "na_replay" else functions, name)
    globals()[name] = fn  # later lookups are plain attributes (and traceable by torch.compile)
    return fn
