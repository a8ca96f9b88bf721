"""GPU-free checks of the Triton kernels: ``python -m spikegrad.rules.triton_kernels.check``.

* :func:`ptx`: every kernel compiles to PTX for an NVIDIA target (default sm_90), with
  bfloat16 and float16 storage and several flag sets, without FMA contraction or approximate
  division (what Triton's interpreter cannot show);
* :func:`graphs`: ``torch.compile`` traces each rule's operators into forward and backward
  graphs that hold the Triton kernels (``triton_kernel_wrapper_functional``), i.e. what
  Inductor compiles on a GPU.

Run it without ``TRITON_INTERPRET`` (the interpreter compiles nothing). Without a GPU the
traced graphs cannot run; that failure (no Triton driver) is expected and ignored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["ptx", "graphs", "main"]

#: pointer arguments that are float32 whatever the storage type
_F32_PTRS = {"u_ptr", "h_ptr", "u0_ptr", "U_ptr", "A_ptr", "E_ptr", "g_u_ptr"}


def _variants() -> list[tuple[Any, list[dict[str, Any]]]]:
    from spikegrad.rules.triton_kernels import kernels_lif as K
    from spikegrad.rules.triton_kernels import kernels_na as KN

    return [(K.reset_term_fwd, [{}, {"SUBTRACT": False, "TRACE": False}]),
            (K.reset_term_bwd, [{"SURROGATE": 0}, {"SURROGATE": 1, "SUBTRACT": False}]),
            (K.bpsta_fwd, [{}, {"PAPER": False}]), (K.bpsta_bwd, [{}, {"PAPER": False}]),
            (K.multistrength_fwd, [{}, {"CAPPED": False, "RECIP": False}]),
            (K.multistrength_bwd, [{}, {"DETACH": False, "RECIP": False}]),
            (KN.na_fwd, [{}, {"TRACE": False}]),
            (KN.na_bwd, [{}, {"TRACE": False, "CUBE": False}])]


def _ptx_of(kernel: Any, store: str, flags: dict[str, Any], arch: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget

    names = kernel.arg_names
    consts = {names[i]: flags.get(names[i], True) for i in kernel.constexprs}
    consts["BLOCK"] = 128
    sig = {}
    for n in names:
        if n in consts:
            sig[n] = "constexpr"
        elif n.endswith("_ptr"):
            sig[n] = "*fp32" if n in _F32_PTRS else store
        else:
            sig[n] = "i32" if n in ("T", "N", "last") else "fp32"
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=consts)
    out = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                         options={"enable_fp_fusion": False, "num_warps": 4})
    return out.asm["ptx"]


def ptx(arch: int = 90) -> int:
    """Compile every kernel (two flag sets: bfloat16, float16 storage) to PTX for ``sm_arch``.

    Returns:
        The number of kernels compiled.

    Raises:
        AssertionError: a kernel's PTX has an FMA or an approximate division.
    """
    done = 0
    for kernel, variants in _variants():
        for store, flags in zip(("*bf16", "*fp16"), variants, strict=True):
            text = _ptx_of(kernel, store, flags, arch)
            name = kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__
            assert ".entry" in text, name
            for bad in ("fma.", "div.full", "div.approx"):
                assert bad not in text, f"{name} ({store}, {flags}): {bad} in the PTX"
            done += 1
    return done


def graphs() -> int:
    """Trace each rule's entry point with ``torch.compile`` (forward and backward).

    Returns:
        The number of rules whose forward and backward graphs each hold one Triton kernel.

    Raises:
        AssertionError: a graph is missing or does not hold exactly one kernel.
    """
    import torch._functorch.config as functorch_config
    from torch._dynamo.backends.common import aot_autograd

    from spikegrad.rules import bpsta, multistrength, na, surrogate
    from spikegrad.rules import triton_kernels as tk

    functorch_config.force_non_lazy_backward_lowering = True
    kept: list[str] = []

    def keep(gm: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        kept.append(gm.code)
        return gm

    backend = aot_autograd(fw_compiler=keep, bw_compiler=keep)
    spec = tk.reset_term_spec(0.75, 1.0, surrogate.ATan(), "zero", 1.0, 2.0)
    calls: list[tuple[str, Callable[..., Any]]] = [
        ("reset_term", lambda c, v: tk.reset_term_sequence(c, v, None, spec)),
        ("na", lambda c, v: tk.na_sequence(c, na.NA(tau_s=2.0), None, v, None)),
        ("bpsta", lambda c, v: tk.bpsta_sequence(c, v, bpsta.HTDGLIF())),
        ("multistrength", lambda c, v: tk.multistrength_sequence(
            c, v, multistrength.MultiStrength(max_strength=2)))]
    ok = 0
    for name, fn in calls:
        torch._dynamo.reset()
        kept.clear()
        c, v = torch.rand(4, 3, requires_grad=True), torch.zeros(3)
        try:
            torch.compile(fn, backend=backend, fullgraph=True)(c, v)
        except RuntimeError as exc:  # no GPU: the traced graph cannot run
            if "driver" not in str(exc) and "CUDA" not in str(exc):
                raise
        assert len(kept) == 2, f"{name}: {len(kept)} graphs, expected forward and backward"
        for code in kept:
            assert code.count("triton_kernel_wrapper_functional(") == 1, f"{name}:\n{code}"
        ok += 1
    return ok


def main() -> int:
    """Run both checks; print ``ptx ok <n>`` and ``graphs ok <n>``."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
        return 2
    print("ptx ok", ptx())
    print("graphs ok", graphs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
