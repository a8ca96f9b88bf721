"""First use of a fused kernel: run it once, small, before a training step relies on it.

The fused kernels (Triton, CuPy) are compiled on the user's machine the first time a
configuration runs: a compiler that rejects a kernel (Triton JIT error, CuPy NVRTC error), a
launch that fails (out of resources, no driver) or a kernel that faults would otherwise crash the
first training step, or its backward pass. So before a configuration first runs,
:func:`problem` runs that configuration's kernel once on a tiny input (forward and backward,
on the same device and dtype, synchronised) and records the outcome:

* it ran and every output and gradient is finite: ``None``, the kernel is used from then on;
* it raised or produced a non-finite value: the reason (the error's type and message).
  :mod:`spikegrad.rules.dispatch` then runs the torch path for that configuration under
  ``"auto"`` (one :class:`KernelFallbackWarning` per configuration, naming the kernel, the
  error and how to report it), and raises with the reason for an explicit request.

The outcome is cached per (kernel family, configuration, device, dtype): one probe per
configuration per process, and a dictionary lookup on every later call (no host
synchronisation on the per-step path). The probe checks that the kernel compiles, launches and
stays finite, not that its values are right: ``python -m spikegrad.check`` compares every
kernel with the torch reference. While ``torch.compile`` traces, :func:`problem` is called for
real (a constant for dynamo), so a compiled model falls back the same way; during CUDA graph
capture no probe runs (a kernel not probed yet is used as is).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["KernelFallbackWarning", "FAMILIES", "problem", "forget", "REPORT", "register",
           "inputs", "sequence_probe"]

#: kernel families with a first-use probe
FAMILIES = ("triton", "cupy", "triton_replay")
#: how a user reports a kernel that fails on their machine
REPORT = (f"please report it with the output of `{sys.executable} -m spikegrad.check --json "
          "spikegrad-check.json` (the table and the file) in spikegrad's issue tracker")
#: the probe's size: a few steps, more neurons than one program's block of 128, odd
_T, _N = 3, 131
_VERDICTS: dict[tuple[Any, ...], str | None] = {}


class KernelFallbackWarning(RuntimeWarning):
    """A fused kernel failed on first use; ``"auto"`` runs the torch path for its
    configuration instead (same values, slower)."""


def forget() -> None:
    """Drop every recorded outcome and warning (the next call of each configuration probes
    again, and warns again if it fails)."""
    _VERDICTS.clear()
    _WARNED.clear()


def _mark_constant(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]  # see dispatch.py
    return fn


@_mark_constant
def problem(family: str, spec: Any, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why ``family``'s kernel for ``spec`` cannot be used on ``device`` with ``dtype`` (``None``
    if its first-use probe ran; cached: the probe runs once per configuration).

    Args:
        family: ``"triton"`` (``spec``: a
            :class:`~spikegrad.rules.reset_term.spec.ResetTermSpec` or the rule's
            configuration: ``NA``, ``HTDGLIF``, ``MultiStrength``), ``"cupy"``
            (a CuPy ``KernelSpec``) or ``"triton_replay"`` (``spec``: the replay's flags
            ``(trace, subtract, cube, has_a_init, has_changed)``).
        spec: the configuration, hashable.
        device, dtype: the call's.
    """
    key = (family, spec, str(device), dtype)
    if key in _VERDICTS:
        return _VERDICTS[key]
    if (device.type == "cuda" and torch.cuda.is_available()
            and torch.cuda.is_current_stream_capturing()):
        return None  # no probe inside a CUDA graph capture; not recorded
    reason = _probe(family, spec, device, dtype)
    _VERDICTS[key] = reason
    return reason


def _probe(family: str, spec: Any, device: torch.device, dtype: torch.dtype) -> str | None:
    label = f"{describe(family, spec)} ({str(dtype).replace('torch.', '')} on {device})"
    try:
        with torch.inference_mode(False), torch.enable_grad():
            values = _run(family, spec, device, dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once: a faulting kernel shows here, not later
    except Exception as exc:  # noqa: BLE001 - every failure means: do not use this kernel
        text = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        text = text if len(text) <= 400 else text[:397] + "..."
        return f"the {label} failed on first use ({type(exc).__name__}: {text})"
    bad = [name for name, v in values if not bool(torch.isfinite(v.float()).all())]
    if bad:
        return (f"the {label} produced non-finite values on first use ({', '.join(bad)}) where "
                "the torch path gives finite ones")
    return None


def describe(family: str, spec: Any) -> str:
    """``"Triton kernel of HTDGLIF(...)"``: the kernel a reason is about."""
    if family == "cupy":
        return f"CuPy kernel of the {spec.rule} rule (spec {spec.digest[:12]})"
    if family == "triton_replay":
        return f"Triton NA replay kernel (trace, subtract, cube, a_init, changed = {spec})"
    return f"Triton kernel of {spec!r}"


#: the probes, by (family, key): each rule folder registers its kernels' (see :func:`register`)
_RUNNERS: dict[tuple[str, Any], Callable[[Any, torch.device, torch.dtype],
                                         list[tuple[str, torch.Tensor]]]] = {}


def register(family: str, key: Any,
             run: Callable[[Any, torch.device, torch.dtype], list[tuple[str, torch.Tensor]]]
             ) -> None:
    """Register the probe of ``family``'s kernels for the specs of ``key``.

    Args:
        family: one of :data:`FAMILIES`.
        key: ``"triton"``: the spec's type (a rule's configuration class, or the reset-term
            ``ResetTermSpec``); ``"cupy"``: the ``KernelSpec.rule`` name; ``"triton_replay"``:
            ``None``.
        run: ``run(spec, device, dtype)`` runs the kernel forward and backward on a tiny input
            and returns the ``(name, tensor)`` pairs that must be finite (see
            :func:`sequence_probe`).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    _RUNNERS[(family, key)] = run


def _key(family: str, spec: Any) -> Any:
    if family == "cupy":
        return spec.rule
    return type(spec) if family == "triton" else None


def _place(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A probe tensor on the call's device (tests with a fake CuPy keep it on the CPU)."""
    return x.to(device, dtype)


def inputs(device: torch.device, dtype: torch.dtype, n: int = 3) -> list[torch.Tensor]:
    """``n`` probe tensors ``[3, 131]`` on ``device`` in ``dtype`` (a few steps, more neurons
    than one program's block of 128, odd); the first requires grad."""
    gen = torch.Generator().manual_seed(0)
    return [_place(torch.randn(_T, _N, generator=gen) * 0.7 + 0.45, device, dtype)
            .requires_grad_(i == 0) for i in range(n)]


def sequence_probe(call: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], Any]
                   ) -> Callable[[Any, torch.device, torch.dtype], list[tuple[str, torch.Tensor]]]:
    """A probe for a whole-sequence entry point ``call(x, state, trace, spec) -> outputs``:
    forward on :func:`inputs` (``state``, ``trace``: one step, ``trace >= 0``), then the
    gradient of a weighted sum of every output with respect to ``x``."""
    def run(spec: Any, device: torch.device, dtype: torch.dtype
            ) -> list[tuple[str, torch.Tensor]]:
        x, state, trace = inputs(device, dtype)
        outs = call(x, state[0].detach(), trace[0].detach().abs(), spec)
        loss = sum((o.float() * (k + 1.0)).sum() for k, o in enumerate(outs))
        (grad,) = torch.autograd.grad(loss, x)
        return [("outputs", o.detach()) for o in outs] + [("gradient", grad)]

    return run


def _run(family: str, spec: Any, device: torch.device, dtype: torch.dtype
         ) -> list[tuple[str, torch.Tensor]]:
    """The probe of ``spec``'s kernel (its own ``probe(device, dtype)`` method where it has
    one: a user's step rule; else the registered one); the tensors to check."""
    own = getattr(spec, "probe", None)
    if callable(own):
        return own(device, dtype)
    run = _RUNNERS.get((family, _key(family, spec)))
    if run is None:
        raise LookupError(f"no first-use probe is registered for the {describe(family, spec)} "
                          "(first_use.register, in the rule's folder)")
    return run(spec, device, dtype)


_WARNED: set[str] = set()


@_mark_constant
def warn_fallback(reason: str) -> None:
    """Once per reason (a reason names its configuration): ``"auto"`` falls back to torch.
    Called for real while ``torch.compile`` traces (a constant for dynamo)."""
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    warnings.warn(f"spikegrad: {reason}; backend/implementation 'auto' runs the torch path for "
                  f"this configuration from now on (same values, slower). {REPORT[0].upper()}"
                  f"{REPORT[1:]}.", KernelFallbackWarning, stacklevel=5)
