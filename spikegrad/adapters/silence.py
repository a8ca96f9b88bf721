"""Telling a user that a rule's own limits stopped a layer from learning.

Some rules pass no gradient through part of a layer: BPSA only through spikes (``∂o/∂h`` exists
only at spikes), multi-strength's straight-through estimator only where the potential is in its
window (``0 <= h``, below ``τ (D + 1)`` with a cap ``D``). A layer that never fires in a training
sequence stops everything below it from learning, and a neuron outside that window for every
sample and step gets no gradient, so its weights stay where they are and nothing brings it back:
an output neuron of that kind is a class the network never predicts. No error says so.
:class:`SilenceWatch` notices it and warns once, naming the fix:

* (BPSA) the whole layer emitted no spike during one training sequence;
* at least :data:`DEAD_FRACTION` of the layer's neurons got no gradient for any sample during
  :data:`DEAD_WINDOW` consecutive training sequences, in two windows in a row;
* in a layer of at most :data:`NARROW` neurons (an output layer) any neuron (BPSA: it never
  comes back) or at least :data:`MULTISTRENGTH_SILENT` of them (multi-strength: a silent neuron
  whose potential stays in the window still learns, and one or two silent classes of ten are
  seen early in networks that learn) emitted no spike for any sample during such a window,
  twice in a row: their classes are never predicted.

A neuron counts per feature (channel and position of a convolution), over every sample of the
window, so a neuron silent for one batch but active in another is not counted.

No device synchronisation on the per-step path, and nothing while ``torch.compile`` traces:
during a sequence the outputs (or the gradient window) are summed per element on the device; at
the next reset (the end of the training step in both hosts' loops) two reductions of that sum
are copied to the host without blocking, and they are read at a later reset, once the copy has
completed (on the CPU at once). So a warning comes one or two training steps late, never with a
stall.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["SilenceWatch", "multistrength_window", "BPSA_FIX", "BPSA_DEAD_FIX",
           "MULTISTRENGTH_FIX", "BPSA_REASON", "MULTISTRENGTH_REASON", "DEAD_WINDOW",
           "DEAD_FRACTION", "NARROW", "MULTISTRENGTH_SILENT"]

#: training sequences in one window of the dead-neuron check
DEAD_WINDOW = 20
#: fraction of a layer's neurons without gradient through a whole window that warns (a hidden
#: layer of a CSNN that still learned within 2 points in one epoch had 63-84 % of them)
DEAD_FRACTION = 0.9
#: a layer of at most this many neurons per sample (an output layer) warns for silent neurons
NARROW = 64
#: for multi-strength, the fraction of a narrow layer's neurons silent through a window that warns
MULTISTRENGTH_SILENT = 0.3

BPSA_FIX = ("Start training with the paper's ReLU warm-up, e.g. "
            "`with spikegrad.recipes.warm_up(net): ...` around the first steps (README: 'Make "
            "each rule train'), or scale the input or the threshold so that the layer fires.")
BPSA_DEAD_FIX = (
    "What trains: the paper's recipe (README: 'Make each rule train'), a voting output layer "
    "`recipes.voting_layer(in_features, classes)` (10 neurons per class, so one silent neuron "
    "does not lose its class) with `recipes.voting_mse_loss` and "
    "`recipes.predict(out, votes=recipes.VOTES)`, plus the ReLU warm-up "
    "`with spikegrad.recipes.warm_up(net): ...` for the first ~5 % of the steps.")
BPSA_REASON = ("emitted no spike", "Its rule passes gradient only through spikes")
MULTISTRENGTH_FIX = (
    "What trains: binary spikes, `max_strength=1` (a rate in [0, 1], as a one-hot rate target "
    "such as an MSE to the label expects; the first steps' strengths above 1 are what push the "
    "potentials below 0), or the paper's rate cross-entropy `spikegrad.recipes.rate_ce_loss` "
    "(README: 'Make each rule train').")
MULTISTRENGTH_REASON = (
    "had its potential below 0 (outside the straight-through window) at every step",
    "Its straight-through gradient is zero outside that window")


def multistrength_window(theta: torch.Tensor, v: torch.Tensor, threshold: float,
                         max_strength: int | None) -> torch.Tensor:
    """Where multi-strength's straight-through estimator passes gradient, from a step's
    strength ``θ`` and remainder ``v = h - τθ``: ``0 <= h`` (and ``h < τ (D + 1)`` with a cap)."""
    theta, v = theta.detach(), v.detach()
    inside = (theta > 0) | (v >= 0)  # θ > 0 means h >= τ > 0; θ = 0 means h = v
    if max_strength is not None:  # above the window: θ = D and h - τD >= τ
        inside = inside & ~((theta >= max_strength) & (v >= threshold))
    return inside


class _HostRead:
    """One small device tensor at a time on its way to the host: started without blocking,
    read only once the copy has completed (never waited for)."""

    def __init__(self) -> None:
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None, object] | None = None

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def put(self, value: torch.Tensor, tag: object = None) -> None:
        if value.device.type == "cuda":
            host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            host.copy_(value, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, event, tag)
        else:
            self._pending = (value, None, tag)

    def take(self) -> tuple[list[float], object] | None:
        """The values and tag once the copy has completed (``None``: none, or in flight)."""
        if self._pending is None:
            return None
        value, event, tag = self._pending
        if event is not None and not event.query():
            return None  # still in flight: look again at the next reset
        self._pending = None
        return value.tolist(), tag  # a host tensor whose copy has completed: no sync

    def clear(self) -> None:
        self._pending = None


class SilenceWatch:
    """Warn once when a layer of a rule that passes gradient only through part of its neurons
    stops learning (see the module docstring).

    The neuron calls :meth:`observe` with each training step's outputs (BPSA: the spikes) or
    its gradient window (multi-strength: :func:`multistrength_window`), nonzero where the
    neuron passes gradient, and :meth:`boundary` at each reset.

    Args:
        owner: the neuron's class name, for the message.
        fix: what to do about a layer silent through a whole sequence; ``None``: no such check
            (a rule whose gradient does not need spikes).
        dead_fix: what to do about dead neurons (``None``: ``fix``).
        reason: ``(what a dead neuron did, why it does not learn)`` for the message.
        window, dead_fraction, narrow: the dead-neuron check (:data:`DEAD_WINDOW`,
            :data:`DEAD_FRACTION`, :data:`NARROW`).
        narrow_silent: the fraction of a narrow layer's neurons that must be silent through a
            window (0: any neuron; multi-strength: :data:`MULTISTRENGTH_SILENT`).
    """

    def __init__(self, owner: str, fix: str | None, dead_fix: str | None = None, *,
                 reason: tuple[str, str] = BPSA_REASON, window: int = DEAD_WINDOW,
                 dead_fraction: float = DEAD_FRACTION, narrow: int = NARROW,
                 narrow_silent: float = 0.0) -> None:
        self.owner, self.fix = owner, fix
        self.dead_fix = fix if dead_fix is None else dead_fix
        self.reason = reason
        self.window, self.dead_fraction, self.narrow = window, dead_fraction, narrow
        self.narrow_silent = narrow_silent
        self.warned = False
        self._strikes = 0  # consecutive windows over the limit
        self._reset_sums()

    def _reset_sums(self) -> None:
        self._acc: torch.Tensor | None = None  # this sequence, summed over time per element
        self._grad: torch.Tensor | None = None  # the same for the gradient window (or None)
        self._mixed = False  # shapes changed inside a sequence: only the total is meaningful
        self._alive: torch.Tensor | None = None  # per neuron: [spiked, passed gradient]
        self._seen = 0  # sequences in this window
        self._read = _HostRead()

    def __getstate__(self) -> dict:
        # sums in flight (device tensors, a CUDA event) belong to this process only
        state = self.__dict__.copy()
        state.update(_acc=None, _grad=None, _mixed=False, _alive=None, _seen=0,
                     _read=_HostRead())
        return state

    def observe(self, out: torch.Tensor, sequence: bool = False,
                gradient: torch.Tensor | None = None) -> None:
        """Add one step's outputs (``sequence=True``: a whole ``[T, ...]`` sequence at once);
        ``gradient``: where the rule passes gradient, if not where ``out`` is nonzero (BPSA).

        Call only while training with autograd on; a no-op while ``torch.compile`` traces (the
        watch never enters a graph) and once the watch has warned. Reads nothing on the host.
        """
        if self.warned or torch.compiler.is_compiling():
            return

        def per_element(x: torch.Tensor) -> torch.Tensor:
            x = x.detach()
            return x.sum(0, dtype=torch.float32) if sequence else x.to(torch.float32)

        s = per_element(out)
        g = None if gradient is None else per_element(gradient)
        if self._acc is None:
            self._acc, self._grad = s, g
        elif self._acc.shape == s.shape and not self._mixed:
            self._acc = self._acc + s
            if g is not None and self._grad is not None:
                self._grad = self._grad + g
        else:  # one instance serving two shapes in one sequence: keep the total only
            self._acc = (self._acc.sum() + s.sum()).reshape(1, 1)
            self._grad, self._mixed = None, True

    def boundary(self) -> None:
        """A sequence ended (the neuron was reset): check an earlier one, start the next (a
        no-op while ``torch.compile`` traces: the check reads values on the host)."""
        if torch.compiler.is_compiling():
            return
        self._check()
        acc, grad, mixed = self._acc, self._grad, self._mixed
        self._acc, self._grad, self._mixed = None, None, False
        if self.warned or acc is None:
            return

        def per_neuron(x: torch.Tensor) -> torch.Tensor:  # nonzero for some sample
            flat = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
            return (flat != 0).any(0)  # outputs and windows are >= 0

        total = acc.sum()
        if not mixed:
            fired = per_neuron(acc)
            fired = torch.stack((fired, fired if grad is None else per_neuron(grad)))
            if self._alive is None or self._alive.shape != fired.shape:
                self._alive, self._seen = fired, 1  # a new window (or a new layer shape)
            else:
                self._alive = self._alive | fired
                self._seen += 1
        if not self._read.busy:  # else a CUDA copy is in flight: this total goes unchecked
            if not mixed and self._seen >= self.window:
                dead = (~self._alive).sum(1, dtype=torch.float32)  # [no spike, no gradient]
                self._read.put(torch.cat((total.reshape(1), dead)), self._alive.shape[1])
                self._alive, self._seen = None, 0
            elif self.fix is not None:
                self._read.put(total.reshape(1), None)
        self._check()  # on the CPU the values are there already

    def _check(self) -> None:
        if self.warned:
            return
        got = self._read.take()
        if got is not None:
            self._judge(*got)

    def _judge(self, values: list[float], n: object) -> None:
        if self.fix is not None and values[0] == 0.0:
            self._warn("this layer emitted no spike during a whole training sequence; its "
                       "rule passes gradient only through spikes, so the layers below it do "
                       f"not learn. {self.fix}")
            return
        if n is None:
            return  # a total only
        silent, dead, n = int(values[1]), int(values[2]), int(n)
        wide = dead >= self.dead_fraction * n  # no gradient: they cannot come back
        narrow = (n <= self.narrow and silent > 0  # an output layer: classes never predicted
                  and silent >= self.narrow_silent * n)
        self._strikes = self._strikes + 1 if wide or narrow else 0
        if self._strikes < 2:
            return
        did, why = self.reason
        if wide:
            self._warn(
                f"{dead} of this layer's {n} neurons ({100.0 * dead / n:.0f} %) {did} for "
                f"every sample of {self.window} consecutive training sequences (twice in a "
                f"row). {why}, so those neurons and the weights into them no longer learn and "
                f"nothing brings them back; in an output layer their classes are never "
                f"predicted. {self.dead_fix}")
        else:
            self._warn(
                f"{silent} of this layer's {n} neurons emitted no spike for every sample of "
                f"{self.window} consecutive training sequences (twice in a row); if this is "
                f"the output layer, their classes are never predicted. {why} (a neuron that "
                f"{did} gets none). {self.dead_fix}")

    def _warn(self, message: str) -> None:
        self.warned = True
        self._reset_sums()
        warnings.warn(f"{self.owner}: {message}", RuntimeWarning, stacklevel=5)
