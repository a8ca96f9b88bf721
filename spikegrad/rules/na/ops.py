"""NA's torch operators (namespace ``spikegrad``): the reference and the compiled CPU kernel.

Two implementations, one schema each, picked by :mod:`spikegrad.rules.dispatch`:

* ``spikegrad::na_forward`` / ``spikegrad::na_forward_cpp``: the window, ``c -> (u, a)``,
  differentiable (its registered autograd is the NA backward: the errors, then the replay);
* ``spikegrad::na_step`` / ``spikegrad::na_step_cpp``: one step,
  ``(c, u_prev, a_prev) -> (s, u, a)``;
* ``spikegrad::na_replay`` / ``spikegrad::na_replay_cpp``: ``δ`` of the first ``neighbors``
  steps of a window or of its suffix (the backward pass, whole-window or per step); on CUDA
  tensors ``spikegrad::na_replay`` runs the Triton replay kernel
  (:mod:`spikegrad.rules.na.triton_replay`) where
  :func:`spikegrad.rules.dispatch.replay_choice` says it can.

The reference operators run :mod:`spikegrad.rules.na.reference`'s torch code; the compiled ones are
defined with ``TORCH_LIBRARY`` in ``csrc/na_cpu.cpp`` and exist once
:func:`spikegrad.rules.na.cpu.load` has built it (which calls :func:`register_cpp` here for
their fake implementations and autograd). Hyperparameters are the fields of
:class:`spikegrad.rules.na.NA` as plain arguments: ``beta``, ``threshold``, ``tau_s`` (``None``:
the output is the spike train), ``reset``, ``distance``, ``clamp``, ``error``. Tensors are
time-major ``[T, *]`` (one step: ``[*]``); ``a_init``/``u_init`` have the shape of one step.
Outputs are new contiguous tensors; ``u`` has the input's dtype.
"""

from collections.abc import Callable
from typing import Any

import torch

from spikegrad.rules import _oplib, dispatch
from spikegrad.rules.na import reference as na

__all__ = ["BODIES", "FORWARD_SCHEMA", "STEP_SCHEMA", "REPLAY_SCHEMA", "errors", "register_cpp"]

#: the torch bodies of the operators defined here, by operator name; plain functions, so that
#: tests run them on ``meta`` tensors, where the dispatcher would call the fake implementations
BODIES: dict[str, Callable[..., Any]] = {}
_op = _oplib.registrar(BODIES)


_HYPER = "float beta, float threshold, float? tau_s, str reset"
FORWARD_SCHEMA = (f"(Tensor c, Tensor? a_init, Tensor? u_init, {_HYPER}, str distance, "
                  "float clamp, str error) -> (Tensor, Tensor)")
STEP_SCHEMA = f"(Tensor c, Tensor u_prev, Tensor a_prev, {_HYPER}) -> (Tensor, Tensor, Tensor)"
REPLAY_SCHEMA = (f"(Tensor c, Tensor u, Tensor a, Tensor e, Tensor? a_init, Tensor? changed, "
                 f"int neighbors, {_HYPER}, str distance, float clamp) -> Tensor")


def _cfg(beta: float, threshold: float, tau_s: float | None, reset: str,
         distance: str = "inverse_cube", clamp: float = 5.0, error: str = "accumulated") -> Any:
    """The :class:`~spikegrad.rules.na.NA` of the operator arguments (validated)."""
    return na.NA(beta=beta, threshold=threshold, tau_s=tau_s, distance=distance, clamp=clamp,
                 error=error, reset=reset, implementation="torch")


# --- the reference operators -------------------------------------------------------------------
@_op("na_forward", FORWARD_SCHEMA)
def na_forward(c: torch.Tensor, a_init: torch.Tensor | None, u_init: torch.Tensor | None,
               beta: float, threshold: float, tau_s: float | None, reset: str, distance: str,
               clamp: float, error: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The window from rest (or from ``u_init``/``a_init``): ``(u, a)``, torch reference."""
    cfg = _cfg(beta, threshold, tau_s, reset, distance, clamp, error)
    _, u, a = na.reference_forward(c, cfg, a_init=a_init, u_init=u_init)
    return u.contiguous(), a.contiguous()


@_op("na_step", STEP_SCHEMA)
def na_step(c: torch.Tensor, u_prev: torch.Tensor, a_prev: torch.Tensor, beta: float,
            threshold: float, tau_s: float | None, reset: str
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step: ``(s, u, a)``, torch reference."""
    s, u, a = na.reference_step(c, u_prev, a_prev, _cfg(beta, threshold, tau_s, reset))
    return s, u, (a.clone() if a is s else a)  # outputs never alias each other


@_op("na_replay", REPLAY_SCHEMA)
def na_replay(c: torch.Tensor, u: torch.Tensor, a: torch.Tensor, e: torch.Tensor,
              a_init: torch.Tensor | None, changed: torch.Tensor | None, neighbors: int,
              beta: float, threshold: float, tau_s: float | None, reset: str, distance: str,
              clamp: float) -> torch.Tensor:
    """``δ[k] = ΔL[k] w(u[k])`` for ``k < neighbors``: the torch reference, or on CUDA tensors
    the Triton replay kernel where it can run (:func:`spikegrad.rules.dispatch.replay_choice`)."""
    flags = (tau_s is not None, reset == "subtract", distance == "inverse_cube",
             a_init is not None, changed is not None)
    if dispatch.replay_implementation(c, flags) == "triton":
        from spikegrad.rules.na import triton_replay  # imports Triton: on first use

        return triton_replay.na_replay(c, u, a, e, a_init, changed, neighbors, beta, threshold,
                                       tau_s, reset, distance, clamp)
    cfg = _cfg(beta, threshold, tau_s, reset, distance, clamp)
    return na.reference_deltas(c, u, a, e, cfg, a_init=a_init, neighbors=neighbors,
                               changed=changed).contiguous()


# --- fake (meta) implementations: shapes, dtypes and devices only --------------------------------
def _fake_forward(c: torch.Tensor, a_init: torch.Tensor | None, u_init: torch.Tensor | None,
                  *_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(c, memory_format=torch.contiguous_format), torch.empty_like(
        c, memory_format=torch.contiguous_format)


def _fake_step(c: torch.Tensor, u_prev: torch.Tensor, a_prev: torch.Tensor, *_: Any
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.empty_like(c, memory_format=torch.contiguous_format) for _ in range(3))


def _fake_replay(c: torch.Tensor, u: torch.Tensor, a: torch.Tensor, e: torch.Tensor,
                 a_init: torch.Tensor | None, changed: torch.Tensor | None, neighbors: int,
                 *_: Any) -> torch.Tensor:
    torch._check(0 <= neighbors <= c.shape[0], lambda: "neighbors must be in [0, T]")
    return c.new_empty((neighbors, *c.shape[1:]))


# --- autograd of the window operators ----------------------------------------------------------
def errors(g: torch.Tensor, tau_s: float | None, error: str) -> torch.Tensor:
    """``e`` from ``g = ∂L/∂a`` (NA step 1): ``e[t] = g[t] + λs e[t+1]`` or ``e = g``."""
    if error == "local" or tau_s is None or g.shape[0] == 0:
        return g
    decay = 1.0 - 1.0 / tau_s
    out = [g[-1]]
    for t in range(g.shape[0] - 2, -1, -1):
        out.append(g[t] + decay * out[-1])
    return torch.stack(out[::-1])


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    c, a_init, _, *hyper = inputs
    u, a = output
    ctx.save_for_backward(c, u, a, a_init)
    ctx.hyper = tuple(hyper)


def _backward(replay: Any) -> Any:
    def backward(ctx: Any, g_u: torch.Tensor | None, g_a: torch.Tensor | None) -> tuple[Any, ...]:
        c, u, a, a_init = ctx.saved_tensors
        beta, threshold, tau_s, reset, distance, clamp, error = ctx.hyper
        g = torch.zeros_like(a) if g_a is None else g_a
        e = errors(g, tau_s, error)
        delta = replay(c, u, a, e, a_init, None, c.shape[0], beta, threshold, tau_s, reset,
                       distance, clamp)
        grad_c = delta if g_u is None else delta + g_u
        return (grad_c,) + (None,) * 9

    return backward


def _setup_nondifferentiable(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    outs = output if isinstance(output, tuple) else (output,)
    ctx.mark_non_differentiable(*outs)
    ctx.n_inputs = len(inputs)


def _no_gradient(ctx: Any, *grads: Any) -> tuple[None, ...]:
    return (None,) * ctx.n_inputs


def _register(suffix: str) -> None:
    """Fake implementations and autograd of ``na_forward``/``na_step``/``na_replay`` + ``suffix``
    (``""``: the torch operators; ``"_cpp"``: the compiled ones). The window's gradient is
    the replay of the same family; step and replay have none of their own (na_window defines
    the per-step gradient)."""
    for name, fake in (("na_forward", _fake_forward), ("na_step", _fake_step),
                       ("na_replay", _fake_replay)):
        torch.library.register_fake(f"spikegrad::{name}{suffix}", fake)
    torch.library.register_autograd(
        f"spikegrad::na_forward{suffix}",
        _backward(getattr(torch.ops.spikegrad, f"na_replay{suffix}")),
        setup_context=_setup_context)
    for name in ("na_step", "na_replay"):
        torch.library.register_autograd(f"spikegrad::{name}{suffix}", _no_gradient,
                                        setup_context=_setup_nondifferentiable)


_register("")

_CPP: dict[str, bool] = {"registered": False}


def register_cpp() -> None:
    """Fake implementations and autograd of the compiled operators (after their library is
    loaded by :func:`spikegrad.rules.na.cpu.load`; idempotent)."""
    if _CPP["registered"]:
        return
    _register("_cpp")
    _CPP["registered"] = True
