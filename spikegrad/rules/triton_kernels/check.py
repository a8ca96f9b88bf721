"""GPU-free checks of the Triton kernels: ``python -m spikegrad.rules.triton_kernels.check``.

* :func:`ptx`: every kernel compiles to PTX for an NVIDIA target (default sm_90), with
  bfloat16 and float16 storage and several flag sets, without FMA contraction or approximate
  division (what Triton's interpreter cannot show);
* :func:`graphs`: ``torch.compile`` traces each rule's operators into forward and backward
  graphs that hold the Triton kernels (``triton_kernel_wrapper_functional``), i.e. what
  Inductor compiles on a GPU.

* :func:`cubin`: every variant the rules' Triton operators (each rule folder's ``triton.py``,
  NA's ``triton_replay.py``) can launch on a GPU (:func:`variants`: each kernel's
  ``tl.constexpr`` flags as the operators pass them ×
  float32/float16/bfloat16 storage, ``BLOCK = 128``, 4 warps, no FP fusion) compiled to a
  cubin for sm_80 and sm_90 by Triton's own compiler and ``ptxas`` (no device needed), with
  the registers, spill bytes and shared memory of each; a compile error, a spill, more than
  255 registers, an FMA or an approximate division is a failure. ``--block N`` compiles with
  another block size (an over-large one must fail: that shows the check can fail).

Run it without ``TRITON_INTERPRET`` (the interpreter compiles nothing). Without a GPU the
traced graphs cannot run; that failure (no Triton driver) is expected and ignored.

Command line: ``python -m spikegrad.rules.triton_kernels.check`` (PTX and graphs);
``... check --cubin [--arch 80 90] [--block N] [--only NAME ...] [--json PATH]`` (the cubin
table; exit status 1 on any failure).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from spikegrad.rules import bpsta, multistrength, na, surrogate
from spikegrad.rules.reset_term.spec import reset_term_spec
from spikegrad.rules.triton_kernels import modules as kernel_modules
from spikegrad.rules.triton_kernels import rules_with_kernels

__all__ = ["ptx", "graphs", "cubin", "variants", "expected_count", "main"]

#: pointer arguments that are float32 whatever the storage type
_F32_PTRS = {"u_ptr", "h_ptr", "u0_ptr", "U_ptr", "A_ptr", "E_ptr", "g_u_ptr"}


def _variants() -> list[tuple[Any, list[dict[str, Any]]]]:
    k = _kernels()
    return [(k["reset_term_fwd"], [{}, {"SUBTRACT": False, "TRACE": False}]),
            (k["reset_term_bwd"], [{"SURROGATE": 0}, {"SURROGATE": 1, "SUBTRACT": False}]),
            (k["bpsta_fwd"], [{}, {"PAPER": False}]), (k["bpsta_bwd"], [{}, {"PAPER": False}]),
            (k["multistrength_fwd"], [{}, {"CAPPED": False, "RECIP": False}]),
            (k["multistrength_bwd"], [{}, {"DETACH": False, "RECIP": False}]),
            (k["na_fwd"], [{}, {"TRACE": False}]),
            (k["na_bwd"], [{}, {"TRACE": False, "CUBE": False}])]


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

    tk = modules()

    functorch_config.force_non_lazy_backward_lowering = True
    kept: list[str] = []

    def keep(gm: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        kept.append(gm.code)
        return gm

    backend = aot_autograd(fw_compiler=keep, bw_compiler=keep)
    spec = reset_term_spec(0.75, 1.0, surrogate.ATan(), "zero", 1.0, 2.0)
    calls: list[tuple[str, Callable[..., Any]]] = [
        ("reset_term", lambda c, v: tk["reset_term.triton"].sequence(c, v, None, spec)),
        ("na", lambda c, v: tk["na.triton"].sequence(c, na.NA(tau_s=2.0), None, v, None)),
        ("bpsta", lambda c, v: tk["bpsta.triton"].sequence(c, v, bpsta.HTDGLIF())),
        ("multistrength", lambda c, v: tk["multistrength.triton"].sequence(
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


# --- cubins for real GPUs ----------------------------------------------------------------------
#: the launch configuration of :func:`.lib.launch` and NA's replay on CUDA: 4 warps, no FP fusion
#: (checked against their source by :func:`choice_problems`); ``BLOCK`` is theirs
#: (:func:`launched_block`)
NUM_WARPS = 4
#: the architectures the cubins are built for by default (A100, H100; Triton builds 90 as 90a)
ARCHS = (80, 90)
#: registers a thread can have on sm_80/sm_90
MAX_REGISTERS = 255
#: shared memory one block can have (bytes, opt-in maximum) per architecture
MAX_SHARED = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
#: storage types (the Triton signature's pointer types) and their short names
DTYPES = (("*fp32", "fp32"), ("*fp16", "fp16"), ("*bf16", "bf16"))
_B = (False, True)

#: The values the operators can pass to each kernel's ``tl.constexpr`` flags on a GPU (``BLOCK``
#: aside); :func:`launch_flags` reads the launch calls of the rules' ``triton*.py`` and
#: :func:`choice_problems` checks this table against them (every keyword listed, ``x.is_cuda``
#: only ``True``, a literal only itself, anything else at least two values).
#: every kernel's ``tl.constexpr`` flags and the values the launches can pass
CHOICES: dict[str, dict[str, tuple[Any, ...]]] = {
    # reset_term.triton.sequence: spec.mechanism, spec.surrogate.inclusive, spec.tau_s
    "reset_term_fwd": {"SUBTRACT": _B, "INCLUSIVE": _B, "TRACE": _B},
    # SURROGATE: spec.SIGMOID (0) or spec.ATAN (1). HAS_G_*: either upstream gradient may be
    # None (set_materialize_grads(False)), and the operator takes None for both, so all four
    # pairs are built. INCLUSIVE is passed (and is its own build) also with SUBTRACT, which does
    # not read it. RECIP is ``u.is_cuda``: always True on a GPU (False only in the interpreter).
    "reset_term_bwd": {"SURROGATE": (0, 1), "SUBTRACT": _B, "INCLUSIVE": _B, "TRACE": _B,
                       "HAS_G_OUT": _B, "HAS_G_V": _B, "RECIP": (True,)},
    # PAPER: HTDGLIF mode "paper" or "braincog"
    "bpsta_fwd": {"PAPER": _B},
    "bpsta_bwd": {"PAPER": _B, "HAS_G_O": _B, "HAS_G_V": _B},
    # CAPPED: max_strength set or not; RECIP: ``z.is_cuda`` (True on a GPU)
    "multistrength_fwd": {"CAPPED": _B, "RECIP": (True,)},
    # DETACH: detach_reset; RECIP: ``h.is_cuda`` (True on a GPU)
    "multistrength_bwd": {"CAPPED": _B, "DETACH": _B, "HAS_G_THETA": _B, "HAS_G_V": _B,
                          "RECIP": (True,)},
    # NA: tau_s set or not, reset "subtract"/"zero"
    "na_fwd": {"TRACE": _B, "SUBTRACT": _B},
    # CUBE: distance "inverse_cube"; ACCUMULATED: error "accumulated" (NA accepts it without
    # tau_s: the kernel then ignores it, but it is its own build). HAS_G_U: False from
    # na.triton._NARescaled (it adds the u gradient outside), either from the registered autograd.
    "na_bwd": {"TRACE": _B, "SUBTRACT": _B, "CUBE": _B, "ACCUMULATED": _B, "HAS_G": _B,
               "HAS_G_U": _B},
    # na.triton_replay.na_replay: tau_s, reset, distance, a_init given, changed given
    "na_replay_kernel": {"TRACE": _B, "SUBTRACT": _B, "CUBE": _B, "HAS_A0": _B,
                         "HAS_CHANGED": _B},
}

#: per kernel, the pointer arguments that are float32 whatever the storage type, allocated as
#: float32 by the operator (``u``, ``h``, NA's scratch ``U``/``A``/``E``), or a float32 input
#: (NA's ``u0``; ``g_u``, the gradient of NA's float32 ``u``, or ``U`` when absent). Every other
#: pointer has the storage type, with the replay's exceptions in :func:`signature`.
F32_POINTERS: dict[str, tuple[str, ...]] = {
    "reset_term_fwd": ("u_ptr",), "reset_term_bwd": ("u_ptr",),
    "bpsta_fwd": ("h_ptr",), "bpsta_bwd": ("h_ptr",),
    "multistrength_fwd": ("h_ptr",), "multistrength_bwd": ("h_ptr",),
    "na_fwd": ("u0_ptr", "u_ptr"),
    "na_bwd": ("u0_ptr", "g_u_ptr", "U_ptr", "A_ptr", "E_ptr"),
    "na_replay_kernel": (),
}
#: integer (index and count) arguments; every other non-pointer argument is a float32 constant
_INTS = {"T", "N", "last", "L", "M", "K"}
_BAD_PTX = ("fma.", "div.full", "div.approx")


@dataclass(frozen=True)
class Variant:
    """One build of a kernel: its ``tl.constexpr`` flags and storage type (``u_fp32``: the
    replay's ``u`` is float32 under half storage, as the first-use probe passes it)."""

    kernel: str
    dtype: str
    flags: tuple[tuple[str, Any], ...]
    u_fp32: bool = False

    def label(self) -> str:
        """The flags that are set (``+X`` for ``HAS_X``, ``NAME=v`` for integers)."""
        parts = []
        for name, value in self.flags:
            if isinstance(value, bool):
                if value:
                    parts.append("+" + name[4:] if name.startswith("HAS_") else name)
            else:
                parts.append(f"{name}={value}")
        if self.u_fp32:
            parts.append("u:fp32")
        return " ".join(parts) or "-"


@dataclass
class Record:
    """The cubin of one variant for one architecture (sizes in bytes)."""

    kernel: str
    variant: str
    dtype: str
    arch: int
    block: int
    flags: dict[str, Any] = field(default_factory=dict)
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack: int | None = None
    shared: int | None = None
    seconds: float = 0.0
    ok: bool = False
    why: str = ""

    def message(self) -> str:
        """``kernel [variant] dtype sm_arch (BLOCK=b): why``."""
        return (f"{self.kernel} [{self.variant}] {self.dtype} sm_{self.arch} "
                f"(BLOCK={self.block}): {self.why}")


def launch_flags() -> dict[str, dict[str, str]]:
    """The ``tl.constexpr`` keywords of every kernel launch in the rules' ``triton*.py`` files
    (``BLOCK`` aside), as their source text, read from the files' syntax trees."""
    found: dict[str, dict[str, str]] = {}
    for path in kernel_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            target: ast.expr | None = None
            if isinstance(node.func, ast.Name) and node.func.id == "launch" and node.args:
                target = node.args[0]  # launch(kernel, x, *args, **flags)
            elif (isinstance(node.func, ast.Subscript) and isinstance(node.func.value, ast.Call)
                  and getattr(node.func.value.func, "id", None) == "wrap_triton"):
                target = node.func.value.args[0]  # wrap_triton(kernel)[grid](*args, **flags)
            if target is None:
                continue
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name == "kernel":  # launch's own body
                continue
            found[name] = {k.arg: ast.unparse(k.value) for k in node.keywords
                           if k.arg is not None and k.arg != "BLOCK"}
    return found


def choice_problems(kernels: dict[str, Any] | None = None) -> list[str]:
    """Where :data:`CHOICES` disagrees with the launches (:func:`launch_flags`) or with the
    kernels' own ``tl.constexpr`` parameters; empty when they agree."""
    launches = launch_flags()
    problems = []
    for path in (Path(__file__).with_name("lib.py"), *kernel_files()):
        text = path.read_text()
        if "wrap_triton(" not in text.replace("import wrap_triton", ""):
            continue  # launches through lib.launch
        options = re.findall(r"dict\(num_warps=(\d+), enable_fp_fusion=(\w+)\)", text)
        if options != [(str(NUM_WARPS), "False")]:
            problems.append(f"{path.name}: CUDA launch options {options}, the check builds "
                            f"num_warps={NUM_WARPS}, enable_fp_fusion=False")
    problems += [f"{k}: launched by a rule's triton*.py but missing from check.CHOICES"
                for k in launches if k not in CHOICES]
    problems += [f"{k}: in check.CHOICES but not launched by any rule's triton*.py"
                 for k in CHOICES if k not in launches]
    for name, passed in launches.items():
        choices = CHOICES.get(name)
        if choices is None:
            continue
        if set(passed) != set(choices):
            problems.append(f"{name}: the launch passes {sorted(passed)}, check.CHOICES lists "
                            f"{sorted(choices)}")
        for flag, source in passed.items():
            values = choices.get(flag, ())
            try:
                literal = (ast.literal_eval(source),)
            except ValueError:
                literal = None
            if source.endswith(".is_cuda") and values != (True,):
                problems.append(f"{name}: {flag}={source} is True on a GPU, CHOICES has {values}")
            elif literal is not None and values != literal:
                problems.append(f"{name}: {flag}={source} is a constant, CHOICES has {values}")
            elif (not source.endswith(".is_cuda") and literal is None and len(values) < 2):
                problems.append(f"{name}: {flag}={source} can take several values, CHOICES has "
                                f"{values}")
        if kernels is not None and name in kernels:
            kernel = kernels[name]
            consts = {kernel.arg_names[i] for i in kernel.constexprs} - {"BLOCK"}
            if consts != set(choices):
                problems.append(f"{name}: the kernel's tl.constexpr are {sorted(consts)}, "
                                f"check.CHOICES lists {sorted(choices)}")
            missing = [p for p in F32_POINTERS.get(name, ()) if p not in kernel.arg_names]
            if missing:
                problems.append(f"{name}: F32_POINTERS names {missing}, not arguments of it")
    return problems


def launched_block(kernel: str) -> int:
    """The ``BLOCK`` the operators launch ``kernel`` with (the replay's own ``BLOCK`` or
    :data:`.lib.BLOCK`)."""
    found = modules()
    source = found["na.triton_replay"] if kernel == "na_replay_kernel" else found["lib"]
    return int(source.BLOCK)


def _kernels() -> dict[str, Any]:
    """Every kernel named in :data:`CHOICES`, from the rules' ``triton*`` modules."""
    found = {}
    for module in modules().values():
        for name in CHOICES:
            if hasattr(module, name):
                found[name] = getattr(module, name)
    return found


def kernel_files() -> list[Path]:
    """The rules' ``triton*.py`` files (where the kernels are launched)."""
    rules = Path(__file__).resolve().parent.parent
    return [rules / rule / f"{name}.py" for rule in rules_with_kernels()
            for name in sorted(p.stem for p in (rules / rule).glob("triton*.py"))]


def modules() -> dict[str, Any]:
    """:func:`spikegrad.rules.triton_kernels.modules` and :mod:`.lib` (as ``"lib"``)."""
    from spikegrad.rules.triton_kernels import lib  # imports Triton

    return {**kernel_modules(), "lib": lib}


def variants(only: Sequence[str] | None = None) -> list[Variant]:
    """Every build the operators can launch on a GPU: each kernel's flag combinations
    (:data:`CHOICES`) × storage type, plus, for the replay under half storage, ``u`` float32
    (the first-use probe's call) besides ``u`` in the storage type (the torch forward's ``u``).

    Args:
        only: kernel names to keep (default: all).
    """
    out = []
    for name, choices in CHOICES.items():
        if only and name not in only:
            continue
        for _, short in DTYPES:
            for values in itertools.product(*choices.values()):
                flags = tuple(zip(choices, values, strict=True))
                out.append(Variant(name, short, flags))
                if name == "na_replay_kernel" and short != "fp32":
                    out.append(Variant(name, short, flags, u_fp32=True))
    return out


def expected_count(only: Sequence[str] | None = None) -> int:
    """``len(variants(only))`` from the products of :data:`CHOICES` alone."""
    total = 0
    for name, choices in CHOICES.items():
        if not only or name in only:
            n = 1
            for values in choices.values():
                n *= len(values)
            total += n * (len(DTYPES) + (len(DTYPES) - 1 if name == "na_replay_kernel" else 0))
    return total


def signature(kernel: Any, variant: Variant, block: int) -> tuple[dict[str, str], dict[str, Any]]:
    """Triton's ``(signature, constexprs)`` of ``variant`` as the operators launch it."""
    store = "*" + variant.dtype
    flags = dict(variant.flags)
    consts = {kernel.arg_names[i]: flags.get(kernel.arg_names[i]) for i in kernel.constexprs}
    consts["BLOCK"] = block
    sig = {}
    for n in kernel.arg_names:
        if n in consts:
            sig[n] = "constexpr"
        elif n.endswith("_ptr"):
            sig[n] = "*fp32" if n in F32_POINTERS[variant.kernel] else store
        else:
            sig[n] = "i32" if n in _INTS else "fp32"
    if variant.kernel == "na_replay_kernel":
        if flags["HAS_CHANGED"]:
            sig["ch_ptr"] = "*u8"  # changed.view(torch.uint8); else c itself
        if variant.u_fp32:
            sig["u_ptr"] = "*fp32"
    return sig, consts


_TOOLS: dict[str, str | None] = {}


def _tool(name: str) -> str | None:
    """A CUDA tool bundled with Triton (``ptxas``, ``cuobjdump``), else one on ``PATH``."""
    if name not in _TOOLS:
        from triton.backends.nvidia import compiler

        bundled = Path(compiler.__file__).with_name("bin") / name
        _TOOLS[name] = str(bundled) if bundled.exists() else shutil.which(name)
    return _TOOLS[name]


def _setup_worker(cache_root: str) -> None:
    """A fresh Triton cache (every variant compiled, ``ptxas`` run) and ``ptxas``'s log."""
    from triton import knobs

    knobs.cache.dir = tempfile.mkdtemp(prefix="cache-", dir=cache_root)
    knobs.nvidia.dump_ptxas_log = True


def _resources(cubin: bytes, workdir: str) -> dict[str, int]:
    """``REG``, ``STACK``, ``SHARED``, ``LOCAL`` of the cubin (``cuobjdump -res-usage``)."""
    tool = _tool("cuobjdump")
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin", dir=workdir, delete=False) as f:
        f.write(cubin)
    try:
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True,
                             check=False)
    finally:
        os.remove(f.name)
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", res.stdout)}


def compile_variant(job: tuple[Variant, int, int | None]) -> Record:
    """Compile one variant to a cubin for one architecture and judge it (the pool's task;
    ``block`` ``None``: as launched)."""
    variant, arch, block = job
    block = launched_block(variant.kernel) if block is None else block
    rec = Record(variant.kernel, variant.label(), variant.dtype, arch, block,
                 flags=dict(variant.flags) | ({"u": "fp32"} if variant.u_fp32 else {}))
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = _kernels()[variant.kernel]
    sig, consts = signature(kernel, variant, block)
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            out = triton.compile(triton.compiler.ASTSource(fn=kernel, signature=sig,
                                                           constexprs=consts),
                                 target=GPUTarget("cuda", arch, 32),
                                 options={"enable_fp_fusion": False, "num_warps": NUM_WARPS})
    except Exception as exc:  # noqa: BLE001 - a compile error is this check's finding
        rec.seconds = time.perf_counter() - start
        text = str(exc)
        stderr = text.split("`ptxas` stderr:", 1)[-1] if "`ptxas` stderr:" in text else text
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()][:3]
        rec.why = f"compile error ({type(exc).__name__}): " + " | ".join(lines)[:300]
        return rec
    rec.seconds = time.perf_counter() - start
    text = log.getvalue()
    spills = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                        r"loads", text)
    regs = [int(r) for r in re.findall(r"Used (\d+) registers", text)]
    cubin = out.asm.get("cubin", b"")
    res = _resources(cubin, knobs_dir()) if cubin else {}
    if spills:
        rec.stack = max(int(s[0]) for s in spills)
        rec.spill_stores = sum(int(s[1]) for s in spills)
        rec.spill_loads = sum(int(s[2]) for s in spills)
    rec.registers = res.get("REG", max(regs) if regs else None)
    rec.shared = max(int(out.metadata.shared), res.get("SHARED", 0))
    problems = []
    if cubin[:4] != b"\x7fELF":
        problems.append("no cubin")
    elif int.from_bytes(cubin[48:52], "little") & 0xFF != arch:
        problems.append(f"the cubin is for sm_{int.from_bytes(cubin[48:52], 'little') & 0xFF}")
    if not spills or rec.registers is None:
        problems.append("no ptxas resource report (a cached build?)")
    if rec.spill_stores or rec.spill_loads:
        problems.append(f"register spill: {rec.spill_stores} bytes spill stores, "
                        f"{rec.spill_loads} bytes spill loads ({rec.registers} registers, "
                        f"{rec.stack} bytes stack frame)")
    if rec.registers is not None and rec.registers > MAX_REGISTERS:
        problems.append(f"{rec.registers} registers > {MAX_REGISTERS}")
    if rec.shared > MAX_SHARED.get(arch, MAX_SHARED[80]):
        problems.append(f"{rec.shared} bytes shared memory > {MAX_SHARED.get(arch)}")
    if regs and res.get("REG") is not None and max(regs) != res["REG"]:
        problems.append(f"ptxas reported {max(regs)} registers, the cubin has {res['REG']}")
    ptx_text = out.asm.get("ptx", "")
    problems += [f"{bad} in the PTX" for bad in _BAD_PTX if bad in ptx_text]
    rec.ok, rec.why = not problems, "; ".join(problems)
    return rec


def _compile_chunk(jobs: list[tuple[Variant, int, int | None]]) -> list[Record]:
    return [compile_variant(job) for job in jobs]


def knobs_dir() -> str:
    """The directory of this process's Triton cache (scratch files go there)."""
    from triton import knobs

    return str(knobs.cache.dir)


def cubin(archs: Sequence[int] = ARCHS, block: int | None = None,
          only: Sequence[str] | None = None, jobs: int | None = None,
          fail_fast: bool = False) -> tuple[list[Record], float]:
    """Compile every variant (:func:`variants`) to a cubin for each of ``archs``.

    Each variant is compiled from scratch (a temporary Triton cache) by Triton's compiler and
    its bundled ``ptxas`` (``-v``: registers, stack, spill bytes; read back from the cubin by
    ``cuobjdump -res-usage``); shared memory is Triton's allocation. No GPU is needed.

    Args:
        archs: compute capabilities (80: A100, 90: H100, built as sm_90a by Triton).
        block: ``BLOCK`` (default ``None``: as the operators launch, 128; an over-large one
            shows that the check fails).
        only: kernel names to compile (default: all).
        jobs: worker processes (default: the CPUs this process may use).
        fail_fast: stop at the first failed build (the builds not started are left out).

    Returns:
        ``(records, seconds)``: one :class:`Record` per variant and architecture (plus one
        failed record per disagreement of :data:`CHOICES` with the launches), and the wall time.
    """
    unknown = sorted(set(only or ()) - set(CHOICES))
    if unknown:
        raise ValueError(f"unknown kernels {unknown}; known: {sorted(CHOICES)}")
    start = time.perf_counter()
    records = [Record(p.split(":")[0], "-", "-", 0, block or 0, why=p)
               for p in choice_problems(_kernels())]
    todo = [(v, arch, block) for v in variants(only) for arch in archs]
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    jobs = max(1, min(jobs, len(todo)))
    root = tempfile.mkdtemp(prefix="spikegrad-cubin-")
    try:
        if jobs == 1:
            _setup_worker(root)
            for job in todo:
                records.append(compile_variant(job))
                if fail_fast and not records[-1].ok:
                    break
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_setup_worker, initargs=(root,)) as pool:
                chunks = [todo[i:i + 4] for i in range(0, len(todo), 4)]
                futures = [pool.submit(_compile_chunk, chunk) for chunk in chunks]
                for future in futures:  # in order: the table follows the enumeration
                    records += future.result()
                    if fail_fast and not all(r.ok for r in records):
                        for f in futures:
                            f.cancel()
                        break
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return records, time.perf_counter() - start


def _spills(r: Record) -> str:
    return "?" if r.spill_stores is None else f"{r.spill_stores}/{r.spill_loads}"


def table(records: Sequence[Record], rows: bool = True) -> str:
    """The records as text (at most 120 columns): one row per variant and architecture (if
    ``rows``), then a summary per kernel and architecture."""
    lines = []
    if rows:
        lines.append(f"{'kernel':<17} {'variant (flags set; +X: HAS_X)':<52} {'type':<4} "
                     f"{'arch':<5} {'regs':>4} {'spills st/ld':>12} {'smem':>6} status")
        for r in records:
            regs = "?" if r.registers is None else r.registers
            smem = "?" if r.shared is None else r.shared
            lines.append(f"{r.kernel:<17} {r.variant:<52} {r.dtype:<4} {'sm_' + str(r.arch):<5} "
                         f"{regs:>4} {_spills(r):>12} {smem:>6} {'ok' if r.ok else 'FAIL'}")
            if not r.ok:
                lines += textwrap.wrap(r.why, 116, initial_indent="    ",
                                       subsequent_indent="    ")
        lines.append("")
    lines.append(f"{'kernel':<17} {'arch':<5} {'builds':>6} {'failed':>6} {'regs min-max':>12} "
                 f"{'max spills st/ld':>16} {'max smem':>8} {'max stack':>9} {'compile s':>9}")
    keys = sorted({(r.kernel, r.arch) for r in records if r.arch},
                  key=lambda k: (list(CHOICES).index(k[0]) if k[0] in CHOICES else 99, k[1]))
    for kernel, arch in keys:
        group = [r for r in records if (r.kernel, r.arch) == (kernel, arch)]
        regs = [r.registers for r in group if r.registers is not None]
        st = [r.spill_stores for r in group if r.spill_stores is not None]
        ld = [r.spill_loads for r in group if r.spill_loads is not None]
        rng = f"{min(regs)}-{max(regs)}" if regs else "?"
        sp = f"{max(st)}/{max(ld)}" if st else "?"
        smem = max((r.shared or 0) for r in group)
        stack = max((r.stack or 0) for r in group)
        secs = sum(r.seconds for r in group)
        lines.append(f"{kernel:<17} {'sm_' + str(arch):<5} {len(group):>6} "
                     f"{sum(not r.ok for r in group):>6} {rng:>12} {sp:>16} {smem:>8} "
                     f"{stack:>9} {secs:>9.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Without ``--cubin``: the PTX and graph checks (print ``ptx ok <n>`` and
    ``graphs ok <n>``). With ``--cubin``: the cubin table; exit status 1 on any failure."""
    parser = argparse.ArgumentParser(prog="python -m spikegrad.rules.triton_kernels.check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubin", action="store_true",
                        help="compile every variant to a cubin (registers, spills, shared memory)")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS),
                        help="compute capabilities (default: 80 90)")
    parser.add_argument("--block", type=int, default=None,
                        help="BLOCK to compile with (default: as launched, lib.BLOCK)")
    parser.add_argument("--only", nargs="+", choices=sorted(CHOICES), metavar="KERNEL",
                        help="compile only these kernels")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes")
    parser.add_argument("--json", metavar="PATH", help="write the records to PATH as JSON")
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first failed build")
    parser.add_argument("--summary", action="store_true",
                        help="print failures and the per-kernel summary, not every variant")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
        return 2
    if not args.cubin:
        print("ptx ok", ptx())
        print("graphs ok", graphs())
        return 0
    import triton

    records, seconds = cubin(args.arch, args.block, args.only, args.jobs, args.fail_fast)
    failed = [r for r in records if not r.ok]
    print(table(records, rows=not args.summary))
    expected = expected_count(args.only) * len(args.arch)
    built = sum(r.arch != 0 for r in records)
    blocks = sorted({r.block for r in records if r.arch})
    print(f"\n{built} builds ({expected} expected: {expected_count(args.only)} variants x "
          f"{len(args.arch)} archs), BLOCK={'/'.join(map(str, blocks))}, "
          f"num_warps={NUM_WARPS}, triton "
          f"{triton.__version__}, ptxas {_tool('ptxas')}; {seconds:.1f} s wall"
          + ("; stopped at the first failure" if args.fail_fast and built < expected else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"seconds": seconds, "block": blocks, "archs": args.arch,
             "expected": expected, "triton": triton.__version__,
             "records": [asdict(r) for r in records]}, indent=1))
    if failed:
        print(f"\nFAILED: {len(failed)} of {len(records)} builds")
        for r in failed:
            print("  " + r.message())
        return 1
    print(f"cubin ok {built}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
