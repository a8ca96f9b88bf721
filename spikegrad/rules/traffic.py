"""Memory traffic of the fused kernels: the bytes each rule's kernel loads and stores.

One model for the hand-written Triton kernels (each rule folder's ``triton.py``, e.g.
:mod:`spikegrad.rules.reset_term.triton`) and CuPy kernels (its ``cupy.py``), which touch the
same elements: per rule, direction (``"forward"`` / ``"backward"``), storage dtype and flags,
the bytes of

* ``loads`` / ``stores``: every load and store the kernel issues (what a counter of the
  kernel's memory instructions sees; NA's neighbor replay re-reads ``T (T - 1) / 2`` steps per
  neuron, mostly from cache);
* ``unique``: each distinct element read counted once and each distinct element written
  counted once (a scratch tensor written and read back counts twice): the traffic to memory
  when re-reads hit the cache, the one to compare with a memory bandwidth.

For the LIF-type rules every element is touched once, so ``unique == loads + stores``. The CuPy
NA backward reads ``A[q-1]`` again instead of carrying it (``T - 1`` more loads per neuron):
same ``unique``, slightly more ``loads``.

Not counted: what torch does around a launch (``grad_a0``'s ``new_zeros`` fill, the
``.contiguous()`` copies of non-contiguous inputs, the broadcast of a ``None`` state to zeros).
``tests/rules/test_traffic.py`` checks this model against the kernels run in Triton's
interpreter with every load and store recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RULES", "Traffic", "kernel_traffic", "bytes_per_neuron_step"]

#: the rules with fused kernels (the speed mode's names)
RULES = ("reset-term", "na", "bpsa-bpta", "multi-strength")
F32 = 4  # bytes of the float32 saved state / scratch (float32 for every storage type)


@dataclass(frozen=True)
class Traffic:
    """Bytes of one kernel launch over ``[T, N]`` (see the module docstring)."""

    loads: int
    stores: int
    unique: int

    @property
    def issued(self) -> int:
        return self.loads + self.stores

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.loads + other.loads, self.stores + other.stores,
                       self.unique + other.unique)


class _Count:
    """Accumulates terms: ``load(n_elements, itemsize, distinct=n)`` and ``store(...)``."""

    def __init__(self) -> None:
        self.loads = self.stores = self.unique = 0

    def load(self, n: int, size: int, distinct: int | None = None) -> None:
        self.loads += n * size
        self.unique += (n if distinct is None else distinct) * size

    def store(self, n: int, size: int) -> None:
        self.stores += n * size
        self.unique += n * size

    def done(self) -> Traffic:
        return Traffic(self.loads, self.stores, self.unique)


def kernel_traffic(rule: str, direction: str, T: int, N: int,
                   dtype: torch.dtype = torch.float32, *, trace: bool = False,
                   has_g_out: bool = True, has_g_state: bool = False) -> Traffic:
    """Bytes the fused kernel of ``rule`` moves for one launch over ``T`` steps, ``N`` neurons.

    Args:
        rule: ``"reset-term"``, ``"na"``, ``"bpsa-bpta"`` or ``"multi-strength"``.
        direction: ``"forward"`` or ``"backward"``.
        dtype: the storage type of inputs and outputs (float32, float16, bfloat16); the saved
            pre-reset potential, NA's ``u``, ``u0`` and scratch are float32 whatever it is.
        trace: the output is the PSP trace (reset-term and NA: ``tau_s`` set).
        has_g_out: the backward receives a gradient for the first output (spikes / trace /
            ``o`` / ``θ``; NA: ``g``).
        has_g_state: the backward receives one for the state sequence (``v``; NA: ``u``).
    """
    if rule not in RULES:
        raise ValueError(f"no fused kernel for rule {rule!r}; choose from {', '.join(RULES)}")
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    s = torch.empty((), dtype=dtype).element_size()
    TN, c = T * N, _Count()
    fwd = direction == "forward"
    if rule == "reset-term":
        if fwd:  # reset_term_fwd
            c.load(N, s)  # v0
            c.load(N, s)  # a0 (loaded with or without the trace)
            c.load(TN, s)  # c[t]
            c.store(TN, F32)  # u[t], saved for the backward
            c.store(TN, s)  # v[t]
            c.store(TN, s)  # out[t] (spike or trace)
        else:  # reset_term_bwd
            if has_g_out:
                c.load(TN, s)  # g_out[t]
            if has_g_state:
                c.load(TN, s)  # g_v[t]
            c.load(TN, F32)  # u[t]
            c.store(TN, s)  # grad_c[t]
            c.store(N, s)  # grad_v0
            if trace:
                c.store(N, s)  # grad_a0
    elif rule == "bpsa-bpta":
        if fwd:  # bpsta_fwd
            c.load(N, s)  # v0
            c.load(TN, s)  # x[t]
            c.store(TN, F32)  # h[t], saved
            c.store(TN, s)  # o[t]
            c.store(TN, s)  # v[t]
        else:  # bpsta_bwd
            if has_g_state:
                c.load(TN, s)  # g_v[t]
            if has_g_out:
                c.load(TN, s)  # g_o[t]
            c.load(TN, F32)  # h[t]
            c.load(TN, s)  # x[t] (the ReLU's mask, saved input)
            c.store(TN, s)  # grad_x[t]
            c.store(N, s)  # grad_v0
    elif rule == "multi-strength":
        if fwd:  # multistrength_fwd
            c.load(N, s)  # v0
            c.load(TN, s)  # z[t]
            c.store(TN, F32)  # h[t], saved
            c.store(TN, s)  # θ[t]
            c.store(TN, s)  # v[t]
        else:  # multistrength_bwd
            if has_g_state:
                c.load(TN, s)  # g_v[t]
            c.load(TN, F32)  # h[t]
            if has_g_out:
                c.load(TN, s)  # g_θ[t]
            c.store(TN, s)  # grad_z[t]
            c.store(N, s)  # grad_v0
    elif fwd:  # na_fwd
        c.load(N, F32)  # u0
        c.load(N, s)  # a0
        c.load(TN, s)  # c[t]
        c.store(TN, F32)  # u[t]
        c.store(TN, s)  # out[t]
    else:  # na_bwd: saves only its inputs, recomputes the trajectory into scratch
        pairs = N * T * (T - 1) // 2  # the replay's (neighbor q, step t > q) pairs
        c.load(N, F32)  # 1. u0
        c.load(N, s)  # 1. a0
        c.load(TN + pairs, s, distinct=TN)  # 1. c[t], and 3. c[t] again in every replay
        c.store(TN, F32)  # 1. U[t] (scratch)
        c.store(TN, F32)  # 1. A[t] (scratch)
        if has_g_out:
            c.load(TN, s)  # 2. g[t]
        c.store(TN, F32)  # 2. E[t] (scratch)
        c.load(TN, F32)  # 3. U[q]
        c.load(TN + pairs, F32, distinct=TN)  # 3. A[q], and A[t] in every replay
        c.load(TN + pairs, F32, distinct=TN)  # 3. E[q], and E[t] in every replay
        if has_g_state:
            c.load(TN, F32)  # 4. g_u[q]
        c.store(TN, s)  # 4. δ[q]
    return c.done()


def bytes_per_neuron_step(rule: str, T: int, N: int, dtype: torch.dtype = torch.float32,
                          **flags: bool) -> dict[str, float]:
    """Distinct bytes (``unique``) per neuron-step (``T N`` of them, batch included in ``N``)
    of the forward launch, the backward launch and both, and ``issued`` for both."""
    f = kernel_traffic(rule, "forward", T, N, dtype, **flags)
    b = kernel_traffic(rule, "backward", T, N, dtype, **flags)
    n = T * N
    return {"forward": f.unique / n, "backward": b.unique / n, "total": (f + b).unique / n,
            "issued": (f + b).issued / n}
