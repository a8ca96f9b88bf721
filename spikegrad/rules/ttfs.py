r"""Time-to-first-spike (TTFS) losses: snntorch's temporal losses, vectorised and fixed.

The first-spike step of every output neuron is read from a time-major spike record
``s[t, b, n]`` (0-based; a silent neuron counts as the last step):

.. math::

    t_{b,n} = \min\big(\{t : s[t,b,n] \neq 0\} \cup \{T-1\}\big)

A spike is any non-zero entry. The backward pass uses snntorch's sign estimator ("more potential,
earlier spike"): the gradient reaches the spike tensor at the first-spike step only,

.. math::

    \frac{\partial L}{\partial s[t,b,n]} = -\frac{\partial L}{\partial t_{b,n}}\,
    \mathbb{1}[t = t_{b,n}].

With ``multi_spike=True`` the same holds for the :math:`k`-th spike time :math:`t^{(k)}_{b,n}`
(:math:`T-1` once a neuron has fewer than :math:`k` spikes). The cross-entropy loss turns times
into logits with a decreasing map, :math:`z = -t` (``"negate"``) or :math:`z = 1/(t+1)`
(``"reciprocal"``), and applies :math:`\mathrm{CE}(z_b, y_b)`. The MSE loss compares times with
targets :math:`\tau` (``on_target`` for the label's neuron, ``off_target`` elsewhere, or given
directly), a negative :math:`\tau` meaning :math:`T+\tau`:

.. math::

    L = \operatorname{mean}_{b,n}\Big(\frac{\hat t_{b,n} - \tau_{b,n}}{T}\Big)^2, \qquad
    \hat t = \begin{cases}\tau & |t-\tau| < \text{tolerance}\\ t & \text{otherwise.}\end{cases}

Semantics follow ``snntorch.functional.ce_temporal_loss`` / ``mse_temporal_loss`` (Eshraghian et
al., "Training Spiking Neural Networks Using Lessons From Deep Learning", Proc. IEEE 2023), as
used by the seed "Training Spiking Neural Networks based on DL" (Gusev & Abramov), which reports
95.35 % MNIST test accuracy with TTFS coding. Values and gradients equal snntorch's wherever all
target times are non-negative, with these host defects fixed on purpose:

* a negative target time always means ``T + value`` (snntorch clamps the class targets to
  ``max(0, off_target)`` when ``on_target > off_target``, so its defaults ``on_target=0,
  off_target=-1`` give all-zero targets; here ``off_target=-1`` is step ``T-1``);
* no Python loop over batch x neurons (forward: one max over time per spike slot; backward: one
  scatter);
* ``multi_spike=True`` finds each neuron's own k-th spike (snntorch zeroes whole time steps at
  every neuron's previous spike time, so neurons and samples disturb each other); where several
  slots of one neuron land on step ``T-1`` the gradient of the last slot is kept, as in snntorch;
* ``mse_temporal_loss(weight=...)`` weights sample ``b`` by ``weight[targets[b]]`` (snntorch
  multiplies a ``[B, N]`` loss by a ``[B]`` vector, which fails unless ``B == N``) and
  ``reduction="sum"`` sums (snntorch returns the unreduced loss when a weight is given);
* the caller's ``targets`` are never modified (snntorch rewrites negative times in place).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spikegrad._checks import check_choice, check_float_tensor, check_number

__all__ = ["first_spike_time", "ce_temporal_loss", "mse_temporal_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _make_countdown(steps: int, dtype: torch.dtype, device: torch.device, dim: int
                    ) -> torch.Tensor:
    """``T, T-1, ..., 1`` along dim 0, shaped to broadcast against a ``dim``-D record."""
    return torch.arange(steps, 0, -1, dtype=dtype, device=device).view(-1, *[1] * (dim - 1))


_cached_countdown = functools.lru_cache(maxsize=64)(_make_countdown)


def _countdown(steps: int, dtype: torch.dtype, device: torch.device, dim: int) -> torch.Tensor:
    """:func:`_make_countdown`, cached in eager mode (``torch.compile`` traces the plain
    function: it would ignore the cache and warn)."""
    if torch.compiler.is_compiling():
        return _make_countdown(steps, dtype, device, dim)
    return _cached_countdown(steps, dtype, device, dim)


class _SpikeTimes(torch.autograd.Function):
    """Spike steps in the input's dtype: the first (``count=None``, ``[*]``) or the first
    ``count`` (``[count, *]``) of each neuron of ``spk_rec`` ``[T, *]``."""

    @staticmethod
    def forward(spk_rec: torch.Tensor, count: int | None) -> torch.Tensor:
        steps, dtype = spk_rec.size(0), spk_rec.dtype
        work = torch.promote_types(dtype, torch.float32)  # exact step numbers
        score = spk_rec.abs() if work == dtype else spk_rec.abs().to(work)
        # score = T - t where a spike is, 0 elsewhere: the max over t is the earliest spike
        score = score.sign_().mul_(_countdown(steps, work, spk_rec.device, spk_rec.dim()))
        if count is None:
            best = score.amax(0)
        else:
            slots = [score.amax(0, keepdim=True)]
            for _ in range(count - 1):  # k-th spike: drop the earlier ones (a loop over F only)
                score = torch.where(score < slots[-1], score, 0)
                slots.append(score.amax(0, keepdim=True))
            best = torch.cat(slots)
        best = torch.rsub(best, steps).clamp_max_(steps - 1)  # silent: T - 0 -> T-1
        nan = torch.isnan(spk_rec.sum(0))  # a NaN record has no spike time: NaN, never "silent"
        best = best.masked_fill(nan, float("nan"))
        return best if work == dtype else best.to(dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        steps = inputs[0].size(0)  # (NaN times get a valid index; their gradient is NaN anyway)
        ctx.save_for_backward(output.nan_to_num(steps - 1).long())  # a copy: callers may edit
        ctx.shape = inputs[0].shape
        ctx.single = inputs[1] is None

    @staticmethod
    def backward(ctx: Any, grad_times: torch.Tensor) -> tuple[torch.Tensor, None]:
        (idx,) = ctx.saved_tensors
        grad = grad_times.neg()
        if ctx.single:
            idx, grad = idx.unsqueeze(0), grad.unsqueeze(0)
        elif idx.size(0) > 1:  # equal slots (only T-1) of one neuron: the last one wins
            # built out of place: the slice assignment into a zeros tensor made Inductor's CPU
            # code generator fail (mixed VecMask types) when this backward was compiled
            shadowed = torch.cat([idx[:-1] == idx[1:],
                                  torch.zeros_like(idx[:1], dtype=torch.bool)])
            grad = grad.masked_fill(shadowed, 0)
        return grad.new_zeros(ctx.shape).scatter_add_(0, idx, grad), None


# ``apply`` binds arguments through ``inspect.signature`` on every call when ``setup_context`` is
# used; a precomputed signature keeps that cheap.
_SpikeTimes.forward.__signature__ = inspect.signature(_SpikeTimes.forward)  # type: ignore[attr-defined]


def first_spike_time(spk_rec: torch.Tensor) -> torch.Tensor:
    """0-based first-spike step of every neuron; a silent neuron counts as step ``T-1``.

    Differentiable with snntorch's sign estimator: ``dL/ds[t]`` is ``-dL/dt`` at the
    first-spike step (at ``T-1`` for a silent neuron) and zero elsewhere. A spike is any
    non-zero entry.

    Args:
        spk_rec: Spike record, time-major.

    Returns:
        The first-spike steps, in ``spk_rec``'s dtype.

    Shape:
        - spk_rec: ``[T, B, *]``
        - output: ``[B, *]``
    """
    check_float_tensor("spk_rec", spk_rec, min_dim=2)
    if spk_rec.size(0) == 0:
        raise ValueError("spk_rec must have at least one time step (dim 0 is T), got T=0")
    return _SpikeTimes.apply(spk_rec, None)


def _check_record(spk_rec: Any) -> torch.Tensor:
    check_float_tensor("spk_rec", spk_rec, min_dim=3)
    if spk_rec.dim() != 3 or spk_rec.size(0) == 0:
        raise ValueError(
            f"spk_rec must have shape [T, B, N] with T >= 1, got {tuple(spk_rec.shape)}; "
            "flatten extra dims into N"
        )
    return spk_rec


def _check_labels(targets: Any, spk_rec: torch.Tensor) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of class indices, got {type(targets)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(
            f"targets must hold integer class indices, got dtype {targets.dtype}; "
            "use targets.long() (or target_is_time=True for spike times)"
        )
    _, batch, outputs = spk_rec.shape
    if targets.shape != (batch,):
        raise ValueError(f"targets must have shape [B] = [{batch}], got {tuple(targets.shape)}")
    if targets.device != spk_rec.device:
        raise ValueError(f"targets is on {targets.device} but spk_rec on {spk_rec.device}")
    message = f"targets must be class indices in [0, {outputs - 1}]"
    if torch.compiler.is_compiling():  # a check on the device: no host sync, no graph break
        torch._assert_async(((targets >= 0) & (targets < outputs)).all(), message)
    else:
        low, high = torch.aminmax(targets) if batch else (torch.zeros(()), torch.zeros(()))
        if low.item() < 0 or high.item() >= outputs:
            raise ValueError(message)
    return targets.long()


def _check_weight(weight: Any) -> None:
    if weight is not None:
        check_float_tensor("weight", weight, min_dim=1)
        if weight.dim() != 1:
            raise ValueError(f"weight must be 1-D (one per class), got {tuple(weight.shape)}")


def _class_weight(weight: torch.Tensor, spk_rec: torch.Tensor) -> torch.Tensor:
    if weight.numel() != spk_rec.size(-1):
        raise ValueError(f"weight must have one entry per output neuron ({spk_rec.size(-1)})")
    return weight.to(device=spk_rec.device, dtype=spk_rec.dtype)


@dataclass(frozen=True, eq=False)
class ce_temporal_loss:  # noqa: N801 - snntorch's name
    """Cross-entropy of inverted first-spike times; a drop-in for snntorch's.

    ``loss = ce_temporal_loss(); loss(spk_rec, targets)`` with class-index ``targets``.

    Args:
        inverse: ``"negate"`` (logit ``-t``) or ``"reciprocal"`` (logit ``1/(t+1)``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in ``torch.nn.CrossEntropyLoss``.
        weight: Optional class weights, as in ``torch.nn.CrossEntropyLoss``.

    Shape:
        - spk_rec: ``[T, B, N]`` float spike record.
        - targets: ``[B]`` integer class indices.
        - output: scalar, or ``[B]`` with ``reduction="none"``.
    """

    inverse: str = "negate"
    reduction: str = "mean"
    weight: torch.Tensor | None = None
    __name__ = "ce_temporal_loss"

    def __post_init__(self) -> None:
        check_choice("inverse", self.inverse, ("negate", "reciprocal"))
        check_choice("reduction", self.reduction, _REDUCTIONS)
        _check_weight(self.weight)

    def __call__(self, spk_rec: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = _check_labels(targets, _check_record(spk_rec))
        times = _SpikeTimes.apply(spk_rec, None)
        logits = -times if self.inverse == "negate" else 1.0 / (times + 1.0)
        weight = None if self.weight is None else _class_weight(self.weight, spk_rec)
        return F.cross_entropy(logits, labels, weight=weight, reduction=self.reduction)


def _is(value: Any, default: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == default


def _shift(value: float | tuple[float, ...], steps: int) -> Any:
    """A negative target time ``v`` is step ``T + v``."""
    if isinstance(value, tuple):
        return tuple(_shift(v, steps) for v in value)
    return value + steps if value < 0 else value


def _time_or_times(name: str, value: Any, multi: bool) -> float | tuple[float, ...]:
    if not multi:
        return check_number(name, value)
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist()
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise ValueError(
            f"with multi_spike=True and label targets, {name} must be a non-empty sequence of "
            f"spike times (one per spike), got {value!r}"
        )
    return tuple(check_number(f"{name}[{i}]", v) for i, v in enumerate(value))


def _flat(on: Any, off: Any, steps: int) -> list[float]:
    """The on/off target times (numbers or sequences), negative ones read as ``T + value``."""
    values = [v for x in (on, off) for v in (x if isinstance(x, Sequence) else (x,))]
    return [float(v) + steps if v < 0 else float(v) for v in values]


@dataclass(frozen=True, eq=False)
class mse_temporal_loss:  # noqa: N801 - snntorch's name
    """Mean squared error between spike times and target times; a drop-in for snntorch's.

    Args:
        target_is_time: ``targets`` are spike times (``[B, N]``, or ``[N]`` shared by the batch;
            ``[F, B, N]`` or ``[F, N]`` with ``multi_spike``) instead of class indices ``[B]``.
        on_target: Target time of the label's neuron (a sequence of ``F`` times with
            ``multi_spike``). Negative means ``T + on_target``.
        off_target: Target time of the other neurons, as ``on_target``; ``-1`` is step ``T-1``.
        tolerance: A time within ``tolerance`` steps (strictly) of its target costs nothing.
        multi_spike: Compare the first ``F`` spike times of each neuron with ``F`` targets.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the squared errors.
        weight: Optional class weights ``[N]``; sample ``b`` is weighted by
            ``weight[targets[b]]`` (needs label targets).

    Shape:
        - spk_rec: ``[T, B, N]`` float spike record.
        - targets: ``[B]`` class indices, or times as above.
        - output: scalar, or ``[B, N]`` (``[F, B, N]`` with ``multi_spike``) for ``"none"``.
    """

    target_is_time: bool = False
    on_target: float | Sequence[float] = 0
    off_target: float | Sequence[float] = -1
    tolerance: float = 0
    multi_spike: bool = False
    reduction: str = "mean"
    weight: torch.Tensor | None = None
    __name__ = "mse_temporal_loss"

    def __post_init__(self) -> None:
        for flag in ("target_is_time", "multi_spike"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        tolerance = check_number("tolerance", self.tolerance, nonneg=True)
        object.__setattr__(self, "tolerance", tolerance)
        check_choice("reduction", self.reduction, _REDUCTIONS)
        _check_weight(self.weight)
        if self.target_is_time:
            defaults = _is(self.on_target, 0) and _is(self.off_target, -1)
            if not defaults or self.weight is not None:
                raise ValueError(
                    "on_target, off_target and weight apply to class-label targets only; with "
                    "target_is_time=True pass the spike times as targets and leave them default"
                )
            return
        on = _time_or_times("on_target", self.on_target, self.multi_spike)
        off = _time_or_times("off_target", self.off_target, self.multi_spike)
        if isinstance(on, tuple) and isinstance(off, tuple) and len(on) != len(off):
            raise ValueError(
                f"on_target and off_target must hold the same number of times: {on}, {off}"
            )
        object.__setattr__(self, "on_target", on)
        object.__setattr__(self, "off_target", off)

    def _target_times(self, spk_rec: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        steps, batch, outputs = spk_rec.shape
        like = {"dtype": spk_rec.dtype, "device": spk_rec.device}
        if not self.target_is_time:
            labels = _check_labels(targets, spk_rec)
            on, off = (_shift(v, steps) for v in (self.on_target, self.off_target))
            if not self.multi_spike:
                full = torch.full((batch, outputs), off, **like)
                return full.scatter_(1, labels.unsqueeze(1), on), labels
            on, off = (torch.tensor(v, **like).view(-1, 1, 1) for v in (on, off))
            index = labels.view(1, -1, 1).expand(on.size(0), -1, 1)
            full = off.repeat(1, batch, outputs)
            return full.scatter_(2, index, on.expand(-1, batch, 1)), labels
        if not isinstance(targets, torch.Tensor) or targets.dtype == torch.bool:
            raise TypeError(f"targets must be a real tensor of spike times, got {targets!r}")
        lead = 1 if self.multi_spike else 0
        tail = targets.shape[lead:]
        empty = self.multi_spike and (targets.dim() == 0 or targets.size(0) == 0)
        if empty or tail not in ((batch, outputs), (outputs,)):
            want = "[F, B, N] or [F, N]" if self.multi_spike else "[B, N] or [N]"
            raise ValueError(
                f"targets (spike times) must have shape {want} with B={batch}, N={outputs}, "
                f"got {tuple(targets.shape)}"
            )
        if targets.device != spk_rec.device:
            raise ValueError(f"targets is on {targets.device} but spk_rec on {spk_rec.device}")
        times = targets.to(spk_rec.dtype)
        times = times.unsqueeze(-2) if tail == (outputs,) else times  # shared by the batch
        return torch.where(times < 0, times + steps, times), None

    def _check_target_range(self, target: torch.Tensor, from_labels: bool, steps: int) -> None:
        """Every target time in ``[0, T)``: label targets check the few on/off values in
        Python; given times one reduction (read on the host in eager mode; a check on the
        device while ``torch.compile`` traces, so that no step waits for the device)."""
        rule = (f"target spike times must lie in [0, T) = [0, {steps}) after negative times "
                "are read as T + value")
        if from_labels:
            times = _flat(self.on_target, self.off_target, steps)
            lo, hi = min(times), max(times)
        elif torch.compiler.is_compiling():
            outside = ((target < 0) | (target >= steps)).any()  # NaN passes, as in eager
            torch._assert_async(~outside, rule)
            return
        else:
            lo, hi = map(float, torch.aminmax(target.detach()))
        if lo < 0 or hi >= steps:
            raise ValueError(f"{rule}; got [{lo:g}, {hi:g}] (from targets, on_target or "
                             "off_target): a neuron can never spike there")

    def __call__(self, spk_rec: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        steps = _check_record(spk_rec).size(0)
        target, labels = self._target_times(spk_rec, targets)
        self._check_target_range(target, labels is not None, steps)
        times = _SpikeTimes.apply(spk_rec, target.size(0) if self.multi_spike else None)
        target = target.expand_as(times)
        if self.tolerance > 0:  # within tolerance: no cost and (as in snntorch) no gradient
            close = (times.detach() - target).abs_() < self.tolerance
            times = torch.where(close, target, times)
        scale = 1.0 / (steps * steps)  # times are compared in units of T
        if self.weight is None or labels is None:
            return F.mse_loss(times, target, reduction=self.reduction) * scale
        sample_weight = _class_weight(self.weight, spk_rec)[labels].unsqueeze(-1) * scale
        loss = F.mse_loss(times, target, reduction="none") * sample_weight
        if self.reduction == "none":
            return loss
        return loss.mean() if self.reduction == "mean" else loss.sum()
