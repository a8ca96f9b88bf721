r"""Multi-strength (integer-valued) spikes: integrate-and-fire emitting ``floor(h / τ)``.

Chen, Ma, Xie, Guo, Li & Wang, "Fast and Efficient Deep Sparse Multi-Strength Spiking Neural
Networks with Dynamic Pruning", IJCNN 2018 (quoted in seed 002). The seed's reset index
``θ_{t-1}`` would emit the same charge twice; the same-step index is used:

.. math::

    h[t] = \beta\, v[t-1] + z[t], \qquad
    \theta[t] = \min\!\Bigl(\Bigl\lfloor \frac{\max(h[t], 0)}{\tau} \Bigr\rfloor,\; D\Bigr),
    \qquad v[t] = h[t] - \tau\,\theta[t]

(``β = 1`` is the paper's IF neuron; without a cap ``D`` the ``min`` is dropped). Consequences:
``0 <= v < τ`` after a step with ``0 <= h < τ (D + 1)``; negative potentials are kept; charge is
conserved, ``Σ_t τ θ[t] + v[T-1] = Σ_t z[t]`` for ``β = 1``.

Direct training uses a rectangular straight-through estimator for the floor,

.. math::

    \frac{\partial \theta}{\partial h} = \frac{1}{\tau}\,
    \mathbf{1}\bigl[0 \le h < \tau (D + 1)\bigr] \quad (\mathbf{1}[h \ge 0] \text{ without a
    cap}),

and by default the reset detaches ``θ`` (so ``∂v/∂h = 1``); with ``detach_reset=False`` the
gradient also flows through ``-τθ``.
"""

from __future__ import annotations

from types import ModuleType

from spikegrad.rules import first_use
from spikegrad.rules.multistrength import cupy
from spikegrad.rules.multistrength.reference import (
    MultiStrength,
    forward,
    operator_step,
    reference_step,
    step,
    strength,
)

__all__ = ["MultiStrength", "strength", "step", "operator_step", "reference_step", "forward"]


def _triton() -> ModuleType:
    """The hand-written Triton kernels (:mod:`spikegrad.rules.multistrength.triton`), imported
    on first use: importing them imports Triton (seconds), which the CPU paths never need."""
    from spikegrad.rules.multistrength import triton

    return triton


first_use.register("triton", MultiStrength, first_use.sequence_probe(
    lambda z, v0, _a0, cfg: _triton().sequence(z, v0, cfg)))
first_use.register("cupy", "multistrength", first_use.sequence_probe(
    lambda z, v0, _a0, spec: cupy.sequence(z, v0, spec)))
