r"""Reset-term BPTT: the gradient path through the reset that detached implementations drop.

Yang, "Temporal Surrogate Back-propagation for Spiking Neural Networks", arXiv:2011.09964 (2020).

Forward (leaky integrate-and-fire, reset to zero or by subtraction, pre-reset potential ``u``):

.. math::

    u[t] = \beta\, v[t-1] + c[t], \qquad s[t] = H(u[t] - \vartheta), \qquad
    v[t] = \begin{cases} u[t]\,(1 - s[t]) & \text{zero} \\ u[t] - \vartheta s[t] &
    \text{subtract} \end{cases}

with :math:`\beta = 1 - 1/\tau_m` and :math:`H` the strict step (``u > ϑ``). Backward: the spike
uses a surrogate :math:`H'` (the paper's is :class:`~spikegrad.rules.surrogate.Sigmoid` with
temperature 0.3), and the temporal Jacobian keeps the reset term scaled by ``k`` =
``reset_grad_scale``:

.. math::

    \frac{\partial u[t+1]}{\partial u[t]} = \beta\,\bigl[(1 - s[t]) - k\,u[t]\,H'(u[t]-\vartheta)
    \bigr] \;\text{(zero)}, \qquad
    \beta\,\bigl[1 - k\,\vartheta\,H'(u[t]-\vartheta)\bigr] \;\text{(subtract)}.

``k = 1`` is the paper's rule (plain autograd through an undetached reset); ``k = 0`` is what
detached implementations (snntorch's default ``Leaky``) compute; ``k = T`` reproduces the
author's code, which drops the ``1/T`` factor on the reset path.

Optional synaptic trace and the van Rossum loss (paper eq. 2 and 6), with the trace kernel
:math:`\epsilon`:

.. math::

    a[t] = \Bigl(1 - \frac{1}{\tau_s}\Bigr) a[t-1] + \frac{s[t]}{\tau_s}, \qquad
    L = \sum_t \sum_n \tfrac12 \bigl((\epsilon * d)[t] - (\epsilon * s)[t]\bigr)^2 .

All functions are time-major (``[T, B, *]``) or single-step (``[B, *]``), pure torch, CPU/CUDA.
"""

from __future__ import annotations

from types import ModuleType

from spikegrad.rules import first_use
from spikegrad.rules.reset_term import cupy
from spikegrad.rules.reset_term.reference import (
    MECHANISMS,
    SequenceFunction,
    forward,
    fused_applicable,
    jacobian,
    reset,
    spikes_from_trace,
    step,
    step_v,
    trace,
    trace_step,
    van_rossum_loss,
)
from spikegrad.rules.reset_term.spec import ResetTermSpec

__all__ = ["MECHANISMS", "reset", "step", "step_v", "forward", "SequenceFunction",
           "spikes_from_trace", "fused_applicable", "trace_step", "trace", "van_rossum_loss",
           "jacobian"]


def _triton() -> ModuleType:
    """The hand-written Triton kernels (:mod:`spikegrad.rules.reset_term.triton`), imported
    on first use: importing them imports Triton (seconds), which the CPU paths never need."""
    from spikegrad.rules.reset_term import triton

    return triton


first_use.register("triton", ResetTermSpec, first_use.sequence_probe(
    lambda c, v0, a0, spec: _triton().sequence(c, v0, a0, spec)))
first_use.register("cupy", "reset_term", first_use.sequence_probe(
    cupy.sequence))
