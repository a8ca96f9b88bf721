"""The same traced step as CUDA C: a :class:`~spikegrad.rules.cupy_kernels.source.KernelSpec`
for CuPy's ``RawKernel`` (spikingjelly's ``backend="cupy"``), ``nvcc`` and the host shim.

The kernels mirror :mod:`spikegrad.rules.stepfn.triton_gen`: one thread per neuron, the time
loop inside, float32 state in registers; the forward stores each step's output and (``save``)
the float32 state before each step, the backward walks time backwards re-computing each step
from its saved state. Arguments (before ``T, N``):

* forward: ``x`` (storage type), ``s0_<j>`` (float32 ``[N]``), ``out``, ``sT_<j>``,
  ``sav_<j>`` (float32 ``[T, N]``), ``save`` (flag);
* backward: ``x``, ``sav_<j>``, ``g_out``, ``g_sT_<j>`` (float32), ``g_x``, ``g_s0_<j>``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from spikegrad.rules.cupy_kernels.ctext import c_float
from spikegrad.rules.cupy_kernels.launch import run
from spikegrad.rules.cupy_kernels.source import KernelSpec, Param
from spikegrad.rules.stepfn.emit import c_lines, input_names
from spikegrad.rules.stepfn.graph import trace

__all__ = ["kernel_spec", "sequence"]


def _value(v: Any, names: dict[str, str]) -> str:
    return names[v] if isinstance(v, str) else c_float(float(v))


@functools.lru_cache(maxsize=256)
def kernel_spec(rule: Any) -> KernelSpec:
    """The two kernels of ``rule``'s configuration (raises
    :class:`~spikegrad.rules.stepfn.graph.UnsupportedOperation` as
    :func:`~spikegrad.rules.stepfn.graph.trace` does)."""
    traced = trace(rule)
    k = len(rule.states)
    ind = "    "
    # forward
    names = input_names(rule.states, backward=False)
    body = [f"float st_{j} = s0_{j}[i];" for j in range(k)]
    body += ["for (long long t = 0; t < T; ++t) {", f"{ind}const long long kk = t * N + i;",
             *[f"{ind}if (save) sav_{j}[kk] = st_{j};" for j in range(k)],
             f"{ind}const float in_x = sg_load(x, kk);",
             *[f"{ind}const float in_{j} = st_{j};" for j in range(k)]]
    body += [ind + line for line in c_lines(traced.forward, names)]
    outs = [_value(o, names) for o in traced.forward.outputs]
    body.append(f"{ind}sg_store(out, kk, {outs[0]});")
    body += [f"{ind}st_{j} = {outs[1 + j]};" for j in range(k)]
    body.append("}")
    body += [f"sT_{j}[i] = st_{j};" for j in range(k)]
    forward = "\n".join("  " + line for line in body)
    # backward
    names = input_names(rule.states, backward=True)
    body = [f"float gs_{j} = g_sT_{j}[i];" for j in range(k)]
    body += ["for (long long r = 0; r < T; ++r) {",
             f"{ind}const long long kk = (T - 1 - r) * N + i;",
             f"{ind}const float in_x = sg_load(x, kk);",
             *[f"{ind}const float in_{j} = sav_{j}[kk];" for j in range(k)],
             f"{ind}const float in_g_out = sg_load(g_out, kk);",
             *[f"{ind}const float in_g_{j} = gs_{j};" for j in range(k)]]
    body += [ind + line for line in c_lines(traced.backward, names)]
    grads = [_value(o, names) for o in traced.backward.outputs]
    body.append(f"{ind}sg_store(g_x, kk, {grads[0]});")
    body += [f"{ind}gs_{j} = {grads[1 + j]};" for j in range(k)]
    body.append("}")
    body += [f"g_s0_{j}[i] = gs_{j};" for j in range(k)]
    backward = "\n".join("  " + line for line in body)
    fwd_params = (Param("x", "in"), *[Param(f"s0_{j}", "fin", "N") for j in range(k)],
                  Param("out", "out"), *[Param(f"sT_{j}", "fout", "N") for j in range(k)],
                  *[Param(f"sav_{j}", "fout") for j in range(k)], Param("save", "flag"))
    bwd_params = (Param("x", "in"), *[Param(f"sav_{j}", "fin") for j in range(k)],
                  Param("g_out", "in"), *[Param(f"g_sT_{j}", "fin", "N") for j in range(k)],
                  Param("g_x", "out"), *[Param(f"g_s0_{j}", "fout", "N") for j in range(k)])
    return KernelSpec(rule=f"gen_{rule.name}", constants=(), helpers="",
                      forward_params=fwd_params, backward_params=bwd_params,
                      forward_body=forward, backward_body=backward)


class _Sequence(torch.autograd.Function):
    """``(rule, x [T, N], *state0 [N]) -> (out, *final)`` through the generated CUDA C (CuPy
    on CUDA tensors, the host shim on CPU ones:
    :func:`spikegrad.rules.cupy_kernels.launch.run`)."""

    @staticmethod
    def forward(ctx: Any, rule: Any, x: torch.Tensor, *state0: torch.Tensor) -> Any:
        spec = kernel_spec(rule)
        T, N = x.shape
        k = len(state0)
        f32 = dict(dtype=torch.float32, device=x.device)
        out = torch.empty_like(x)
        final = [torch.empty(N, **f32) for _ in range(k)]
        saved = [torch.empty(T, N, **f32) for _ in range(k)]
        run(spec, "forward", T, N, {
            "x": x, "out": out, "save": 1, **{f"s0_{j}": s for j, s in enumerate(state0)},
            **{f"sT_{j}": f for j, f in enumerate(final)},
            **{f"sav_{j}": s for j, s in enumerate(saved)}})
        ctx.save_for_backward(x, *saved)
        ctx.spec, ctx.k = spec, k
        return (out, *final)

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor | None, *g_final: torch.Tensor | None) -> Any:
        x, *saved = ctx.saved_tensors
        T, N = x.shape
        f32 = dict(dtype=torch.float32, device=x.device)
        g_out = torch.zeros_like(x) if g_out is None else g_out.to(x.dtype).contiguous()
        g_final = [torch.zeros(N, **f32) if g is None else g.float().contiguous()
                   for g in g_final]
        g_x = torch.empty_like(x)
        g_init = [torch.empty(N, **f32) for _ in range(ctx.k)]
        run(ctx.spec, "backward", T, N, {
            "x": x, "g_out": g_out, "g_x": g_x, **{f"sav_{j}": s for j, s in enumerate(saved)},
            **{f"g_sT_{j}": g for j, g in enumerate(g_final)},
            **{f"g_s0_{j}": g for j, g in enumerate(g_init)}})
        return (None, g_x, *g_init)


def sequence(rule: Any, x: torch.Tensor, state: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The whole sequence ``x`` (``[T, *]``, float32 or float16) from ``state`` through the
    generated CUDA C: ``(out, final states)``, differentiable (the generated backward)."""
    if x.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"the generated CUDA C kernels take float32 or float16, not {x.dtype}")
    T = x.shape[0]
    flat = x.reshape(T, -1).contiguous()
    res = _Sequence.apply(rule, flat, *[s.reshape(-1).float().contiguous() for s in state])
    out = res[0].reshape(x.shape)
    final = tuple(r.reshape(x.shape[1:]).to(s.dtype) for r, s in zip(res[1:], state,
                                                                        strict=True))
    return out, final
