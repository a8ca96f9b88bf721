"""What the Triton kernels need from a rule, without importing Triton.

* :class:`ResetTermSpec` (and :func:`reset_term_spec`, the CuPy ``kernels.reset_term_spec``
  signature): the reset-term rule has no configuration object of its own;
* :func:`available`: whether the kernels can run for a device and dtype, and if not, why;
* float32 constants exactly as torch rounds a Python scalar (:func:`f32`, :func:`f32_div`).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import struct
import sys
from dataclasses import dataclass

import torch

from spikegrad._checks import check_choice, check_number
from spikegrad.rules.reset_term import MECHANISMS
from spikegrad.rules.surrogate import ATan, Sigmoid, Surrogate

__all__ = ["DTYPES", "ResetTermSpec", "reset_term_spec", "available", "device_problem",
           "interpreting", "triton_problem", "f32", "f32_div"]

#: storage dtypes of the kernels (arithmetic is float32 for all of them)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: surrogate kinds as the kernels know them (a ``tl.constexpr``)
SIGMOID, ATAN = 0, 1


def f32(value: float) -> float:
    """``value`` rounded to float32 (round to nearest), as torch casts a Python scalar."""
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def f32_div(a: float, b: float) -> float:
    """``float32(a) / float32(b)`` computed in float32 (a kernel constant such as ``1/τs``)."""
    return float(torch.tensor(f32(a), dtype=torch.float32) / torch.tensor(f32(b),
                                                                           dtype=torch.float32))


@dataclass(frozen=True)
class ResetTermSpec:
    """The reset-term rule's parameters for the fused kernels (validated once).

    Args:
        beta: leak ``β`` of ``u[t] = β v[t-1] + c[t]``.
        threshold: ``ϑ``.
        surrogate: a spikegrad :class:`~spikegrad.rules.surrogate.Sigmoid` or
            :class:`~spikegrad.rules.surrogate.ATan` (``spiking=True``); its ``inclusive`` flag
            is the spike convention (``u >= ϑ`` when set, else ``u > ϑ``).
        mechanism: ``"zero"`` or ``"subtract"``.
        reset_grad_scale: ``k`` of :mod:`spikegrad.rules.reset_term` (0 detaches the reset).
        tau_s: the trace time constant (the output is the trace ``a``), or ``None`` (spikes).
    """

    beta: float
    threshold: float
    surrogate: Surrogate
    mechanism: str = "zero"
    reset_grad_scale: float = 1.0
    tau_s: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "beta", check_number("beta", self.beta))
        set_(self, "threshold", check_number("threshold", self.threshold))
        set_(self, "reset_grad_scale", check_number("reset_grad_scale", self.reset_grad_scale))
        check_choice("mechanism", self.mechanism, MECHANISMS)
        if self.tau_s is not None:
            set_(self, "tau_s", check_number("tau_s", self.tau_s, low=1.0))
        if type(self.surrogate) not in (Sigmoid, ATan) or not self.surrogate.spiking:
            raise ValueError(
                f"the Triton kernels know spikegrad's Sigmoid and ATan surrogates "
                f"(spiking=True), got {self.surrogate!r}; use the torch reference for others"
            )

    @property
    def surrogate_args(self) -> tuple[int, float, float]:
        """``(kind, a, b)``: Sigmoid ``(T, 1/T)``; ATan ``(α/2, πα/2)`` (float32 values)."""
        s = self.surrogate
        if isinstance(s, Sigmoid):
            return SIGMOID, f32(s.temperature), f32_div(1.0, s.temperature)
        return ATAN, f32(s.alpha / 2), f32(math.pi / 2 * s.alpha)


def reset_term_spec(beta: float, threshold: float, surrogate: Surrogate, mechanism: str,
                    reset_grad_scale: float, tau_s: float | None) -> ResetTermSpec:
    """A :class:`ResetTermSpec` (the signature of the CuPy ``kernels.reset_term_spec``)."""
    return ResetTermSpec(beta, threshold, surrogate, mechanism, reset_grad_scale, tau_s)


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``).

    Decided when the kernels are defined (the first call of an entry point imports them): the
    variable must be set before that.
    """
    kernels = sys.modules.get("spikegrad.rules.triton_kernels.kernels_lif")
    if kernels is not None:
        return bool(kernels.INTERPRETED)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_problem() -> str | None:
    """Why Triton cannot be imported (``None`` if it can)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton; it comes with CUDA builds of torch)"
    try:
        importlib.import_module("triton.language")
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised here
        return f"triton cannot be imported ({type(exc).__name__}: {exc})"
    return None


def available(device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> str | None:
    """``None`` if the Triton kernels can run on ``device`` with storage ``dtype``, else why.

    Args:
        device: ``"cuda"`` (default when ``None``), ``"cuda:1"``, ``"cpu"`` ... CPU tensors run
            only in Triton's interpreter (``TRITON_INTERPRET=1`` set before the kernels are
            first imported; slow, for tests).
        dtype: the tensors' dtype (``None``: not checked); float32, float16 or bfloat16.

    Returns:
        ``None`` when usable, else a sentence saying why not.
    """
    problem = triton_problem()
    return problem if problem is not None else device_problem(device, dtype)


def device_problem(device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> str | None:
    """:func:`available` without the Triton import check (for callers that imported it)."""
    if dtype is not None and dtype not in DTYPES:
        return f"dtype {dtype} has no Triton kernel (float32, float16, bfloat16)"
    dev = torch.device("cuda" if device is None else device)
    if dev.type == "cpu":
        if not interpreting():
            return ("CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 before "
                    "the kernels are first imported (tests only: it is slow)")
        return None
    if dev.type != "cuda":
        return f"the Triton kernels run on CUDA tensors (or CPU ones when interpreting), not {dev}"
    if not torch.cuda.is_available():
        return ("no CUDA device (torch.cuda.is_available() is False): the Triton kernels run on "
                "CUDA tensors, or on CPU ones under TRITON_INTERPRET=1")
    return None
