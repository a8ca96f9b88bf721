"""The fused kernels as autograd nodes (``setup_context`` style), one per rule.

Each ``*_sequence`` function has the signature of its rule's multi-step reference and returns
the same values; inputs ``[T, *]`` are flattened to ``[T, N]`` (one kernel thread per neuron),
made contiguous and run through :func:`~spikegrad.rules.cupy_kernels.launch.run` (CuPy on CUDA
tensors, the host shim on CPU tensors, which only tests use); initial states broadcast to one
step of the input as in the references. Saved for the backward pass:
reset-term, BPSA/BPTA and multi-strength keep the pre-reset potential in fp32; NA keeps only its
inputs and recomputes the trajectory in the backward kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from spikegrad.rules.cupy_kernels.launch import run
from spikegrad.rules.cupy_kernels.source import KernelSpec

__all__ = ["reset_term_sequence", "na_sequence", "bpsta_sequence", "multistrength_sequence"]

F32 = torch.float32


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).contiguous()


def _state(x: torch.Tensor | None, c: torch.Tensor, name: str,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """A per-neuron state as a contiguous ``[N]`` in ``dtype`` (default ``c``'s; zeros if
    absent), broadcast to one step of ``c`` (``[T, *]``) as the torch reference broadcasts it.

    Raises:
        ValueError: ``x`` does not broadcast to ``c.shape[1:]`` (the kernel would read past it).
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


def _state_grad(g: torch.Tensor, step: torch.Size, shape: torch.Size | None
                ) -> torch.Tensor | None:
    """A state's ``[N]`` gradient back in the state's own (possibly broadcast) shape."""
    return None if shape is None else g.view(step).sum_to_size(shape)


def _grad(g: torch.Tensor | None, placeholder: torch.Tensor) -> tuple[torch.Tensor, int]:
    """An optional upstream gradient as a kernel argument and its presence flag."""
    return (placeholder, 0) if g is None else (_flat(g).to(placeholder.dtype), 1)


class _LIFKernel(torch.autograd.Function):
    """``(x, v0, a0, spec) -> (out, v, pre)`` for a kernel pair that saves ``pre`` (fp32).

    Shared by reset-term (``a0`` the trace state), BPSA/BPTA and multi-strength (``a0`` is
    ``None``); the argument names of each spec are mapped in :data:`_NAMES`.
    """

    @staticmethod
    def forward(x: torch.Tensor, v0: torch.Tensor, a0: torch.Tensor | None,  # type: ignore[override]
                spec: KernelSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        names = _NAMES[spec.rule]
        xf = _flat(x)
        out, v = torch.empty_like(xf), torch.empty_like(xf)
        pre = torch.empty(xf.shape, dtype=F32, device=x.device)
        args: dict[str, Any] = {names["x"]: xf, "v0": _state(v0, x, "v0"), names["out"]: out,
                                "v_out": v, names["pre"]: pre}
        if spec.rule == "reset_term":
            args["a0"] = _state(a0, x, "a0")
        run(spec, "forward", xf.shape[0], xf.shape[1], args)
        return out.view(x.shape), v.view(x.shape), pre

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x, v0, a0, spec = inputs
        ctx.save_for_backward(x if spec.rule == "bpsta" else None, output[2])
        ctx.spec, ctx.shape, ctx.dtype = spec, x.shape, x.dtype
        ctx.state_shape = None if v0 is None else v0.shape
        ctx.trace_shape = None if a0 is None else a0.shape
        ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_out: torch.Tensor | None, g_v: torch.Tensor | None,  # type: ignore[override]
                 _g_pre: Any) -> tuple[Any, ...]:
        x, pre = ctx.saved_tensors
        spec, names = ctx.spec, _NAMES[ctx.spec.rule]
        grad_x = torch.empty(pre.shape, dtype=ctx.dtype, device=pre.device)
        grad_v0 = grad_x.new_empty(pre.shape[1])
        g_o, has_o = _grad(g_out, grad_x)
        g_vv, has_v = _grad(g_v, grad_x)
        args: dict[str, Any] = {names["pre"]: pre, names["g_out"]: g_o, names["has_g_out"]: has_o,
                                "g_v": g_vv, "has_g_v": has_v, names["grad_x"]: grad_x,
                                "grad_v0": grad_v0}
        grad_a0 = None
        if spec.rule == "reset_term":
            grad_a0 = grad_x.new_empty(pre.shape[1])
            args["grad_a0"] = grad_a0
        if spec.rule == "bpsta":
            args["x"] = _flat(x)
        run(spec, "backward", pre.shape[0], pre.shape[1], args)
        step = ctx.shape[1:]
        gv0 = _state_grad(grad_v0, step, ctx.state_shape)
        ga0 = None
        if grad_a0 is not None and spec.constant("TRACE") == "true":
            ga0 = _state_grad(grad_a0, step, ctx.trace_shape)
        return grad_x.view(ctx.shape), gv0, ga0, None


_NAMES = {
    "reset_term": dict(x="c", out="out", pre="u_save", g_out="g_out", has_g_out="has_g_out",
                       grad_x="grad_c"),
    "bpsta": dict(x="x", out="o_out", pre="h_save", g_out="g_o", has_g_out="has_g_o",
                  grad_x="grad_x"),
    "multistrength": dict(x="z", out="theta_out", pre="h_save", g_out="g_theta_in",
                          has_g_out="has_g_theta", grad_x="grad_z"),
}


def reset_term_sequence(c: torch.Tensor, v0: torch.Tensor, a0: torch.Tensor | None,
                        spec: KernelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``ResetTermLIFNode``'s multi-step path fused: ``(spikes or trace, v)``.

    Same values and gradients (to ``c``, ``v0`` and the trace state ``a0``) as
    :class:`spikegrad.rules.reset_term.SequenceFunction` followed by
    :func:`spikegrad.rules.reset_term.trace` (when the spec has a trace); ``spec`` from
    :func:`~spikegrad.rules.cupy_kernels.kernels.reset_term_spec`.

    Shape:
        c: ``[T, *]``; v0, a0: ``[*]``; outputs: ``[T, *]``.
    """
    out, v, _ = _LIFKernel.apply(c, v0, a0, spec)
    return out, v


def bpsta_sequence(x: torch.Tensor, v0: torch.Tensor, spec: KernelSpec
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The HTDGLIF node over a sequence, fused: ``(o, v)`` as repeated
    :func:`spikegrad.rules.bpsta.step_v` (gradients to ``x`` and ``v0``); ``spec`` from
    :func:`~spikegrad.rules.cupy_kernels.kernels.bpsta_spec`.

    Shape:
        x: ``[T, *]``; v0: ``[*]``; outputs: ``[T, *]``.
    """
    o, v, _ = _LIFKernel.apply(x, v0, None, spec)
    return o, v


def multistrength_sequence(z: torch.Tensor, v0: torch.Tensor, spec: KernelSpec
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-strength IF over a sequence, fused: ``(θ, v)`` as repeated
    :func:`spikegrad.rules.multistrength.step` (gradients to ``z`` and ``v0``); ``spec`` from
    :func:`~spikegrad.rules.cupy_kernels.kernels.multistrength_spec`.

    Shape:
        z: ``[T, *]``; v0: ``[*]``; outputs: ``[T, *]``.
    """
    theta, v, _ = _LIFKernel.apply(z, v0, None, spec)
    return theta, v


class _NAKernel(torch.autograd.Function):
    """``(c, spec, rescale, u_init, a_init) -> (out, u)``, as
    :class:`spikegrad.rules.na.NAFunction` (gradient to ``c`` only)."""

    @staticmethod
    def forward(c: torch.Tensor, spec: KernelSpec, rescale: Any,  # type: ignore[override]
                u_init: torch.Tensor | None, a_init: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        cf = _flat(c)
        out, u = torch.empty_like(cf), torch.empty(cf.shape, dtype=F32, device=c.device)
        run(spec, "forward", cf.shape[0], cf.shape[1],
            dict(c=cf, u_init=_state(u_init, c, "u_init", F32), a_init=_state(a_init, c, "a_init"),
                 out=out, u_out=u))
        return out.view(c.shape), u.view(c.shape)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        c, spec, rescale, u_init, a_init = inputs
        ctx.save_for_backward(c, u_init, a_init)
        ctx.spec, ctx.rescale = spec, rescale
        ctx.set_materialize_grads(False)
        if rescale is not None:
            rescale.begin()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_a: torch.Tensor | None, g_u: torch.Tensor | None  # type: ignore[override]
                 ) -> tuple[Any, ...]:
        c, u_init, a_init = ctx.saved_tensors
        cf = _flat(c)
        delta = torch.empty_like(cf)
        g, has_g = _grad(g_a, delta)
        fused_u = ctx.rescale is None
        scratch = [torch.empty(cf.shape, dtype=F32, device=c.device) for _ in "UAE"]
        gu, has_gu = _grad(g_u if fused_u else None, scratch[0])
        run(ctx.spec, "backward", cf.shape[0], cf.shape[1],
            dict(c=cf, u_init=_state(u_init, c, "u_init", F32), a_init=_state(a_init, c, "a_init"),
                 g=g, has_g=has_g,
                 g_u=gu, has_g_u=has_gu, delta=delta, U=scratch[0], A=scratch[1], E=scratch[2]))
        delta = delta.view(c.shape)
        if not fused_u:
            delta = ctx.rescale(delta)
            if g_u is not None:
                delta = delta + g_u.to(delta.dtype)
        return delta, None, None, None, None


def na_sequence(c: torch.Tensor, spec: KernelSpec, rescale: Any = None,
                u_init: torch.Tensor | None = None, a_init: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`spikegrad.rules.na.NAFunction` fused: ``(out, u)`` with the NA backward.

    ``u`` (and ``u_init``) is float32 for every input dtype: the spike is ``u > θ``, and a
    float16 ``u`` read back could decide it differently (for float32 inputs: the same values
    as the reference; for float16, ``u`` is the float32 computation, unrounded).

    All ``T`` neighbors of a neuron are replayed by one thread in registers (no ``[T, T, *]``
    tensor); the rescale (``rescale``, needs the whole layer) runs in torch afterwards.
    ``spec`` from :func:`~spikegrad.rules.cupy_kernels.kernels.na_spec`.

    Shape:
        c: ``[T, *]``; u_init, a_init: ``[*]``; outputs: ``[T, *]``.
    """
    return _NAKernel.apply(c, spec, rescale, u_init, a_init)
