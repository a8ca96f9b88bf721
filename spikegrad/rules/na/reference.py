"""NA's reference: its configuration (:class:`NA`) and the equations in plain torch, the
specification that the operators (:mod:`spikegrad.rules.na.ops`), the compiled CPU kernel
(:mod:`spikegrad.rules.na.cpu`) and the fused kernels (:mod:`spikegrad.rules.na.triton`,
:mod:`spikegrad.rules.na.cupy`) are checked against. The equations: :mod:`spikegrad.rules.na`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spikegrad._checks import check_choice, check_float_tensor, check_number
from spikegrad.rules import dispatch

__all__ = ["DISTANCES", "ERRORS", "RESETS", "IMPLEMENTATIONS", "NA", "reference_step",
           "reference_forward", "error_step", "errors", "distance_weight", "loss_change",
           "reference_deltas", "Rescale", "least_squares"]

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
            :mod:`spikegrad.rules.na.cpu` for CPU float32/float64 tensors when it can be built,
            the Triton kernels of :mod:`spikegrad.rules.triton_kernels` for a whole window on
            CUDA tensors when they can run, else this module's torch code), ``"torch"``,
            ``"cpp"`` or ``"triton"`` (raise if they cannot run). The choice is made by
            :mod:`spikegrad.rules.dispatch`; :func:`spikegrad.rules.na.implementation` reports it.
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


def reference_step(
    c: torch.Tensor, u_prev: torch.Tensor, a_prev: torch.Tensor, cfg: NA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``spikegrad.rules.na.step`` in plain torch (the body of the operator
    ``spikegrad::na_step``)."""
    v_prev = cfg.after_reset(u_prev, u_prev > cfg.threshold)
    u = cfg.beta * v_prev + c
    s = (u > cfg.threshold).to(c.dtype)
    return s, u, _trace(a_prev, s, cfg)


def reference_forward(
    c: torch.Tensor, cfg: NA, *, a_init: torch.Tensor | None = None,
    u_init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``spikegrad.rules.na.forward`` in plain torch (the body of the operator
    ``spikegrad::na_forward``)."""
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


def reference_deltas(
    c: torch.Tensor, u: torch.Tensor, a: torch.Tensor, e: torch.Tensor, cfg: NA, *,
    a_init: torch.Tensor | None = None, neighbors: int | None = None,
    changed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``spikegrad.rules.na.deltas`` in plain torch (the body of the operator
    ``spikegrad::na_replay``)."""
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
