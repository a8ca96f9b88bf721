r"""Surrogate gradients for the Heaviside spike function.

The forward pass is the Heaviside step of the shifted potential ``x = u - θ``; the backward pass
replaces its derivative (a Dirac delta) by the derivative of a smooth primitive:

.. math::

    \text{Sigmoid}(T):\quad H(x) \approx \sigma(x / T), \qquad
    \frac{\partial H}{\partial x} \approx \frac{1}{T}\,\sigma(x/T)\,\bigl(1 - \sigma(x/T)\bigr)

    \text{ATan}(\alpha):\quad H(x) \approx \frac{1}{\pi}\arctan\!\Bigl(\frac{\pi \alpha x}{2}\Bigr)
    + \frac12, \qquad
    \frac{\partial H}{\partial x} \approx \frac{\alpha / 2}{1 + (\pi \alpha x / 2)^2}

``Sigmoid(temperature=T)`` is the surrogate of Yang (arXiv:2011.09964, eq. 10), identical to
snntorch's ``surrogate.sigmoid(slope=1/T)`` and spikingjelly's ``surrogate.Sigmoid(alpha=1/T)``.
``ATan(alpha)`` is snntorch's default ``surrogate.atan(alpha=2)`` (the seed-002 tutorial) and
spikingjelly's ``surrogate.ATan``.

Each surrogate is a frozen, picklable dataclass. Calling it on ``x`` returns spikes (or, with
``spiking=False``, the smooth primitive, as the hosts' surrogates do), so an instance can be
passed as snntorch's ``spike_grad=`` and as spikingjelly's ``surrogate_function=``. The value at
``x == 0`` is a separate axis: ``inclusive=False`` (default) spikes only for ``x > 0`` (snntorch,
the NA authors); ``inclusive=True`` spikes for ``x >= 0`` (spikingjelly).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from spikegrad._checks import check_float_tensor, check_number
from spikegrad.rules.cupy_kernels.ctext import c_float

__all__ = ["Surrogate", "Sigmoid", "ATan", "heaviside"]


class _HeavisideFn(torch.autograd.Function):
    """Heaviside forward, ``surrogate.derivative`` backward (shared by every surrogate)."""

    @staticmethod
    def forward(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:  # type: ignore[override]
        fired = x >= 0 if surrogate.inclusive else x > 0
        return fired.to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, surrogate = inputs
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


@dataclass(frozen=True)
class Surrogate:
    """Base class: a Heaviside forward with a smooth backward.

    Subclasses define ``primitive`` (the smooth function whose derivative is the surrogate)
    and ``derivative``.

    Args:
        spiking: ``True`` (default) returns spikes with the surrogate backward; ``False``
            returns the smooth primitive itself (plain autograd), as the hosts' surrogates do.
        inclusive: whether ``x == 0`` spikes (``x >= 0``, spikingjelly's convention) or not
            (``x > 0``, snntorch's; the default).
    """

    spiking: bool = dataclasses.field(default=True, kw_only=True)
    inclusive: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("spiking", "inclusive"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def set_spiking_mode(self, spiking: bool) -> None:
        """spikingjelly's surrogate interface: switch between spikes (``True``) and the smooth
        primitive (``False``), as ``plot_surrogate_function`` and the host's tests do.

        ``spiking`` is the one field that can change after construction (the host's interface
        mutates it); equality and hashing follow the current value, so a cache keyed by a
        surrogate never returns an entry made for the other mode.
        """
        if not isinstance(spiking, bool):
            raise TypeError(f"spiking must be a bool, got {spiking!r}")
        object.__setattr__(self, "spiking", spiking)

    def primitive(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def c_derivative(self, x: str) -> str:
        """``derivative`` as a C fp32 expression in the variable ``x`` (fused kernels).

        The one place a surrogate's formula is written for the CUDA kernels of
        :mod:`spikegrad.rules.cupy_kernels`; constants are float32 literals.

        Raises:
            NotImplementedError: this surrogate has no C expression.
        """
        raise NotImplementedError(f"surrogate {type(self).__name__} has no CUDA expression")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes ``H(x)`` with the surrogate backward (or the primitive if not spiking).

        Shape:
            x: any shape; output: the same shape and dtype.
        """
        check_float_tensor("x", x)
        # Eager calls only: frame inspection cannot be traced (a graph break at every call),
        # so while torch.compile traces the check is skipped; any eager call still warns.
        if not torch.compiler.is_compiling() and _called_by_host_loop():
            _warn_host_fallback()
        if not self.spiking:
            return self.primitive(x)
        return _HeavisideFn.apply(x, self)


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Logistic surrogate of temperature ``T`` (Yang 2020, eq. 9-10).

    Args:
        temperature: ``T > 0``; the derivative peaks at ``1 / (4 T)``. 0.3 is the reset-term
            paper's value (snntorch ``sigmoid(slope=1/T)``, spikingjelly ``Sigmoid(alpha=1/T)``).
    """

    temperature: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(
            self, "temperature", check_number("temperature", self.temperature, positive=True)
        )

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x / self.temperature)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        sig = torch.sigmoid(x / self.temperature)
        return sig * (1.0 - sig) / self.temperature

    def c_derivative(self, x: str) -> str:
        t = c_float(self.temperature)
        sig = f"(1.0f / (1.0f + expf(-(({x}) / {t}))))"
        return f"({sig} * (1.0f - {sig}) / {t})"


@dataclass(frozen=True)
class ATan(Surrogate):
    """Arctangent surrogate (snntorch's default ``atan(alpha=2)``; spikingjelly's ``ATan``).

    Args:
        alpha: ``α > 0``; the derivative peaks at ``α / 2``.
    """

    alpha: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "alpha", check_number("alpha", self.alpha, positive=True))

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)

    def c_derivative(self, x: str) -> str:
        k = f"({c_float(math.pi / 2 * self.alpha)} * ({x}))"
        return f"({c_float(self.alpha / 2)} / (1.0f + {k} * {k}))"


def _called_by_host_loop() -> bool:
    """Whether the caller of :meth:`Surrogate.__call__` is spikingjelly 2.x's reference loop."""
    return sys._getframe(2).f_globals.get("__name__", "").startswith("spikingjelly._ops")


@functools.cache
def _warn_host_fallback() -> None:
    """Once per process: spikingjelly 2.x called us from its slow reference loop."""
    warnings.warn(
        "spikingjelly 2.x fuses only its own surrogates: a neuron of spikingjelly's given a "
        "spikegrad surrogate runs its per-step reference loop (slower on GPU; same values). "
        "spikegrad's surrogates fire at x > 0 unless inclusive=True (spikingjelly: x >= 0). "
        "spikegrad's own spikingjelly nodes are not affected.",
        RuntimeWarning, stacklevel=3,
    )


def heaviside(x: torch.Tensor, *, inclusive: bool = False) -> torch.Tensor:
    """The plain (non-differentiable) spike function: ``x > 0`` (or ``x >= 0``) as ``x.dtype``."""
    return (x >= 0 if inclusive else x > 0).to(x.dtype)
