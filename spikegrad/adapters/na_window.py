"""NA in a per-step host loop: one autograd node per step, one shared window per sequence.

A host that calls its neuron once per time step (snntorch's ``spk, mem = lif(cur, mem)``,
spikingjelly's ``step_mode="s"``) still gets the NA estimator of the whole window
(:mod:`spikegrad.rules.na`): every step records its input, potential, spike and trace in a
:class:`Window`, and returns ``mem`` as an autograd output that the next step takes as input.
Chained that way, autograd runs the steps' backward passes from the last to the first, and NA
is causal (``δ[k]`` needs ``g[t >= k]`` only), so step ``k``'s backward already has every later
error it needs and computes ``δ[k]`` by replaying neighbor ``k`` over the rest of the window.
No gradient flows through ``mem`` itself: a gradient that the user's loss puts on ``mem = u[k]``
is added to ``δ[k]`` unchanged.

The window follows values, not tensor identity. The ``mem`` a step takes in continues the
window whenever it is attached to autograd (``mem.requires_grad``): ``mem.clone()``,
``mem * 1.0``, ``.to`` the same dtype or ``.contiguous()`` give exactly the gradient of the
untouched loop. A ``mem`` that is not attached (``detach()``, made under ``no_grad``) starts a
new window (truncated BPTT). Where the values a step takes in differ from what the previous
step returned (the user changed ``mem``: a mask, noise, a clamp), the window is cut *per
neuron* at that step: every neighbor's replay takes the state that was passed in there, just
as the forward pass did, so a flip before the change no longer reaches the potentials after it
(only the decaying trace gap does). The comparison runs lazily, once per window, when the
backward pass first stacks the record: no device synchronisation per step.

The window holds only detached tensors, so nothing it stores points back into the graph: it
is freed with the graph (after the backward pass) or replaced at the next reset, and memory
stays flat over any number of training steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from spikegrad.rules import na

__all__ = ["COMPILE_NOTE", "Window", "na_step", "eager"]

#: why a per-step NA call is a graph break under torch.compile
COMPILE_NOTE = (
    "NA's per-step backward replays each neighbor over the rest of the window, which later "
    "steps record: the window is a Python record filled during the forward, not a tensor an "
    "operator can take, so each per-step NA call runs eagerly (one graph break per step; the "
    "whole-window call, NALeaky.sequence or step_mode='m', compiles without breaks)"
)


_EAGER: dict[Callable[..., Any], Callable[..., Any]] = {}


def eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a per-step NA method, unbound) run eagerly while ``torch.compile`` traces: one
    graph break per call (:data:`COMPILE_NOTE`). Wrapped once per function, by the first
    compiled call (wrapping needs the rest of torch._dynamo, which torch.compile imports: not
    at import time); that first trace also breaks where the wrapper is made."""
    wrapped = _EAGER.get(fn)
    if wrapped is None:
        wrapped = _EAGER[fn] = torch.compiler.disable(fn, reason=COMPILE_NOTE)
    return wrapped


def _shares(x: torch.Tensor, y: torch.Tensor) -> bool:
    """``x`` is ``y``'s memory seen the same way (so the same values, barring in-place edits)."""
    return (x.data_ptr() == y.data_ptr() and x.dtype == y.dtype and x.shape == y.shape
            and x.stride() == y.stride())


class Window:
    """The per-step record of one NA window (everything detached)."""

    def __init__(self, cfg: na.NA, a_init: torch.Tensor) -> None:
        self.cfg = cfg
        self.a_init = a_init.detach()
        self._steps: list[tuple[torch.Tensor, ...]] = []  # (c, s, u, a) per step
        self._inputs: list[torch.Tensor | None] = []  # the state passed in, if not u[t-1] itself
        self._stacked: tuple[torch.Tensor, ...] | None = None
        self._changed: torch.Tensor | None = None
        self._version = 0  # of the last recorded u (an in-place edit of it corrupts the record)
        self._errors: torch.Tensor | None = None
        self._last_backward: int | None = None  # the step whose backward ran last

    def __len__(self) -> int:
        return len(self._steps)

    def last_trace(self) -> torch.Tensor:
        """The trace after the last recorded step (``a_init`` before the first)."""
        return self._steps[-1][3] if self._steps else self.a_init

    def record(self, c: torch.Tensor, s: torch.Tensor, u: torch.Tensor, a: torch.Tensor,
               u_in: torch.Tensor) -> int:
        """Store one step (``u_in``: the potential it took in); returns its index."""
        if torch.compiler.is_compiling():
            # a Python side effect inside the step's autograd node: torch.compile runs it
            # eagerly (a graph break around the step) instead of tracing the record
            from torch import _dynamo  # already imported while compiling

            return _dynamo.disable(self._record)(c, s, u, a, u_in)
        return self._record(c, s, u, a, u_in)

    def _record(self, c: torch.Tensor, s: torch.Tensor, u: torch.Tensor, a: torch.Tensor,
                u_in: torch.Tensor) -> int:
        prev = self._steps[-1][2] if self._steps else None
        if prev is not None and prev._version != self._version:
            raise RuntimeError(
                "the mem an NA neuron returned was modified in place before the next step "
                "(e.g. mem.mul_(mask)); its recorded window is no longer the forward pass. "
                "Use an out-of-place operation instead (mem = mem * mask)"
            )
        self._inputs.append(None if prev is None or _shares(u_in, prev) else u_in.detach())
        self._steps.append((c.detach(), s.detach(), u.detach(), a.detach()))
        self._version = u._version
        self._stacked = None
        return len(self._steps) - 1

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        if self._stacked is None or self._stacked[0].shape[0] != len(self._steps):
            self._stacked = tuple(torch.stack(x) for x in zip(*self._steps, strict=True))
            self._changed = self._compare(self._stacked[2])
            old = self._errors
            self._errors = torch.zeros_like(self._stacked[0])
            if old is not None:  # steps added after an earlier backward keep their errors
                self._errors[: old.shape[0]] = old
        return self._stacked

    def _compare(self, u: torch.Tensor) -> torch.Tensor | None:
        """``changed[t]``: where the state step ``t`` took in differs from ``u[t-1]``."""
        if all(x is None for x in self._inputs):
            return None
        changed = torch.zeros(u.shape, dtype=torch.bool, device=u.device)
        for t, u_in in enumerate(self._inputs):
            if u_in is not None:
                changed[t] = u_in != u[t - 1]  # NaN != NaN: a NaN state counts as changed
        return changed

    def delta(self, k: int, g_k: torch.Tensor) -> torch.Tensor:
        """``δ[k]`` given ``g[k]`` (later steps' backward passes have already run)."""
        c, s, u, a = self._tensors()
        e = self._errors
        if self._last_backward != k + 1:
            # A new backward pass (e.g. a second one with retain_graph) that starts at step k:
            # no later step is reached by its loss, so the errors stored there by an earlier
            # pass must not be reused. Within one pass, step k always runs right after k + 1.
            e[k + 1:] = 0
        self._last_backward = None if k == 0 else k
        e_next = e[k + 1] if k + 1 < len(self) else None
        e[k] = na.error_step(g_k, e_next, self.cfg)
        a_before = a[k - 1] if k > 0 else self.a_init
        changed = None if self._changed is None else self._changed[k:]
        return na.deltas(c[k:], u[k:], s[k:], a[k:], e[k:], self.cfg, a_init=a_before,
                         neighbors=1, changed=changed)[0]


class _NAStep(torch.autograd.Function):
    """One step: ``(c[t], u[t-1]) -> (out[t], u[t])``, recorded in ``window``."""

    @staticmethod
    def forward(c: torch.Tensor, u_prev: torch.Tensor, a_prev: torch.Tensor,  # type: ignore[override]
                window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        s, u, a = na.step(c, u_prev, a_prev, window.cfg)
        window.record(c, s, u, a, u_prev)
        return (a if window.cfg.tau_s is not None else s), u

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        window = inputs[3]
        ctx.window, ctx.index = window, len(window) - 1
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor | None, g_u: torch.Tensor | None):  # type: ignore[override]
        window = ctx.window
        if g_out is None:
            g_out = torch.zeros_like(window.last_trace())
        delta = window.delta(ctx.index, g_out)
        return (delta if g_u is None else delta + g_u), None, None, None


def na_step(
    c: torch.Tensor, u_prev: torch.Tensor, a_prev: torch.Tensor, cfg: na.NA,
    window: Window | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One NA step, recorded in ``window`` for the backward pass (``None``: inference only).

    Returns:
        ``(out[t], u[t], a[t])``: the output (the trace, or the spikes if ``tau_s`` is None),
        the pre-reset potential, and the trace state for the next step (never differentiable).
    """
    if window is None:
        s, u, a = na.step(c, u_prev, a_prev, cfg)
        return (a if cfg.tau_s is not None else s), u, a
    out, u = _NAStep.apply(c, u_prev, a_prev, window)
    return out, u, window.last_trace()
