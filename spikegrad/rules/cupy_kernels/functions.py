"""What the hand-written CuPy kernels' autograd nodes share (``setup_context`` style).

:class:`LIFKernel` drives the kernel pair of reset-term, BPSA/BPTA and multi-strength (their
``sequence`` functions, in ``spikegrad/rules/<rule>/cupy.py``, have the signature of the rule's
multi-step reference and return the same values); NA's node is in
:mod:`spikegrad.rules.na.cupy`. Inputs ``[T, *]`` are flattened to ``[T, N]`` (one kernel thread
per neuron), made contiguous and run through :func:`~spikegrad.rules.cupy_kernels.launch.run`
(CuPy on CUDA tensors, the host shim on CPU tensors, which only tests use); initial states
broadcast to one step of the input as in the references. Saved for the backward pass: reset-
term, BPSA/BPTA and multi-strength keep the pre-reset potential in fp32; NA keeps only its
inputs and recomputes the trajectory in the backward kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from spikegrad.rules._oplib import state_vector
from spikegrad.rules.cupy_kernels.launch import run
from spikegrad.rules.cupy_kernels.source import KernelSpec

__all__ = ["LIFKernel", "flat", "state_grad", "grad_arg", "F32"]

F32 = torch.float32


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).contiguous()




def state_grad(g: torch.Tensor, step: torch.Size, shape: torch.Size | None
                ) -> torch.Tensor | None:
    """A state's ``[N]`` gradient back in the state's own (possibly broadcast) shape."""
    return None if shape is None else g.view(step).sum_to_size(shape)


def grad_arg(g: torch.Tensor | None, placeholder: torch.Tensor) -> tuple[torch.Tensor, int]:
    """An optional upstream gradient as a kernel argument and its presence flag."""
    return (placeholder, 0) if g is None else (flat(g).to(placeholder.dtype), 1)


class LIFKernel(torch.autograd.Function):
    """``(x, v0, a0, spec) -> (out, v, pre)`` for a kernel pair that saves ``pre`` (fp32).

    Shared by reset-term (``a0`` the trace state), BPSA/BPTA and multi-strength (``a0`` is
    ``None``); the argument names of each spec are mapped in ``_NAMES``.
    """

    @staticmethod
    def forward(x: torch.Tensor, v0: torch.Tensor, a0: torch.Tensor | None,  # type: ignore[override]
                spec: KernelSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        names = _NAMES[spec.rule]
        xf = flat(x)
        out, v = torch.empty_like(xf), torch.empty_like(xf)
        pre = torch.empty(xf.shape, dtype=F32, device=x.device)
        args: dict[str, Any] = {names["x"]: xf, "v0": state_vector(v0, x, "v0"),
                                names["out"]: out,
                                "v_out": v, names["pre"]: pre}
        if spec.rule == "reset_term":
            args["a0"] = state_vector(a0, x, "a0")
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
        g_o, has_o = grad_arg(g_out, grad_x)
        g_vv, has_v = grad_arg(g_v, grad_x)
        args: dict[str, Any] = {names["pre"]: pre, names["g_out"]: g_o, names["has_g_out"]: has_o,
                                "g_v": g_vv, "has_g_v": has_v, names["grad_x"]: grad_x,
                                "grad_v0": grad_v0}
        grad_a0 = None
        if spec.rule == "reset_term":
            grad_a0 = grad_x.new_empty(pre.shape[1])
            args["grad_a0"] = grad_a0
        if spec.rule == "bpsta":
            args["x"] = flat(x)
        run(spec, "backward", pre.shape[0], pre.shape[1], args)
        step = ctx.shape[1:]
        gv0 = state_grad(grad_v0, step, ctx.state_shape)
        ga0 = None
        if grad_a0 is not None and spec.constant("TRACE") == "true":
            ga0 = state_grad(grad_a0, step, ctx.trace_shape)
        return grad_x.view(ctx.shape), gv0, ga0, None


_NAMES = {
    "reset_term": dict(x="c", out="out", pre="u_save", g_out="g_out", has_g_out="has_g_out",
                       grad_x="grad_c"),
    "bpsta": dict(x="x", out="o_out", pre="h_save", g_out="g_o", has_g_out="has_g_o",
                  grad_x="grad_x"),
    "multistrength": dict(x="z", out="theta_out", pre="h_save", g_out="g_theta_in",
                          has_g_out="has_g_theta", grad_x="grad_z"),
}
