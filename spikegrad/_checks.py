"""Input validation shared by every layer: each error names the argument and the fix."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def check_float_tensor(name: str, x: Any, *, min_dim: int = 0) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor with at least ``min_dim`` dimensions.

    Raises:
        TypeError: ``x`` is not a tensor, or has an integer/bool dtype.
        ValueError: ``x`` has fewer than ``min_dim`` dimensions.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float32 or float64; float16 and bfloat16 "
            f"also run), got dtype {x.dtype}; "
            f"convert it with {name}.float()"
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions (time-major [T, B, ...]), "
            f"got shape {tuple(x.shape)}"
        )
    return x


def check_same(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Raise if ``x`` and ``ref`` differ in shape, dtype or device."""
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} must have the same shape as {ref_name}: {tuple(x.shape)} vs {tuple(ref.shape)}"
        )
    if x.device != ref.device:
        raise ValueError(
            f"{name} is on {x.device} but {ref_name} is on {ref.device}; move both to one device"
        )
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has {ref.dtype}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ValueError listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name}={value!r}; choose one of {choices}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonneg: bool = False,
    low: float | None = None,
    high: float | None = None,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float (or a 0-d tensor's value) after range checks."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if not value.is_floating_point() and value.dtype == torch.bool:
            raise TypeError(f"{name} must be a number, got a bool tensor")
        v = float(value.detach())
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    else:
        v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and (v > high if high_inclusive else v >= high):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {op} {high}, got {v}")
    return v


def check_parameter(name: str, value: Any, *, positive: bool = False, unit: bool = False) -> None:
    """Check a hyperparameter that may be a number or a (learnable) tensor of any shape.

    Args:
        positive: every element must be > 0.
        unit: every element must lie in ``[0, 1]``.
    """
    if not isinstance(value, torch.Tensor):
        check_number(name, value, positive=positive, low=0.0 if unit else None,
                     high=1.0 if unit else None)
        return
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    v = value.detach()
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and (v <= 0).any():
        raise ValueError(f"{name} must be > 0, got {v}")
    if unit and ((v < 0) | (v > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1], got {v}")


def fit_state(name: str, state: torch.Tensor, like: torch.Tensor, fix: str) -> torch.Tensor:
    """``state`` as the state of a step whose input is ``like``: itself, or broadcast to it.

    Raises:
        ValueError: ``state`` does not broadcast to ``like``'s shape; the message names both
            shapes and ``fix`` says what to do.
    """
    if state.shape == like.shape:
        return state
    try:
        shape = torch.broadcast_shapes(state.shape, like.shape)
    except RuntimeError:
        shape = None
    if shape != like.shape:
        raise ValueError(
            f"{name} has shape {tuple(state.shape)}, which does not broadcast to the input's "
            f"shape {tuple(like.shape)}; {fix}"
        )
    return state.expand(like.shape).contiguous()
