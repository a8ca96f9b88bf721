"""What the rules' torch operators share: registration, the surrogates an operator takes by name,
and the per-step helpers (one step of a whole-sequence operator, the compile/eager switch); and
what the fused kernels' entry points share (:func:`state_vector`, for Triton and CuPy alike)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from spikegrad.rules.surrogate import ATan, Sigmoid, Surrogate

#: the operators' definitions, kept alive (a definition's Library deregisters it when collected)
_DEFINITIONS: dict[str, Any] = {}


def registrar(bodies: dict[str, Callable[..., Any]]
              ) -> Callable[[str, str], Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """``_op(name, schema)``: a decorator that registers ``fn`` as ``spikegrad::<name>`` (any
    device), records it in ``bodies`` (the plain torch body, for tests on ``meta`` tensors) and
    returns ``fn``."""
    def op(name: str, schema: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            _DEFINITIONS[name] = torch.library.custom_op(f"spikegrad::{name}", fn,
                                                         mutates_args=(), schema=schema)
            bodies[name] = fn
            return fn

        return register

    return op


SURROGATES: dict[str, tuple[type[Surrogate], str]] = {"Sigmoid": (Sigmoid, "temperature"),
                                                      "ATan": (ATan, "alpha")}


def surrogate_args(fn: Any) -> tuple[str, float] | None:
    """``(name, parameter)`` of a spiking Sigmoid/ATan surrogate, else ``None``."""
    for name, (cls, field) in SURROGATES.items():
        if type(fn) is cls and fn.spiking:
            return name, float(getattr(fn, field))
    return None


def make_surrogate(name: str, param: float, inclusive: bool) -> Surrogate:
    if name not in SURROGATES:
        raise ValueError(f"surrogate must be one of {tuple(SURROGATES)}, got {name!r}")
    cls, field = SURROGATES[name]
    return cls(**{field: param}, inclusive=inclusive)


def one_step(sequence: Callable[..., tuple[torch.Tensor, ...]], x: torch.Tensor,
             state: torch.Tensor, *args: Any) -> tuple[torch.Tensor, ...]:
    """One step of a whole-sequence operator: ``sequence(x[None], state, *args)``'s outputs at
    step 0 (the per-step functions the neurons call, as operators: opaque to Inductor, so a
    compiled per-step loop keeps each step's fused backward instead of re-deriving the chain
    through time inside one kernel). ``x`` and ``state`` are broadcast to one shape and
    promoted to one dtype first (gradients sum back through both)."""
    if x.shape != state.shape or x.dtype != state.dtype:
        dtype = torch.promote_types(x.dtype, state.dtype)
        x, state = (y.to(dtype) for y in torch.broadcast_tensors(x, state))
    return tuple(y[0] for y in sequence(x.unsqueeze(0), state, *args))


def stack_steps(steps: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(steps)``; one step is a view (no copy: the per-step calls of a neuron)."""
    return steps[0].unsqueeze(0) if len(steps) == 1 else torch.stack(steps)


def step_path(operator: Callable[..., Any], reference: Callable[..., Any]
              ) -> Callable[..., Any]:
    """The per-step function a rule runs now: ``operator`` (:func:`one_step` of its fused
    operator) while ``torch.compile`` traces, ``reference`` (written out: a few torch
    operations and the rule's autograd functions, fewer Python hops) eagerly. The two give the
    same values and gradients (tests/rules/test_ops.py)."""
    return operator if torch.compiler.is_compiling() else reference


def step_of(v0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``v0`` as one step of ``x`` (broadcast; its gradient sums back through ``expand``)."""
    return v0 if v0.shape == x.shape[1:] else v0.expand(x.shape[1:])


def add_optional(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """``a + b`` where ``None`` is zero (and stays ``None`` when both are)."""
    if a is None:
        return b
    return a if b is None else a + b



def zeros_if_none(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def state_vector(x: torch.Tensor | None, c: torch.Tensor, name: str,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """A per-neuron state as a contiguous ``[N]`` in ``dtype`` (default ``c``'s; zeros if
    absent), broadcast to one step of ``c`` (``[T, *]``) as the torch reference does.

    Raises:
        ValueError: ``x`` does not broadcast to ``c.shape[1:]`` (a kernel would read past it).
    """
    dtype = c.dtype if dtype is None else dtype
    step = c.shape[1:]
    if x is None:
        return c.new_zeros(step.numel(), dtype=dtype)
    if x.shape != step:
        try:
            x = x.expand(step)
        except RuntimeError:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, which does not broadcast to "
                             f"one step of the input, {tuple(step)}") from None
    return x.reshape(-1).to(dtype).contiguous()
