"""The entry points: each rule's fused whole sequence on the Triton operators of :mod:`.ops`.

Same signatures and returns as :mod:`spikegrad.rules.cupy_kernels.functions` (the reset-term
``spec`` is a :class:`~.spec.ResetTermSpec`; the other rules take their configuration objects).
Inputs ``[T, *]`` are flattened to ``[T, N]``; initial states broadcast to one step of the
input as in the references (outside the operators, so autograd sums their gradients back).
"""

from __future__ import annotations

from typing import Any

import torch

from spikegrad.rules.bpsta import HTDGLIF
from spikegrad.rules.multistrength import MultiStrength
from spikegrad.rules.na import NA, Rescale
from spikegrad.rules.triton_kernels import ops
from spikegrad.rules.triton_kernels.spec import ResetTermSpec, device_problem, f32, f32_div

__all__ = ["reset_term_sequence", "na_sequence", "bpsta_sequence", "multistrength_sequence"]

F32 = torch.float32


def _check(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as ``[T, N]`` (contiguous) after the device and dtype checks.

    Raises:
        TypeError: ``x`` is not a floating-point tensor of a kernel dtype.
        ValueError: ``x`` has no time dimension, or its device cannot run the kernels.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', x)}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be time-major [T, *] with T >= 1, got {tuple(x.shape)}")
    problem = None if torch.compiler.is_compiling() else device_problem(x.device, x.dtype)
    if problem is not None:
        raise (TypeError if "dtype" in problem else ValueError)(
            f"the Triton kernels cannot run this call: {problem}")
    return x.reshape(x.shape[0], -1).contiguous()


def _state(x: torch.Tensor | None, c: torch.Tensor, name: str,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """A per-neuron state as a contiguous ``[N]`` in ``dtype`` (default ``c``'s; zeros if
    absent), broadcast to one step of ``c`` (``[T, *]``) as the torch reference does.

    Raises:
        ValueError: ``x`` does not broadcast to ``c.shape[1:]``.
    """
    dtype = c.dtype if dtype is None else dtype
    step = c.shape[1:]
    if x is None:
        return c.new_zeros(step.numel(), dtype=dtype)
    if x.shape != step:
        try:
            x = x.expand(step)
        except RuntimeError:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, which does not broadcast to "
                             f"one step of the input, {tuple(step)}") from None
    return x.reshape(-1).to(dtype).contiguous()


def reset_term_sequence(c: torch.Tensor, v0: torch.Tensor | None, a0: torch.Tensor | None,
                        spec: ResetTermSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Reset-term LIF over a sequence, fused: ``(spikes or trace, v)``.

    Same values and gradients (to ``c``, ``v0`` and the trace state ``a0``) as
    :class:`spikegrad.rules.reset_term.SequenceFunction` followed, when ``spec.tau_s`` is set,
    by :func:`spikegrad.rules.reset_term.trace` from ``a0``.

    Args:
        c: input currents.
        v0: initial post-reset state (zeros if ``None``).
        a0: initial trace (zeros if ``None``; unused without ``tau_s``).
        spec: the rule's parameters.

    Returns:
        ``(out, v)``: spikes (or the trace) and post-reset states, in ``c``'s dtype.

    Shape:
        c: ``[T, *]``; v0, a0: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    cf = _check(c, "c")
    trace = spec.tau_s is not None
    tau_s = spec.tau_s if trace else 1.0
    kind, sg_a, sg_b = spec.surrogate_args
    out, v, _ = ops.reset_term_fwd(
        cf, _state(v0, c, "v0"), _state(a0, c, "a0"), f32(spec.beta), f32(spec.threshold),
        spec.mechanism == "subtract", spec.surrogate.inclusive, trace,
        f32(1.0 - 1.0 / tau_s) if trace else 0.0, f32_div(1.0, tau_s), kind, sg_a, sg_b,
        f32(spec.reset_grad_scale), f32(tau_s), f32_div(1.0, tau_s))
    return out.view(c.shape), v.view(c.shape)


def bpsta_sequence(x: torch.Tensor, v0: torch.Tensor | None, cfg: HTDGLIF
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The HTDGLIF node over a sequence, fused: ``(o, v)`` as repeated
    :func:`spikegrad.rules.bpsta.step_v` (gradients to ``x`` and ``v0``), either mode.

    Shape:
        x: ``[T, *]``; v0: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    xf = _check(x, "x")
    paper = cfg.mode == "paper"
    o, v, _ = ops.bpsta_fwd(xf, _state(v0, x, "v0"), paper, f32(cfg.threshold), f32(cfg.alpha),
                            f32(cfg.decay) if paper else 1.0, 1.0 if paper else f32(cfg.dt))
    return o.view(x.shape), v.view(x.shape)


def multistrength_sequence(z: torch.Tensor, v0: torch.Tensor | None, cfg: MultiStrength
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-strength IF over a sequence, fused: ``(θ, v)`` as repeated
    :func:`spikegrad.rules.multistrength.step` (gradients to ``z`` and ``v0``).

    Shape:
        z: ``[T, *]``; v0: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    zf = _check(z, "z")
    capped = cfg.max_strength is not None
    d = float(cfg.max_strength) if capped else 0.0
    theta, v, _ = ops.multistrength_fwd(
        zf, _state(v0, z, "v0"), f32(cfg.threshold), f32_div(1.0, cfg.threshold), f32(cfg.beta),
        capped, d, f32(cfg.threshold * (d + 1.0)) if capped else 0.0, cfg.detach_reset)
    return theta.view(z.shape), v.view(z.shape)


def _na_args(cfg: NA) -> tuple[Any, ...]:
    return (f32(cfg.beta), f32(cfg.threshold), f32(cfg.trace_decay), f32(cfg.trace_gain),
            f32(cfg.clamp), cfg.tau_s is not None, cfg.reset == "subtract",
            cfg.distance == "inverse_cube", cfg.error == "accumulated")


class _NARescaled(torch.autograd.Function):
    """The NA operators with the Python-side :class:`~spikegrad.rules.na.Rescale` applied
    between the backward kernel and the ``u`` gradient, as :class:`~spikegrad.rules.na.NAFunction`
    does (the rescale needs the whole layer's ``δ`` and keeps state, so it stays out of the
    operator; this path is not traceable by ``torch.compile``)."""

    @staticmethod
    def forward(c: torch.Tensor, u0: torch.Tensor, a0: torch.Tensor,  # type: ignore[override]
                args: tuple[Any, ...], rescale: Rescale) -> tuple[torch.Tensor, torch.Tensor]:
        return ops.na_fwd_op(c, u0, a0, *args)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        c, u0, a0, args, rescale = inputs
        ctx.save_for_backward(c, u0, a0)
        ctx.args, ctx.rescale = args, rescale
        ctx.set_materialize_grads(False)
        rescale.begin()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor | None, g_u: torch.Tensor | None  # type: ignore[override]
                 ) -> tuple[Any, ...]:
        c, u0, a0 = ctx.saved_tensors
        delta = ctx.rescale(ops.na_bwd_op(c, u0, a0, g, None, *ctx.args))
        if g_u is not None:
            delta = delta + g_u.to(delta.dtype)
        return delta, None, None, None, None


def na_sequence(c: torch.Tensor, cfg: NA, rescale: Rescale | None = None,
                u_init: torch.Tensor | None = None, a_init: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`spikegrad.rules.na.NAFunction` fused: ``(out, u)`` with the NA backward.

    ``out`` is the trace (the spikes without ``tau_s``) in ``c``'s dtype; ``u`` (and
    ``u_init``) is float32 for every input dtype (the spike is decided on it). All ``T``
    neighbors of a neuron are replayed in registers by the backward kernel. The gradient
    flows to ``c`` only (``u_init``, ``a_init`` continue an earlier state, not differentiated);
    one arriving at ``u`` is added to ``δ`` unchanged.

    ``rescale`` (a :class:`~spikegrad.rules.na.Rescale`, Python-side state coupling the
    layers) is applied outside the operators, in a small autograd node, to the kernel's ``δ``
    before the ``u`` gradient is added, as the reference does; that path runs eagerly only.

    Shape:
        c: ``[T, *]``; u_init, a_init: broadcastable to ``[*]``; outputs: ``[T, *]``.
    """
    cf = _check(c, "c")
    u0, a0 = _state(u_init, c, "u_init", F32).detach(), _state(a_init, c, "a_init").detach()
    if rescale is None:
        out, u = ops.na_fwd_op(cf, u0, a0, *_na_args(cfg))
    else:
        out, u = _NARescaled.apply(cf, u0, a0, _na_args(cfg), rescale)
    return out.view(c.shape), u.view(c.shape)
