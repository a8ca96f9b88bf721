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

import math
from dataclasses import dataclass
from typing import Any

import torch

from spikegrad._checks import check_choice, check_float_tensor, check_number
from spikegrad.rules import dispatch, ops_na

__all__ = [
    "DISTANCES", "ERRORS", "NA", "step", "forward", "error_step", "errors", "distance_weight",
    "loss_change",
    "backward", "deltas", "Rescale", "sequence", "NAFunction", "least_squares", "implementation",
    "choice", "reference_step", "reference_forward", "reference_deltas",
]

DISTANCES = ("inverse_cube", "inverse")
ERRORS = ("accumulated", "local")
RESETS = ("zero", "subtract")
IMPLEMENTATIONS = dispatch.RULE_IMPLEMENTATIONS  # ("auto", "torch", "cpp", "triton")


@dataclass(frozen=True)
class NA:
    """Hyperparameters of one NA layer, validated once.

    Args:
        beta: membrane decay ``λm = 1 - 1/τm`` in ``[0, 1]`` (the authors' ``τm = 5``: 0.8).
        threshold: ``ϑ > 0``.
        tau_s: PSP time constant ``>= 1``; ``None`` means the output is the spike train.
        distance: ``"inverse_cube"`` (default, the code) or ``"inverse"`` (the paper).
        clamp: bound ``> 0`` on the distance weight.
        error: ``"accumulated"`` (default, the code) or ``"local"``.
        reset: ``"zero"`` (default, the paper's hard reset) or ``"subtract"``. A flipped spike
            leaves the same state either way (``ϑ`` when removed, 0 when added); the replay
            after it follows this reset.
        implementation: ``"auto"`` (default: the compiled CPU kernel of
            :mod:`spikegrad.rules.na_cpu` for CPU float32/float64 tensors when it can be built,
            the Triton kernels of :mod:`spikegrad.rules.triton_kernels` for a whole window on
            CUDA tensors when they can run, else this module's torch code), ``"torch"``,
            ``"cpp"`` or ``"triton"`` (raise if they cannot run). The choice is made by
            :mod:`spikegrad.rules.dispatch`; :func:`implementation` reports it.
    """

    beta: float = 0.8
    threshold: float = 1.0
    tau_s: float | None = None
    distance: str = "inverse_cube"
    clamp: float = 5.0
    error: str = "accumulated"
    reset: str = "zero"
    implementation: str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "beta", check_number("beta", self.beta, low=0.0, high=1.0))
        set_(self, "threshold", check_number("threshold", self.threshold, positive=True))
        if self.tau_s is not None:
            set_(self, "tau_s", check_number("tau_s", self.tau_s, low=1.0))
        check_choice("distance", self.distance, DISTANCES)
        set_(self, "clamp", check_number("clamp", self.clamp, positive=True))
        check_choice("error", self.error, ERRORS)
        check_choice("reset", self.reset, RESETS)
        check_choice("implementation", self.implementation, IMPLEMENTATIONS)

    def after_reset(self, u: torch.Tensor, fire: torch.Tensor) -> torch.Tensor:
        """The post-reset state: ``u (1 - s)`` ("zero") or ``u - ϑ s`` ("subtract")."""
        if self.reset == "zero":
            return torch.where(fire, torch.zeros_like(u), u)
        return u - self.threshold * fire.to(u.dtype)

    @property
    def trace_decay(self) -> float:
        """``λs = 1 - 1/τs`` (0 when the output is the spike train)."""
        return 0.0 if self.tau_s is None else 1.0 - 1.0 / self.tau_s

    @property
    def trace_gain(self) -> float:
        """``1/τs`` (1 when the output is the spike train)."""
        return 1.0 if self.tau_s is None else 1.0 / self.tau_s


def _trace(a_prev: torch.Tensor, s: torch.Tensor, cfg: NA) -> torch.Tensor:
    if cfg.tau_s is None:
        return s
    return cfg.trace_decay * a_prev + cfg.trace_gain * s


def _hyper(cfg: NA) -> tuple[float, float, float | None, str]:
    """The operator arguments of the dynamics."""
    return cfg.beta, cfg.threshold, cfg.tau_s, cfg.reset


def _grad_hyper(cfg: NA) -> tuple[str, float, str]:
    """The operator arguments of the backward pass."""
    return cfg.distance, cfg.clamp, cfg.error


def _one_step(x: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """An optional per-neuron state as one step of ``like`` (``[T, *]``): broadcast, in its
    dtype."""
    if x is None:
        return None
    step_shape = like.shape[1:]
    return (x if x.shape == step_shape else x.expand(step_shape)).to(like.dtype)


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


def reference_step(
    c: torch.Tensor, u_prev: torch.Tensor, a_prev: torch.Tensor, cfg: NA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`step` in plain torch (the body of the operator ``spikegrad::na_step``)."""
    v_prev = cfg.after_reset(u_prev, u_prev > cfg.threshold)
    u = cfg.beta * v_prev + c
    s = (u > cfg.threshold).to(c.dtype)
    return s, u, _trace(a_prev, s, cfg)


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


def reference_forward(
    c: torch.Tensor, cfg: NA, *, a_init: torch.Tensor | None = None,
    u_init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`forward` in plain torch (the body of the operator ``spikegrad::na_forward``)."""
    if c.shape[0] == 0:
        return torch.empty_like(c), torch.empty_like(c), torch.empty_like(c)
    u = torch.zeros_like(c[0]) if u_init is None else u_init
    a = torch.zeros_like(c[0]) if a_init is None else a_init
    out = []
    for t in range(c.shape[0]):
        s, u, a = reference_step(c[t], u, a, cfg)
        out.append((s, u, a))
    s_seq, u_seq, a_seq = (torch.stack(x) for x in zip(*out, strict=True))
    return s_seq, u_seq, a_seq


def error_step(g_t: torch.Tensor, e_next: torch.Tensor | None, cfg: NA) -> torch.Tensor:
    """``e[t]`` from ``g[t]`` and ``e[t+1]`` (``None`` at the window's end); step 1."""
    if e_next is None or cfg.error == "local" or cfg.tau_s is None:
        return g_t
    return g_t + cfg.trace_decay * e_next


def errors(g: torch.Tensor, cfg: NA) -> torch.Tensor:
    """``e`` from ``g = ∂L/∂a`` for the whole window (step 1)."""
    check_float_tensor("g", g, min_dim=1)
    if cfg.error == "local" or cfg.tau_s is None:
        return g
    e = torch.empty_like(g)
    e_next = None
    for t in range(g.shape[0] - 1, -1, -1):
        e[t] = e_next = error_step(g[t], e_next, cfg)
    return e


def distance_weight(u: torch.Tensor, cfg: NA) -> torch.Tensor:
    """``w(u)`` of step 4; finite (``+clamp``) at ``u == ϑ``."""
    gap = cfg.threshold - u
    w = torch.reciprocal(gap)
    if cfg.distance == "inverse_cube":
        w = w * w * w
    return torch.clamp(w, -cfg.clamp, cfg.clamp)


def loss_change(
    c: torch.Tensor, s: torch.Tensor, a: torch.Tensor, e: torch.Tensor, cfg: NA, *,
    a_init: torch.Tensor | None = None, neighbors: int | None = None,
    changed: torch.Tensor | None = None, u: torch.Tensor | None = None,
) -> torch.Tensor:
    """``ΔL[k]`` of step 3 for the neighbors ``k < neighbors`` (default: all ``T``).

    All neighbors are replayed side by side; neighbor ``k`` is active from step ``k`` on, so the
    cost is ``K T - K (K + 1) / 2`` replay steps. With ``neighbors=1`` and the window's suffix
    from step ``k`` this is the per-step (causal) path of the snntorch neuron.

    Args:
        c, s, a: the window's inputs, spikes and traces (``a_init`` is the trace before it).
        e: the errors of :func:`errors`.
        changed: where the state entering step ``t`` was set from outside (a per-step host
            whose user changed ``mem`` between steps): there every neighbor's potential is the
            recorded ``u[t]``, i.e. the replay merges with the original trajectory (only the
            trace gap carries on). Needs ``u``. ``None``: the window is one free run.

    Shape:
        c, s, a, e: ``[T, B, *]``; output: ``[K, B, *]``.
    """
    T = c.shape[0]
    K = T if neighbors is None else neighbors
    ls, gain, th, beta = cfg.trace_decay, cfg.trace_gain, cfg.threshold, cfg.beta
    before = torch.zeros_like(a[:1]) if a_init is None else a_init.unsqueeze(0)
    a_prev = torch.cat([before, a[: K - 1]]) if K > 1 else before
    flipped = 1.0 - s[:K]
    a_k = ls * a_prev + gain * flipped if cfg.tau_s is not None else flipped
    v_k = th * s[:K]  # removed spike: parked at exactly ϑ; added spike: reset to 0
    d_l = e[:K] * (a_k - a[:K])
    if changed is not None and u is None:
        raise ValueError("loss_change: `changed` needs the recorded potentials `u`")
    for t in range(1, T):
        m = min(t, K)
        u_t = beta * v_k[:m] + c[t]
        if changed is not None:
            u_t = torch.where(changed[t], u[t], u_t)
        fire = u_t > th
        v_k[:m] = cfg.after_reset(u_t, fire)
        spikes = fire.to(c.dtype)
        a_k[:m] = ls * a_k[:m] + gain * spikes if cfg.tau_s is not None else spikes
        d_l[:m] += e[t] * (a_k[:m] - a[t])
    return d_l


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


def reference_deltas(
    c: torch.Tensor, u: torch.Tensor, a: torch.Tensor, e: torch.Tensor, cfg: NA, *,
    a_init: torch.Tensor | None = None, neighbors: int | None = None,
    changed: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`deltas` in plain torch (the body of the operator ``spikegrad::na_replay``)."""
    K = c.shape[0] if neighbors is None else neighbors
    if K == 0:
        return c.new_empty((0, *c.shape[1:]))
    s = (u > cfg.threshold).to(c.dtype)
    d_l = loss_change(c, s, a, e, cfg, a_init=a_init, neighbors=K, changed=changed, u=u)
    return d_l * distance_weight(u[:K], cfg)


class Rescale:
    """The authors' per-layer gradient rescale (code only; off unless passed to the layers).

    One instance is shared by the NA layers of one network. In each backward pass the first
    layer to run its backward (the output layer) sets the reference ``ref`` to its own
    ``mean|δ|``; every layer ``l`` then scales its ``δ`` by

    .. math::  1.2 \\ln\\Bigl(\\frac{ref}{\\operatorname{mean}|\\delta_l| + 10^{-5}} + 1.02\\Bigr)

    and the output layer's reference is updated to its rescaled ``mean|δ|``. As in the authors'
    code the stored means are rounded to 3 decimals. The rescale couples the samples of a
    batch; the next forward pass (:meth:`begin`) starts a new reference.
    """

    def __init__(self) -> None:
        self.ref: float | None = None

    def begin(self) -> None:
        """Forget the reference: called when a layer starts a new forward window."""
        self.ref = None

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        mean = float(delta.abs().mean())
        first = self.ref is None
        ref = round(mean, 3) if first else self.ref
        scaled = delta * (1.2 * math.log(ref / (mean + 1e-5) + 1.02))
        if first:
            self.ref = round(float(scaled.abs().mean()), 3)
        return scaled

    def __repr__(self) -> str:
        return f"Rescale(ref={self.ref})"


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
        from spikegrad.rules import triton_kernels

        return triton_kernels.na_sequence(c, cfg, rescale, u_init, a_init)
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
        e = ops_na.errors(g_a, cfg.tau_s, cfg.error)
        if cfg.implementation == "torch":
            delta = reference_deltas(c, u, a, e, cfg, a_init=a_init)
        else:
            op = torch.ops.spikegrad.na_replay_cpp if ctx.cpp else torch.ops.spikegrad.na_replay
            delta = op(c, u, a, e, a_init, None, c.shape[0], *_hyper(cfg), cfg.distance,
                       cfg.clamp)
        if ctx.rescale is not None:
            delta = ctx.rescale(delta)
        return delta if g_u is None else delta + g_u, None, None, None, None, None


def least_squares(directions: torch.Tensor, finite_differences: torch.Tensor) -> torch.Tensor:
    """The poster's general form: solve ``O ∇ = f`` in the least-squares sense (``∇ = O⁺ f``).

    For the one-hot neighbor directions of :func:`loss_change` (``O = diag(±1)``) this is the
    rule above; other neighbor sets (``M`` arbitrary perturbations) can be aggregated with it.

    Args:
        directions: the unit directions ``o_m`` of the ``M`` neighbors, ``[..., M, T]``.
        finite_differences: ``f_m = (L(u_m) - L(u)) / d(u, u_m)``, ``[..., M]``.

    Returns:
        the aggregated gradient ``[..., T]``.
    """
    check_float_tensor("directions", directions, min_dim=2)
    check_float_tensor("finite_differences", finite_differences, min_dim=1)
    if directions.shape[:-1] != finite_differences.shape:
        raise ValueError(
            "finite_differences must have the shape of directions without its last dimension: "
            f"{tuple(finite_differences.shape)} vs {tuple(directions.shape)}"
        )
    return (torch.linalg.pinv(directions) @ finite_differences.unsqueeze(-1)).squeeze(-1)


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
