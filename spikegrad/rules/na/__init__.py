r"""Neighborhood Aggregation (NA): a finite-difference replacement for the surrogate gradient.

Yang, Zhang & Li, "Backpropagated Neighborhood Aggregation for Accurate Training of Spiking
Neural Networks", ICML 2021; the authors' code is ``superrrpotato/Neighbors`` (commit
``bf8b564``, the 91.76 % CIFAR-10 result).

**Forward** (one layer; LIF with hard reset, PSP trace output, strict ``u > ϑ``):

.. math::

    u[t] = \lambda_m v[t-1] + c[t],\quad s[t] = H(u[t] - \vartheta),\quad
    v[t] = u[t](1 - s[t]),\quad a[t] = \lambda_s a[t-1] + s[t]/\tau_s

with :math:`\lambda_m = \beta = 1 - 1/\tau_m`, :math:`\lambda_s = 1 - 1/\tau_s` (``τs = 1``, i.e.
``tau_s=None``, gives ``a = s``).

**Backward**, per neuron and sample, given :math:`g = \partial L/\partial a`:

1. errors: ``"accumulated"`` :math:`e[t] = g[t] + \lambda_s e[t+1]` (the code's), or
   ``"local"`` :math:`e = g`;
2. neighbor ``k`` flips the spike at step ``k`` with the smallest change of ``u[k]``: a removed
   spike parks the state at exactly ``ϑ`` (no reset), an added spike resets it to 0; steps after
   ``k`` are re-simulated with the same inputs, giving the trace :math:`a_k`;
3. :math:`\Delta L[k] = \sum_{t \ge k} e[t]\,(a_k[t] - a[t])`;
4. :math:`\delta[k] = \Delta L[k]\; w(u[k])`, with
   :math:`w = \operatorname{clamp}((\vartheta - u)^{-3}, \pm c)` (``"inverse_cube"``, the code's,
   ``c = 5``) or :math:`\operatorname{clamp}((\vartheta - u)^{-1}, \pm c)` (``"inverse"``, the
   paper's). At ``u = ϑ`` exactly, :math:`\vartheta - u = +0` and ``w = +c`` (finite);
5. optionally (code only) a per-layer rescale, see :class:`Rescale`.

:math:`\delta = \partial L/\partial c`; there is no recursion through ``u`` (the replay holds the
temporal chain). A gradient arriving at the returned potential ``u[t]`` is added to ``δ[t]``
unchanged. Properties: ``δ[k]`` depends on ``g[t >= k]`` only (causality), is linear in ``g``
and independent across samples (without the rescale). The poster's general least-squares
form over ``M`` neighbors reduces to this for these one-hot neighbors (see
:func:`least_squares`).

Cost: ``T (T - 1) / 2`` replay steps per neuron in the backward pass.
"""


from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from spikegrad._checks import check_float_tensor
from spikegrad.rules import dispatch, first_use
from spikegrad.rules.na import cpu, cupy, ops  # noqa: F401 - cpu: registers the compiled kernel
from spikegrad.rules.na.reference import (
    DISTANCES,
    ERRORS,
    IMPLEMENTATIONS,
    NA,
    RESETS,
    Rescale,
    _grad_hyper,
    _hyper,
    _one_step,
    distance_weight,
    error_step,
    errors,
    least_squares,
    loss_change,
    reference_deltas,
    reference_forward,
    reference_step,
)

__all__ = [
    "DISTANCES", "ERRORS", "RESETS", "IMPLEMENTATIONS", "NA", "step", "forward", "error_step",
    "errors", "distance_weight", "loss_change", "backward", "deltas", "Rescale", "sequence",
    "NAFunction", "least_squares", "implementation", "choice", "reference_step",
    "reference_forward", "reference_deltas",
]


def step(
    c: torch.Tensor, u_prev: torch.Tensor, a_prev: torch.Tensor, cfg: NA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward step from the previous pre-reset potential and trace (no autograd).

    Runs the operator ``spikegrad::na_step`` (torch) or ``spikegrad::na_step_cpp`` (compiled),
    as :mod:`spikegrad.rules.dispatch` picks.

    Returns:
        ``(s[t], u[t], a[t])``.
    """
    if not (c.shape == u_prev.shape == a_prev.shape and c.dtype == u_prev.dtype == a_prev.dtype):
        dtype = torch.promote_types(torch.promote_types(c.dtype, u_prev.dtype), a_prev.dtype)
        c, u_prev, a_prev = (x.to(dtype) for x in torch.broadcast_tensors(c, u_prev, a_prev))
    impl = dispatch.rule_implementation("na", cfg.implementation, c, sequence=False)
    op = torch.ops.spikegrad.na_step_cpp if impl == "cpp" else torch.ops.spikegrad.na_step
    return op(c, u_prev, a_prev, *_hyper(cfg))


def forward(
    c: torch.Tensor, cfg: NA, *, a_init: torch.Tensor | None = None,
    u_init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole window (see :func:`sequence` for the differentiable call).

    The window starts from rest unless ``u_init`` (the pre-reset potential of the step before
    it) and ``a_init`` (the trace before it) are given. Runs ``spikegrad::na_forward`` or
    ``spikegrad::na_forward_cpp``, as :mod:`spikegrad.rules.dispatch` picks (torch or cpp).

    Returns:
        ``(s, u, a)``: spikes, pre-reset potentials, traces.

    Shape:
        c: ``[T, B, *]``; outputs: ``[T, B, *]``.
    """
    check_float_tensor("c", c, min_dim=1)
    impl = dispatch.rule_implementation("na", cfg.implementation, c, sequence=False)
    op = torch.ops.spikegrad.na_forward_cpp if impl == "cpp" else torch.ops.spikegrad.na_forward
    u, a = op(c, _one_step(a_init, c), _one_step(u_init, c), *_hyper(cfg), *_grad_hyper(cfg))
    return (u > cfg.threshold).to(c.dtype), u, a


def backward(
    c: torch.Tensor, u: torch.Tensor, s: torch.Tensor, a: torch.Tensor, g: torch.Tensor,
    cfg: NA, *, a_init: torch.Tensor | None = None,
) -> torch.Tensor:
    """``δ = ∂L/∂c`` of the whole window (steps 1-4, no rescale).

    Shape:
        all inputs ``[T, B, *]``; output ``[T, B, *]``.
    """
    check_float_tensor("c", c, min_dim=1)
    return deltas(c, u, s, a, errors(g, cfg), cfg, a_init=a_init)


def deltas(
    c: torch.Tensor, u: torch.Tensor, s: torch.Tensor, a: torch.Tensor, e: torch.Tensor,
    cfg: NA, *, a_init: torch.Tensor | None = None, neighbors: int | None = None,
    changed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``δ[k] = ΔL[k] w(u[k])`` for ``k < neighbors`` given the errors ``e`` (steps 3-4).

    Runs ``spikegrad::na_replay`` (torch: :func:`loss_change`; the Triton replay kernel on
    CUDA tensors where it can run) or ``spikegrad::na_replay_cpp`` (the compiled kernel), as
    :mod:`spikegrad.rules.dispatch` picks; ``cfg.implementation="torch"`` runs the torch
    reference on every device (:func:`reference_deltas`). ``changed`` (bool, like
    ``c``) marks states set from outside; see :func:`loss_change`. The spikes ``s`` are
    ``u > ϑ`` by definition; the operators recompute them from ``u``.

    Shape:
        c, u, s, a, e: ``[T, B, *]``; output ``[K, B, *]``.
    """
    for name, x in (("c", c), ("u", u), ("s", s), ("a", a), ("e", e)):
        check_float_tensor(name, x, min_dim=1)
    K = c.shape[0] if neighbors is None else neighbors
    if cfg.implementation == "torch":  # requested: the reference, also on CUDA tensors
        return reference_deltas(c, u, a, e, cfg, a_init=_one_step(a_init, c), neighbors=K,
                                changed=changed)
    impl = dispatch.rule_implementation("na", cfg.implementation, c, sequence=False)
    op = torch.ops.spikegrad.na_replay_cpp if impl == "cpp" else torch.ops.spikegrad.na_replay
    return op(c, u, a, e, _one_step(a_init, c), changed, K, *_hyper(cfg), cfg.distance,
              cfg.clamp)


def sequence(
    c: torch.Tensor, cfg: NA, rescale: Rescale | None = None, u_init: torch.Tensor | None = None,
    a_init: torch.Tensor | None = None, *, triton: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole window as one differentiable call: ``c -> (out, u)`` with the NA backward.

    ``out`` is the trace ``a`` (the spikes when ``tau_s`` is ``None``). A gradient arriving at
    ``u`` is added to ``δ`` unchanged. ``rescale`` is an optional shared :class:`Rescale`;
    ``u_init``/``a_init`` (not differentiated; one step, broadcast) continue from an earlier
    state. :mod:`spikegrad.rules.dispatch` picks the implementation: the operator
    ``spikegrad::na_forward`` (torch) or ``spikegrad::na_forward_cpp`` (compiled CPU kernel),
    whose registered autograd is the NA backward, or the Triton kernels on CUDA tensors
    (whose ``u`` is float32) unless ``triton=False`` (a spikingjelly node with
    ``backend="torch"``). With ``rescale`` the backward runs in a small autograd node around
    the operators (eager only: the rescale reads ``mean|δ|`` on the host).

    Shape:
        c: ``[T, B, *]``; u_init, a_init: ``[B, *]``; outputs: ``[T, B, *]``.
    """
    check_float_tensor("c", c, min_dim=1)
    impl = dispatch.rule_implementation("na", cfg.implementation, c, sequence=triton,
                                        spec=cfg)
    if impl == "triton":
        return _triton().sequence(c, cfg, rescale, u_init, a_init)
    u_init, a_init = _one_step(u_init, c), _one_step(a_init, c)
    if rescale is not None or cfg.implementation == "torch":
        # explicit torch: the operator's registered backward would replay with the Triton
        # kernel on CUDA tensors (dispatch.replay_choice); this node replays with the reference
        return _WindowNA.apply(c, cfg, rescale, u_init, a_init, impl == "cpp")
    op = torch.ops.spikegrad.na_forward_cpp if impl == "cpp" else torch.ops.spikegrad.na_forward
    u, a = op(c, a_init, u_init, *_hyper(cfg), *_grad_hyper(cfg))
    return a, u


class NAFunction:
    """The name :func:`sequence` had as an ``autograd.Function``: ``NAFunction.apply(c, cfg,
    rescale, u_init=None, a_init=None)`` is :func:`sequence` (kept for existing code)."""

    apply = staticmethod(sequence)


class _WindowNA(torch.autograd.Function):
    """The window in an autograd node of its own: with the authors' :class:`Rescale` on ``δ``
    (before the ``u`` gradient), or with the torch reference's replay on a GPU when
    ``implementation="torch"`` was requested (the operator's backward would run Triton)."""

    @staticmethod
    def forward(c: torch.Tensor, cfg: NA, rescale: Rescale | None,  # type: ignore[override]
                u_init: torch.Tensor | None, a_init: torch.Tensor | None, cpp: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        op = torch.ops.spikegrad.na_forward_cpp if cpp else torch.ops.spikegrad.na_forward
        u, a = op(c, a_init, u_init, *_hyper(cfg), *_grad_hyper(cfg))
        return a, u

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        c, cfg, rescale, _, a_init, cpp = inputs
        a, u = output
        ctx.save_for_backward(c, u, a, a_init)
        ctx.cfg, ctx.rescale, ctx.cpp = cfg, rescale, cpp
        if rescale is not None:
            rescale.begin()

    @staticmethod
    def backward(ctx: Any, g_a: torch.Tensor, g_u: torch.Tensor):  # type: ignore[override]
        c, u, a, a_init = ctx.saved_tensors
        cfg = ctx.cfg
        e = ops.errors(g_a, cfg.tau_s, cfg.error)
        if cfg.implementation == "torch":
            delta = reference_deltas(c, u, a, e, cfg, a_init=a_init)
        else:
            op = torch.ops.spikegrad.na_replay_cpp if ctx.cpp else torch.ops.spikegrad.na_replay
            delta = op(c, u, a, e, a_init, None, c.shape[0], *_hyper(cfg), cfg.distance,
                       cfg.clamp)
        if ctx.rescale is not None:
            delta = ctx.rescale(delta)
        return delta if g_u is None else delta + g_u, None, None, None, None, None


def choice(cfg: NA | None = None, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float32, *, sequence: bool = True) -> dispatch.Choice:
    """What :mod:`spikegrad.rules.dispatch` picks for ``cfg`` and tensors on ``device``.

    Args:
        sequence: a whole window (:func:`sequence`; Triton may run it on CUDA) or the
            per-step path (:func:`step` and the per-step replay: torch or cpp).

    Raises:
        ValueError, RuntimeError, ImportError: an explicit ``cfg.implementation`` cannot run.
    """
    cfg = cfg or NA()
    return dispatch.rule_choice("na", cfg.implementation, device, dtype, sequence=sequence)


_NAMES = {"cpp": "cpp (compiled CPU kernel)", "triton": "triton (fused CUDA kernels)"}


def implementation(cfg: NA | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> str:
    """Which implementation ``cfg`` runs for a window on ``device``, and why (for records)."""
    cfg = cfg or NA()
    try:
        picked = choice(cfg, device, dtype)
    except (RuntimeError, ValueError, ImportError) as exc:
        return f"unavailable: {exc}"
    if picked.implementation in _NAMES:
        return _NAMES[picked.implementation]
    if cfg.implementation == "torch":
        return "torch (requested)"
    return f"torch ({picked.reason})" if picked.reason else "torch"


def _triton() -> ModuleType:
    """NA's hand-written Triton kernels (:mod:`spikegrad.rules.na.triton`), imported on first
    use: importing them imports Triton (seconds), which the CPU paths never need."""
    from spikegrad.rules.na import triton

    return triton


def _probe_replay(flags: tuple[bool, ...], device: torch.device, dtype: torch.dtype
                  ) -> list[tuple[str, torch.Tensor]]:
    """The first-use probe of the Triton replay kernel for ``flags`` (``(trace, subtract,
    cube, has_a_init, has_changed)``): one replay of a tiny window."""
    from spikegrad.rules.na import triton_replay

    trace, subtract, cube, has_a0, has_changed = flags
    c, u, a = (x.detach() for x in first_use.inputs(device, dtype))
    delta = triton_replay.na_replay(
        c, u.float(), a, a.flip(0), a[0].abs() if has_a0 else None,
        (u > 0.9) if has_changed else None, c.shape[0], 0.8, 1.0, 2.0 if trace else None,
        "subtract" if subtract else "zero", "inverse_cube" if cube else "inverse", 5.0)
    return [("deltas", delta)]


first_use.register("triton", NA, first_use.sequence_probe(
    lambda c, u0, a0, cfg: _triton().sequence(c, cfg, None, u0.float(), a0)))
first_use.register("cupy", "na", first_use.sequence_probe(
    lambda c, u0, a0, spec: cupy.sequence(c, spec, None, u0.float(), a0)))
first_use.register("triton_replay", None, _probe_replay)
