"""Generated Triton kernels of a step rule, registered as torch operators.

For each configuration (the rule's frozen dataclass) :func:`operators` writes one Python module
with two ``@triton.jit`` kernels into the cache directory and imports it:

* ``fwd``: one program per ``BLOCK`` neurons of ``[T, N]``, the time loop inside, the state
  in float32 registers; it stores each step's output (rounded to the storage type) and, when
  the backward pass will need them, the state *before* each step (float32, ``[T, N]`` per
  state); the final state (float32);
* ``bwd``: the loop backwards over time; each step re-computes the step from its saved state
  and input and applies the traced vector-Jacobian product, carrying the state's gradient in
  registers; it stores the input's gradient per step and the initial state's gradient.

Both are wrapped in ``torch.library.triton_op`` operators ``spikegrad::gen_<digest>_fwd`` and
``_bwd`` with ``register_autograd``, so ``torch.compile`` sees one node per sequence and
Inductor the kernels inside; their fake implementations come with ``triton_op``. Under
``TRITON_INTERPRET=1`` the kernels run interpreted on CPU tensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spikegrad.rules.stepfn.emit import input_names, triton_lines
from spikegrad.rules.stepfn.graph import Traced, trace
from spikegrad.rules.traffic import F32 as F32_BYTES
from spikegrad.rules.traffic import Traffic

__all__ = ["BLOCK", "Operators", "operators", "kernel_source", "cache_dir", "traffic"]

Tensor = torch.Tensor
F32 = torch.float32
#: neurons per program (one per thread with 4 warps)
BLOCK = 128
_LOCK = threading.Lock()
_OPS: dict[tuple[Any, bool], Operators] = {}


def cache_dir() -> Path:
    """Where the generated kernel modules are written (``$SPIKEGRAD_KERNEL_CACHE/generated``,
    default ``~/.cache/spikegrad/generated``)."""
    root = os.environ.get("SPIKEGRAD_KERNEL_CACHE",
                          str(Path.home() / ".cache" / "spikegrad"))
    return Path(root) / "generated"


def _block(value: str) -> str:
    """A kernel value as a float32 block (a constant becomes ``tl.full``)."""
    try:
        float(value)
    except ValueError:
        return value
    return f"tl.full([BLOCK], {value}, tl.float32)"


def kernel_source(traced: Traced, recip: bool) -> str:
    """The module text of the two kernels (``recip``: divide by a scalar as CUDA does)."""
    rule, k = traced.rule, len(traced.rule.states)
    st = [f"st_{j}" for j in range(k)]
    head = [
        f"# spikegrad: kernels generated from {rule.name}.step for {rule!r}",
        "import triton", "import triton.language as tl",
        "from spikegrad.rules.triton_kernels.lib import lanes, load, store", "", "",
        "@triton.jit",
        "def fwd(x_ptr, " + "".join(f"s0_{j}, " for j in range(k)) + "out_ptr, "
        + "".join(f"sT_{j}, " for j in range(k)) + "".join(f"sav_{j}, " for j in range(k))
        + "T, N, BLOCK: tl.constexpr, SAVE: tl.constexpr):",
        "    offs, mask = lanes(BLOCK, N)",
        *[f"    {st[j]} = tl.load(s0_{j} + offs, mask=mask, other=0.0)" for j in range(k)],
        "    for t in range(T):",
        "        kk = t * N + offs",
        "        if SAVE:",
        *[f"            tl.store(sav_{j} + kk, {st[j]}, mask=mask)" for j in range(k)],
        "        in_x = load(x_ptr + kk, mask)",
        *[f"        in_{j} = {st[j]}" for j in range(k)],
    ]
    names = input_names(rule.states, backward=False)
    fwd = traced.forward
    head += [f"        {line}" for line in triton_lines(fwd, names, recip)]
    outs = [_block(names[o] if isinstance(o, str) else repr(float(o))) for o in fwd.outputs]
    head.append(f"        store(out_ptr + kk, {outs[0]}, mask)")
    head += [f"        {st[j]} = {outs[1 + j]}" for j in range(k)]
    head += [f"    tl.store(sT_{j} + offs, {st[j]}, mask=mask)" for j in range(k)]
    head += ["", "", "@triton.jit",
             "def bwd(x_ptr, " + "".join(f"sav_{j}, " for j in range(k)) + "g_out_ptr, "
             + "".join(f"g_sT_{j}, " for j in range(k)) + "g_x_ptr, "
             + "".join(f"g_s0_{j}, " for j in range(k)) + "T, N, BLOCK: tl.constexpr):",
             "    offs, mask = lanes(BLOCK, N)",
             *[f"    gs_{j} = tl.load(g_sT_{j} + offs, mask=mask, other=0.0)" for j in range(k)],
             "    for i in range(T):",
             "        kk = (T - 1 - i) * N + offs",
             "        in_x = load(x_ptr + kk, mask)",
             *[f"        in_{j} = tl.load(sav_{j} + kk, mask=mask, other=0.0)" for j in range(k)],
             "        in_g_out = load(g_out_ptr + kk, mask)",
             *[f"        in_g_{j} = gs_{j}" for j in range(k)]]
    names = input_names(rule.states, backward=True)
    bwd = traced.backward
    head += [f"        {line}" for line in triton_lines(bwd, names, recip)]
    grads = [_block(names[o] if isinstance(o, str) else repr(float(o))) for o in bwd.outputs]
    head.append(f"        store(g_x_ptr + kk, {grads[0]}, mask)")
    head += [f"        gs_{j} = {grads[1 + j]}" for j in range(k)]
    head += [f"    tl.store(g_s0_{j} + offs, gs_{j}, mask=mask)" for j in range(k)]
    return "\n".join(head) + "\n"


def _load_module(source: str, digest: str) -> Any:
    path = cache_dir() / f"sg_gen_{digest}.py"
    if not path.exists() or path.read_text() != source:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        tmp.replace(path)
    name = f"spikegrad_generated_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Operators:
    """The registered operators of one configuration (``fwd(x, states, save)`` returns
    ``[out, *final_states, *saved_states]``)."""

    digest: str
    fwd: Any
    bwd: Any
    source: str


def operators(rule: Any, recip: bool) -> Operators:
    """The operators of ``rule``'s configuration (generated, imported and registered once)."""
    key = (rule, recip)
    if key in _OPS:
        return _OPS[key]
    with _LOCK:
        if key in _OPS:
            return _OPS[key]
        traced = trace(rule)
        source = kernel_source(traced, recip)
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        module = _load_module(source, digest)
        ops = _register(digest, module, len(rule.states), source)
        _OPS[key] = ops
        return ops


def _register(digest: str, module: Any, k: int, source: str) -> Operators:
    import triton
    from torch.library import triton_op, wrap_triton

    def launch(kernel: Any, like: Tensor, *args: Any, **meta: Any) -> None:
        options = dict(num_warps=4, enable_fp_fusion=False) if like.is_cuda else {}
        grid = (triton.cdiv(like.shape[1], BLOCK),)
        wrap_triton(kernel)[grid](*args, BLOCK=BLOCK, **meta, **options)

    @triton_op(f"spikegrad::gen_{digest}_fwd", mutates_args=())
    def fwd(x: Tensor, state: list[Tensor], save: bool) -> list[Tensor]:
        x = x.contiguous()
        T, N = x.shape
        out = torch.empty_like(x)
        final = [torch.empty(N, dtype=F32, device=x.device) for _ in range(k)]
        saved = [torch.empty((T, N) if save else (1, N), dtype=F32, device=x.device)
                 for _ in range(k)]
        launch(module.fwd, x, x, *[s.contiguous() for s in state], out, *final, *saved, T, N,
               SAVE=save)
        return [out, *final, *saved]

    @triton_op(f"spikegrad::gen_{digest}_bwd", mutates_args=())
    def bwd(x: Tensor, saved: list[Tensor], g_out: Tensor, g_final: list[Tensor]
            ) -> list[Tensor]:
        T, N = x.shape
        g_x = torch.empty_like(x)
        g_init = [torch.empty(N, dtype=F32, device=x.device) for _ in range(k)]
        launch(module.bwd, x, x, *saved, g_out.contiguous(),
               *[g.contiguous() for g in g_final], g_x, *g_init, T, N)
        return [g_x, *g_init]

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: list[Tensor]) -> None:
        x, _state, save = inputs
        if not save:
            ctx.saved_x = None
            return
        ctx.save_for_backward(x, *output[1 + k:])
        ctx.saved_x = True
        ctx.mark_non_differentiable(*output[1 + k:])

    def backward(ctx: Any, grads: list[Tensor | None]) -> tuple[Any, ...]:
        if ctx.saved_x is None:
            raise RuntimeError("this generated sequence ran with save=False (no gradient was "
                               "needed when it ran), so it has no backward")
        x, *saved = ctx.saved_tensors
        T, N = x.shape
        g_out = grads[0] if grads[0] is not None else torch.zeros_like(x)
        g_final = [g.float() if g is not None else torch.zeros(N, dtype=F32, device=x.device)
                   for g in grads[1:1 + k]]
        g_x, *g_init = bwd(x, saved, g_out, g_final)
        return g_x, g_init, None

    fwd.register_autograd(backward, setup_context=setup_context)
    return Operators(digest, fwd, bwd, source)


def traffic(rule: Any, direction: str, T: int, N: int, dtype: torch.dtype = torch.float32,
            *, save: bool = True) -> Any:
    """Bytes one launch of the generated kernel moves over ``[T, N]``, counted from the loads
    and stores :func:`kernel_source` writes (a :class:`spikegrad.rules.traffic.Traffic`; every
    element is touched once, so ``unique == loads + stores``).

    Forward: loads ``x`` and the initial states, stores the output, the final states and, with
    ``save``, each step's float32 state. Backward: loads ``x``, the saved states, the output's
    and the final states' gradients, stores the input's and the initial states' gradients.
    """
    k, s, TN = len(rule.states), torch.empty((), dtype=dtype).element_size(), T * N
    if direction == "forward":
        loads = TN * s + k * N * F32_BYTES
        stores = TN * s + k * N * F32_BYTES + (k * TN * F32_BYTES if save else 0)
    elif direction == "backward":
        loads = k * N * F32_BYTES + TN * s + k * TN * F32_BYTES + TN * s
        stores = TN * s + k * N * F32_BYTES
    else:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    return Traffic(loads, stores, loads + stores)
