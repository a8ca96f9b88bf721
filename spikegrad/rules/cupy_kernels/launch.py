"""Launching a generated kernel: CuPy on CUDA tensors, the host shim on CPU tensors.

Arguments are passed by name (the spec lists them); tensors must be contiguous and share one
device. On CUDA the kernel runs on torch's current stream (``cupy.cuda.ExternalStream``), the
tensors cross over through DLPack, one thread per neuron in blocks of :data:`BLOCK` (128
threads; ``ceil(N / BLOCK)`` blocks). Each kernel is compiled and loaded once per device, inside
``cupy.cuda.Device(index)`` of the tensors' device (and cached by CuPy on disk).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import torch

from spikegrad.rules import dispatch
from spikegrad.rules.cupy_kernels import host
from spikegrad.rules.cupy_kernels.source import KernelSpec

__all__ = ["BLOCK", "NVRTC_OPTIONS", "run"]

#: threads per block of every launch
BLOCK = 128
#: no FMA contraction, for the same rounding as torch's separate multiply and add
NVRTC_OPTIONS = ("--fmad=false",)
_MODULES: dict[tuple[str, int], Any] = {}  # (spec digest, device index) -> RawModule
_FUNCTIONS: dict[tuple[str, int], Any] = {}  # (kernel name, device index) -> compiled function
_LOCK = threading.Lock()
_DTYPE = {torch.float32: "f32", torch.float16: "f16"}


def _check(spec: KernelSpec, direction: str, args: Mapping[str, Any], steps: int,
           n: int) -> tuple[str, Any]:
    dtype = device = None
    for p in spec.params(direction):
        value = args[p.name]
        if p.kind == "flag":
            continue
        if not value.is_contiguous():
            raise ValueError(f"kernel argument {p.name} must be contiguous")
        size = n if p.size == "N" else steps * n
        if value.numel() != size:  # the kernel would read or write past its end
            raise ValueError(f"kernel argument {p.name} has {value.numel()} elements, expected "
                             f"{size} ({'N' if p.size == 'N' else 'T * N'}; T={steps}, N={n})")
        want = torch.float32 if p.kind in ("fin", "fout") else None
        if want is None:
            dtype = dtype or value.dtype
            want = dtype
        if value.dtype != want:
            raise TypeError(f"kernel argument {p.name}: dtype {value.dtype}, expected {want}")
        device = device or value.device
        if value.device != device:
            raise ValueError(f"kernel argument {p.name} is on {value.device}, not {device}")
    if dtype not in _DTYPE:
        raise TypeError(f"the kernels store float32 or float16, got {dtype}")
    return _DTYPE[dtype], device


def _cupy_function(cp: Any, spec: KernelSpec, name: str, index: int) -> Any:
    """The compiled kernel ``name`` on device ``index``: built (and its module loaded) once,
    inside ``cupy.cuda.Device(index)`` (CuPy compiles and loads lazily, on the current device)."""
    key = (name, index)
    fn = _FUNCTIONS.get(key)
    if fn is not None:
        return fn
    with _LOCK, cp.cuda.Device(index):
        fn = _FUNCTIONS.get(key)
        if fn is None:
            module = _MODULES.get((spec.digest, index))
            if module is None:
                module = cp.RawModule(code=spec.source, options=NVRTC_OPTIONS)
                _MODULES[(spec.digest, index)] = module
            fn = _FUNCTIONS[key] = module.get_function(name)
    return fn


def _stream_pointer(device: torch.device) -> int:
    """torch's current stream on ``device`` (the kernels are ordered with torch's work)."""
    return torch.cuda.current_stream(device).cuda_stream


def run(spec: KernelSpec, direction: str, steps: int, n: int,
        args: Mapping[str, torch.Tensor | int]) -> None:
    """Run ``spec``'s ``direction`` kernel for ``n`` neurons over ``steps`` time steps.

    Raises:
        ValueError, TypeError: an argument of the wrong size, dtype, layout or device.
    """
    dtype, device = _check(spec, direction, args, steps, n)
    if n == 0 or steps == 0:
        return
    if device.type == "cpu":
        host.launch(spec, direction, dtype, steps, n, args)
        return
    problem = dispatch.cupy_problem(device)
    if problem is not None:
        raise problem[0](problem[1])
    import numpy as np

    cp = dispatch._import_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    fn = _cupy_function(cp, spec, spec.kernel_name(direction, dtype), index)
    with cp.cuda.Device(index):
        stream = cp.cuda.ExternalStream(_stream_pointer(device))
        with stream:
            values = [np.int32(args[p.name]) if p.kind == "flag"
                      else cp.from_dlpack(args[p.name].detach()) for p in spec.params(direction)]
            fn(((n + BLOCK - 1) // BLOCK,), (BLOCK,), (*values, np.int64(steps), np.int64(n)))
