"""Bring your own neuron: a rule written once as a torch step becomes fused kernels.

Write the rule as a :class:`StepRule` (a frozen dataclass of hyperparameters with one pure,
elementwise ``step(x, state, cfg)``; see :mod:`spikegrad.rules.stepfn.contract`) and
:func:`sequence` runs a whole ``[T, *]`` sequence through it:

* ``implementation="torch"``: the step in a Python loop, autograd through every step (every
  rule, every device);
* ``implementation="triton"``: kernels generated from the traced step and its backward
  (:mod:`spikegrad.rules.stepfn.graph`, :mod:`spikegrad.rules.stepfn.triton_gen`), one
  ``torch.library`` operator per direction and configuration; CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1``;
* ``implementation="cupy"``: the same step rendered as CUDA C, through CuPy (CUDA tensors,
  float32/float16; :mod:`spikegrad.rules.stepfn.cuda_gen`);
* ``implementation="auto"`` (default): Triton on CUDA where the generator covers the step,
  else the torch loop; :func:`choice` says which and why.

The same traced step also renders CUDA C for CuPy (:mod:`spikegrad.rules.stepfn.cuda_gen`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from spikegrad._checks import check_float_tensor
from spikegrad.rules import dispatch, first_use
from spikegrad.rules.stepfn import cuda_gen, triton_gen
from spikegrad.rules.stepfn.contract import StepRule, check_rule, reference_sequence
from spikegrad.rules.stepfn.graph import UnsupportedOperation, trace

__all__ = ["StepRule", "UnsupportedOperation", "sequence", "choice", "reference_sequence",
           "check_rule", "trace", "IMPLEMENTATIONS", "GeneratedKernel", "kernel"]

IMPLEMENTATIONS = ("auto", "torch", "triton", "cupy")
_WARNED: set[Any] = set()


def _triton_problem(device: torch.device) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"the generated Triton kernels run on CUDA tensors (tensors on {device}; use " \
           "implementation='auto' or 'torch' here, or set TRITON_INTERPRET=1 to interpret " \
           "them on the CPU)"


def choice(rule: StepRule, x: torch.Tensor, implementation: str = "auto") -> tuple[str, str | None]:
    """``(implementation, reason)``: what :func:`sequence` runs for ``rule`` on ``x``, and why
    not the fused kernel where it falls back (``None`` when it runs what was asked)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got "
                         f"{implementation!r}")
    if implementation == "torch":
        return "torch", None
    if implementation == "cupy":  # the generated CUDA C through CuPy: CUDA tensors only
        try:
            cuda_gen.kernel_spec(rule)
            problem = (None if x.device.type == "cuda" and x.dtype in (torch.float32,
                                                                        torch.float16)
                       else f"the generated CuPy kernels run on CUDA tensors in float32/float16 "
                            f"(got a {x.dtype} tensor on {x.device}); use implementation='auto' "
                            "or 'torch' here")
            problem = problem or (dispatch.cupy_problem(x.device) or (None, None))[1]
        except UnsupportedOperation as e:
            problem = str(e)
        if problem is not None:
            raise RuntimeError(f"{rule.name}: implementation='cupy' cannot run: {problem}")
        return "cupy", None
    try:  # first: a rule the generator cannot fuse is said so on every device
        trace(rule)
        problem = _triton_problem(x.device)
    except UnsupportedOperation as e:
        problem = str(e)
    if implementation == "triton":
        if problem is not None:
            raise RuntimeError(f"{rule.name}: implementation='triton' cannot run: {problem}")
        return "triton", None
    if problem is not None:
        if x.device.type == "cuda" and (rule, "auto") not in _WARNED:
            _WARNED.add((rule, "auto"))
            warnings.warn(f"{rule.name}: no fused kernel, the step runs in a torch loop: "
                          f"{problem}", RuntimeWarning, stacklevel=3)
        return "torch", problem
    if x.device.type != "cuda":
        return "torch", "on the CPU the torch loop runs (the Triton kernels are interpreted)"
    return "triton", None


def sequence(rule: StepRule, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None,
             implementation: str = "auto"
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Run ``rule`` over the sequence ``x`` (``[T, *]``, time first) from ``state`` (zeros if
    ``None``): ``(out [T, *], final state)``, differentiable with respect to ``x`` and the
    initial state."""
    rule = check_rule(rule)
    check_float_tensor("x", x, min_dim=1)
    if state is not None:
        state = tuple(state)
        if len(state) != len(rule.states):
            raise ValueError(f"{rule.name} has {len(rule.states)} states {rule.states}, got "
                             f"{len(state)}")
        state = tuple(torch.broadcast_to(s, x.shape[1:]) for s in state)
    which, _ = choice(rule, x, implementation)
    if which == "torch" or x.shape[0] == 0:
        return reference_sequence(rule, x, state)
    if which == "cupy":
        return cuda_gen.sequence(rule, x, rule.initial_state(x[0]) if state is None else state)
    if state is None:
        state = rule.initial_state(x[0])
    T = x.shape[0]
    flat = x.reshape(T, -1)
    ops = triton_gen.operators(rule, recip=x.is_cuda)
    save = torch.is_grad_enabled() and (x.requires_grad or any(s.requires_grad for s in state))
    res = ops.fwd(flat, [s.reshape(-1).to(torch.float32) for s in state], save)
    k = len(rule.states)
    out = res[0].reshape(x.shape)
    final = tuple(r.reshape(x.shape[1:]).to(s.dtype) for r, s in zip(res[1:1 + k], state,
                                                                        strict=True))
    return out, final


@dataclass(frozen=True)
class GeneratedKernel:
    """A step rule's generated kernels of one family, as the host's ``backend`` switch sees
    them (:func:`spikegrad.rules.dispatch.select`, the first-use probe): hashable, and it
    brings its own first-use probe (:meth:`probe`).

    Args:
        family: ``"triton"`` or ``"cupy"``.
        step_rule: the rule (it traces: :func:`kernel` checks that).
    """

    family: str
    step_rule: StepRule

    @property
    def rule(self) -> str:
        """The rule's name (what a fallback message names)."""
        return self.step_rule.name

    @property
    def digest(self) -> str:
        """A short hash of the configuration (for messages)."""
        return hashlib.sha256(repr(self.step_rule).encode()).hexdigest()

    def probe(self, device: torch.device, dtype: torch.dtype) -> list[tuple[str, torch.Tensor]]:
        """The first-use probe: the kernels forward and backward on a tiny input from zero
        states; the tensors that must be finite."""
        x = first_use.inputs(device, dtype, 1)[0]
        state = tuple(torch.zeros_like(x[0]) for _ in self.step_rule.states)
        run = cuda_gen.sequence if self.family == "cupy" else (
            lambda rule, x_, s: sequence(rule, x_, s, implementation="triton"))
        out, final = run(self.step_rule, x, state)
        loss = out.float().sum() + sum((s.float() * (k + 2.0)).sum() for k, s in enumerate(final))
        (grad,) = torch.autograd.grad(loss, x)
        return [("outputs", out.detach()), *(("states", s.detach()) for s in final),
                ("gradient", grad)]


def kernel(rule: StepRule, family: str) -> GeneratedKernel | str:
    """``rule``'s generated kernels of ``family`` (``"triton"`` or ``"cupy"``), or a sentence
    saying why there are none (an operation the generator does not cover)."""
    if family not in ("triton", "cupy"):
        raise ValueError(f"family must be 'triton' or 'cupy', got {family!r}")
    try:
        trace(rule) if family == "triton" else cuda_gen.kernel_spec(rule)
    except UnsupportedOperation as exc:
        return f"no generated {family} kernel for {rule.name}: {exc}"
    return GeneratedKernel(family, rule)
