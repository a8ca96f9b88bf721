r"""BPSA / BPTA: gradient only at spike times plus a residual across spikes (HTDGLIF node).

Shen, Zhao & Zeng, "Backpropagation with biologically plausible spatiotemporal adjustment for
training deep spiking neural networks", Patterns 3(6):100522 (2022); BrainCog's
``HTDGLIFNode`` (Zeng et al., arXiv:2207.08533).

**Paper mode** (binary spikes; decay :math:`\lambda = 0.9`, threshold :math:`\theta = 0.5`,
residual :math:`\alpha = 0.2`), input rectified first:

.. math::

    h[t] = \lambda\, v[t-1] + \mathrm{relu}(x[t]), \qquad o[t] = H(h[t] - \theta)
    \;(\text{spike iff } h \ge \theta), \qquad v[t] = h[t]\,(1 - o[t]),

    \text{BPSA:}\; \frac{\partial o}{\partial h} = \frac{o}{h}, \qquad
    \text{BPTA:}\; \frac{\partial v}{\partial h} = (1 - o) + \alpha\,\frac{o}{h}.

Non-spiking neurons pass no gradient through ``o``; ``α`` never changes the forward pass.

**BrainCog mode** (graded output, no leak, step ``dt``):

.. math::

    h[t] = v[t-1] + dt\,\mathrm{relu}(x[t]), \qquad o[t] = h[t]\,H(h[t]-\theta), \qquad
    v[t] = dt\,\bigl[h[t](1 - H(h[t]-\theta)) + \alpha\,(o[t] - \mathrm{sg}(o[t]))\bigr]

so :math:`\partial o/\partial h = H(h-\theta)` and
:math:`\partial v/\partial h = dt\,[(1-H) + \alpha H]` (``sg`` = stop-gradient).

Reference values (RULES.md §4), paper, single step: ``x = [0.2, 0.5, 0.8, 1.6, 2.5]`` gives
``o = [0, 1, 1, 1, 1]``, ``∂o/∂x = [0, 2, 1.25, 0.625, 0.4]``,
``∂(λv)/∂x = [0.9, 0.36, 0.225, 0.1125, 0.072]``.
"""

from __future__ import annotations

from types import ModuleType

from spikegrad.rules import first_use
from spikegrad.rules.bpsta import cupy
from spikegrad.rules.bpsta.reference import (
    HTDGLIF,
    MODES,
    forward,
    integrate,
    operator_step,
    reference_step,
    reference_step_v,
    reset,
    spike,
    step,
    step_v,
)

__all__ = ["MODES", "HTDGLIF", "spike", "reset", "integrate", "step", "step_v", "operator_step",
           "reference_step", "reference_step_v", "forward"]


def _triton() -> ModuleType:
    """The hand-written Triton kernels (:mod:`spikegrad.rules.bpsta.triton`), imported
    on first use: importing them imports Triton (seconds), which the CPU paths never need."""
    from spikegrad.rules.bpsta import triton

    return triton


first_use.register("triton", HTDGLIF, first_use.sequence_probe(
    lambda x, v0, _a0, cfg: _triton().sequence(x, v0, cfg)))
first_use.register("cupy", "bpsta", first_use.sequence_probe(
    lambda x, v0, _a0, spec: cupy.sequence(x, v0, spec)))
