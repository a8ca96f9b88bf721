"""Telling a user that a layer stayed silent through a whole training sequence.

Some rules pass no gradient through a neuron that does not spike (BPSA: ``∂o/∂h`` exists only at
spikes), so a layer that never fires in a training sequence stops everything below it from
learning, without any error. :class:`SilenceWatch` notices that and warns once, naming the fix.

No device synchronisation on the per-step path: during a sequence the spikes are summed on the
device; at the next reset (the end of the training step in both hosts' loops) that sum is copied
to the host without blocking, and it is read at a later reset, once the copy has completed (on
the CPU at once). So the warning comes one or two training steps late, never with a stall.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["SilenceWatch", "BPSA_FIX"]

BPSA_FIX = ("Start training with the paper's ReLU warm-up, e.g. "
            "`with spikegrad.recipes.warm_up(net): ...` around the first steps (README: 'Make "
            "each rule train'), or scale the input or the threshold so that the layer fires.")


class SilenceWatch:
    """Sum a layer's outputs per training sequence; warn once if a whole sequence was silent.

    Args:
        owner: the neuron's class name, for the message.
        fix: what to do about it (named in the warning).
    """

    def __init__(self, owner: str, fix: str) -> None:
        self.owner, self.fix = owner, fix
        self.warned = False
        self._sum: torch.Tensor | None = None
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None] | None = None

    def __getstate__(self) -> dict:
        # a sum in flight (a device tensor, a CUDA event) belongs to this process only
        return {**self.__dict__, "_sum": None, "_pending": None}

    def observe(self, out: torch.Tensor) -> None:
        """Add one step's outputs (call only while training with autograd on; a no-op while
        ``torch.compile`` traces, so that the watch never enters a graph)."""
        if self.warned or torch.compiler.is_compiling():
            return
        s = out.detach().sum(dtype=torch.float32)
        self._sum = s if self._sum is None else self._sum + s

    def boundary(self) -> None:
        """A sequence ended (the neuron was reset): check an earlier one, start the next (a
        no-op while ``torch.compile`` traces: the check reads a sum on the host)."""
        if torch.compiler.is_compiling():
            return
        self._check()
        if not self.warned and self._sum is not None and self._pending is None:
            total = self._sum
            if total.device.type == "cuda":
                host = torch.empty((), dtype=total.dtype, pin_memory=True)
                host.copy_(total, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                self._pending = (host, event)
            else:
                self._pending = (total, None)
            self._check()  # on the CPU the value is there already
        self._sum = None

    def _check(self) -> None:
        if self.warned or self._pending is None:
            return
        value, event = self._pending
        if event is not None and not event.query():
            return  # the copy is still in flight: look again at the next reset
        self._pending = None
        if float(value) == 0.0:  # a host tensor whose copy has completed: no sync
            self._warn()

    def _warn(self) -> None:
        self.warned = True
        warnings.warn(
            f"{self.owner}: this layer emitted no spike during a whole training sequence; its "
            f"rule passes gradient only through spikes, so the layers below it do not learn. "
            f"{self.fix}", RuntimeWarning, stacklevel=4)
