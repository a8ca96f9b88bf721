"""What a run records besides accuracy and time: spike rates, synaptic operations, which
implementation ran, library versions and the machine.

Synaptic operations follow NeuroBench's definitions: an *effective* operation is one whose
input and weight are both non-zero; it is an accumulate (AC) when the layer's input is binary
(spikes: every value 0 or 1) and a multiply-accumulate (MAC) otherwise (analog inputs such as
the image, a PSP trace or integer strengths). A layer's count is the layer applied, without
bias, to the non-zero mask of its input with the non-zero mask of its weights, summed; *dense*
counts every (input, weight) pair. Reported per sample (one inference over all ``T`` steps).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikegrad.adapters.network import SpikingNetwork
from spikegrad.rules import reset_term


def neuron_tau_s(m: nn.Module) -> float | None:
    """The PSP time constant of a neuron whose first output is its trace, else ``None``."""
    tau_s = getattr(m, "tau_s", None)
    if tau_s is None and hasattr(m, "rule"):
        tau_s = getattr(m.rule, "tau_s", None)
    return tau_s


class Counters:
    """Accumulates per-layer spike rates and synaptic operations over evaluation batches.

    ``spike_rate[k]``: spikes per neuron and time step of neuron layer ``k`` (for integer
    strengths: strength units per neuron and step; a PSP-trace output is turned back into its
    spikes first).
    """

    def __init__(self) -> None:
        self.spikes: dict[int, float] = {}
        self.elements: dict[int, int] = {}
        self.acs = 0.0
        self.macs = 0.0
        self.dense = 0.0
        self.samples = 0

    def observe(self, k: int, neuron: nn.Module, out: torch.Tensor) -> None:
        tau_s = neuron_tau_s(neuron)
        s = (reset_term.spikes_from_trace(out.float(), tau_s).round()  # binary spikes; the
             if tau_s is not None else out)  # rounding undoes a low-precision trace's error
        self.spikes[k] = self.spikes.get(k, 0.0) + float(s.float().sum())
        self.elements[k] = self.elements.get(k, 0) + s.numel()

    def synapse_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        mask = (x != 0).to(torch.float32)
        binary = bool(((x == 0) | (x == 1)).all())
        with torch.no_grad():
            nonzero_w = (module.weight != 0).to(torch.float32)
            if isinstance(module, nn.Conv2d):
                flat = mask.reshape(-1, *mask.shape[-3:])
                conv = functools.partial(F.conv2d, bias=None, stride=module.stride,
                                         padding=module.padding, dilation=module.dilation,
                                         groups=module.groups)
                ops = float(conv(flat, nonzero_w).sum())
                dense = float(conv(torch.ones_like(flat[:1]), torch.ones_like(nonzero_w)).sum())
                dense *= flat.shape[0]
            else:  # Linear
                ops = float((mask.reshape(-1, mask.shape[-1]) @ nonzero_w.T).sum())
                dense = float(mask[..., 0].numel()) * module.weight.numel()
        self.dense += dense
        if binary:
            self.acs += ops
        else:
            self.macs += ops

    @property
    def spike_rate(self) -> list[float]:
        return [self.spikes[k] / self.elements[k] for k in sorted(self.spikes)]

    def synops(self) -> dict[str, float | None]:
        if not self.samples:
            return {"acs": None, "macs": None, "dense": None}
        return {"acs": self.acs / self.samples, "macs": self.macs / self.samples,
                "dense": self.dense / self.samples}


@contextmanager
def counting(net: SpikingNetwork, counters: Counters) -> Iterator[Counters]:
    """Within the block, ``net``'s forwards update ``counters`` (the caller adds samples)."""
    handles = [m.register_forward_pre_hook(counters.synapse_hook) for m in net.synapses()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with net.observing(counters.observe):
            yield counters
    finally:
        for h in handles:
            h.remove()


def implementation(neurons: Iterable[nn.Module], device: torch.device, dtype: torch.dtype
                   ) -> tuple[str, str | None]:
    """``(implementation, reason)`` of a network's neurons: ``"torch"``, ``"cpp"``,
    ``"triton"``, ``"cupy"``... and, where the fastest path was not taken, why.

    spikegrad's neurons read the one dispatcher (:mod:`spikegrad.rules.dispatch`) through their
    ``dispatch_choice(device, dtype)``; a host's own neurons report what the host runs.
    """
    impls, reasons = [], []
    for m in neurons:
        pick = getattr(m, "dispatch_choice", None)
        if callable(pick):
            choice = pick(device, dtype)
            impl, why = choice.implementation, choice.reason
        else:
            impl, why = _host_implementation(m, device)
        impls.append(impl)
        reasons.append(why)
    names = sorted(set(impls))
    why = sorted({r for r in reasons if r})
    return "+".join(names), ("; ".join(why) or None)


def _host_implementation(m: nn.Module, device: torch.device) -> tuple[str, str | None]:
    """What a host's own neuron runs: spikingjelly 2.x's dispatcher choice
    (``functional.neuron_implementation``), 0.0.0.0.14's ``backend``, else snntorch's torch."""
    kind = {"LIFNode": "lif", "IFNode": "if"}.get(type(m).__name__)
    if kind is not None and type(m).__module__.startswith("spikingjelly"):
        from spikingjelly.activation_based import functional as sjf

        if hasattr(sjf, "neuron_implementation"):
            found = sjf.neuron_implementation(kind, device)
            missing = found.get("unavailable") or {}
            return (f"spikingjelly {found['implementation']}",
                    "; ".join(f"{k}: {v}" for k, v in missing.items()) or None)
        return f"spikingjelly {getattr(m, 'backend', 'torch')}", None
    return "torch", None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Library versions as imported here (``None``: not installed)."""
    out = {name: _version(name) for name in ("spikegrad", "snntorch", "spikingjelly", "tonic",
                                             "cupy-cuda12x", "cupy-cuda13x")}
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["python"] = platform.python_version()
    return out


def machine(device: torch.device) -> str:
    """One line naming the CPU (or GPU), the threads and the OS."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads, "
            f"{platform.system()}")
