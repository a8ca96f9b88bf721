"""The host shim: generated kernel sources compiled as C++ and run on CPU tensors.

Not a user-facing implementation (one CPU thread walks every CUDA thread index in turn): it
exists so that machines without a GPU still run the kernels' arithmetic against the torch
reference. Sources are built with ``g++`` (``$CXX``) into one shared library per set of specs
(:func:`prepare` builds many at once: one compiler call), cached on disk under
``$SPIKEGRAD_KERNEL_CACHE`` (default ``~/.cache/spikegrad/host_kernels``), keyed by the source,
the flags and the compiler, and loaded with ``ctypes``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from spikegrad.rules.cupy_kernels.source import DIRECTIONS, DTYPES, KernelSpec

__all__ = ["FLAGS", "cache_dir", "compiler", "float16_problem", "prepare", "launch"]

#: IEEE arithmetic as torch's CPU kernels, with no FP contraction (no FMA) and no fast-math.
FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno")
_LOCK = threading.Lock()
_LOADED: dict[str, ctypes.CDLL] = {}  # spec digest -> library holding its kernels


def cache_dir() -> Path:
    """Where built host modules are kept."""
    default = Path.home() / ".cache" / "spikegrad" / "host_kernels"
    return Path(os.environ.get("SPIKEGRAD_KERNEL_CACHE", default))


def compiler() -> str | None:
    """The C++ compiler's path (``$CXX`` or ``g++``), or ``None`` if there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


@functools.cache
def _compiler_id(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else cxx


@functools.cache
def _float16_problem(cxx: str) -> str | None:
    probe = ("#if !defined(__FLT16_MAX__)\n#error no _Float16\n#endif\n"
             "_Float16 h(float x) { return x; }\n")
    res = subprocess.run([cxx, "-x", "c++", "-std=c++17", "-fsyntax-only", "-"], input=probe,
                         capture_output=True, text=True, check=False)
    if res.returncode == 0:
        return None
    return (f"{_compiler_id(cxx)} has no _Float16 (GCC >= 12 or Clang >= 15 on x86-64): the "
            "host shim runs the float32 kernels only")


def float16_problem() -> str | None:
    """Why the host shim cannot run float16 kernels (``None`` if it can)."""
    cxx = compiler()
    return "no C++ compiler for the kernels' host shim" if cxx is None else _float16_problem(cxx)


def prepare(specs: Iterable[KernelSpec]) -> None:
    """Build (or load from the cache) one library holding the kernels of all ``specs``.

    Raises:
        RuntimeError: no C++ compiler, or the build failed (with the compiler's output).
    """
    with _LOCK:
        todo = {s.digest: s for s in specs if s.digest not in _LOADED}
        if not todo:
            return
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("the kernel host shim needs a C++ compiler (g++ or $CXX)")
        source = "".join(todo[d].source for d in sorted(todo))
        key = hashlib.sha256("\n".join([source, *FLAGS, _compiler_id(cxx)]).encode())
        lib = cache_dir() / f"sg_kernels_{key.hexdigest()[:16]}.so"
        if not lib.exists():
            lib.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
                src, out = Path(tmp) / "kernels.cpp", Path(tmp) / "kernels.so"
                src.write_text(source)
                res = subprocess.run([cxx, *FLAGS, str(src), "-o", str(out)],
                                     capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    raise RuntimeError(f"host shim build failed:\n{res.stderr[-4000:]}")
                os.replace(out, lib)  # atomic: concurrent builders leave one complete file
        handle = ctypes.CDLL(str(lib))
        for digest in todo:
            _LOADED[digest] = handle


def _argtypes(spec: KernelSpec, direction: str) -> list[Any]:
    kinds = [p.kind for p in spec.params(direction)]
    return [ctypes.c_int if k == "flag" else ctypes.c_void_p for k in kinds] + [
        ctypes.c_longlong, ctypes.c_longlong]


def launch(spec: KernelSpec, direction: str, dtype: str, steps: int, n: int,
           args: Mapping[str, torch.Tensor | int]) -> None:
    """Run one kernel over all ``n`` thread indices on CPU tensors (in place)."""
    if direction not in DIRECTIONS or dtype not in DTYPES:
        raise ValueError(f"unknown kernel {direction!r}/{dtype!r}")
    if dtype == "f16" and (problem := float16_problem()) is not None:
        raise RuntimeError(problem)
    prepare([spec])
    fn = getattr(_LOADED[spec.digest], spec.kernel_name(direction, dtype) + "_host")
    fn.argtypes = _argtypes(spec, direction)
    fn.restype = None
    values = [args[p.name] if p.kind == "flag" else args[p.name].data_ptr()
              for p in spec.params(direction)]
    fn(*values, steps, n)
