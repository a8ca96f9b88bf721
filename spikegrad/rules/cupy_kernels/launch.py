"""Launching a generated kernel: CuPy on CUDA tensors, the host shim on CPU tensors.

Arguments are passed by name (the spec lists them); tensors must be contiguous and share one
device. On CUDA the kernel runs on torch's current stream (``cupy.cuda.ExternalStream``), the
tensors cross over through DLPack, one thread per neuron in blocks of :data:`BLOCK`. Compiled
modules are cached per spec and device (and by CuPy on disk).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import torch

from spikegrad.rules.cupy_kernels import dispatch, host
from spikegrad.rules.cupy_kernels.source import KernelSpec

__all__ = ["BLOCK", "NVRTC_OPTIONS", "run"]

BLOCK = 128
#: no FMA contraction: the same rounding as torch's separate multiply and add
NVRTC_OPTIONS = ("--fmad=false",)
_MODULES: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()
_DTYPE = {torch.float32: "f32", torch.float16: "f16"}


def _check(spec: KernelSpec, direction: str, args: Mapping[str, Any]) -> tuple[str, Any]:
    dtype = device = None
    for p in spec.params(direction):
        value = args[p.name]
        if p.kind == "flag":
            continue
        if not value.is_contiguous():
            raise ValueError(f"kernel argument {p.name} must be contiguous")
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


def _cupy_function(spec: KernelSpec, direction: str, dtype: str, index: int) -> Any:
    cp = dispatch._import_cupy()
    with _LOCK:
        module = _MODULES.get((spec.digest, index))
        if module is None:
            with cp.cuda.Device(index):
                module = cp.RawModule(code=spec.source, options=NVRTC_OPTIONS)
            _MODULES[(spec.digest, index)] = module
    return module.get_function(spec.kernel_name(direction, dtype))


def run(spec: KernelSpec, direction: str, steps: int, n: int,
        args: Mapping[str, torch.Tensor | int]) -> None:
    """Run ``spec``'s ``direction`` kernel for ``n`` neurons over ``steps`` time steps."""
    dtype, device = _check(spec, direction, args)
    if n == 0 or steps == 0:
        return
    if device.type == "cpu":
        host.launch(spec, direction, dtype, steps, n, args)
        return
    problem = dispatch.cupy_problem()
    if problem is not None:
        raise problem[0](problem[1])
    import numpy as np

    cp = dispatch._import_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    fn = _cupy_function(spec, direction, dtype, index)
    with cp.cuda.Device(index):
        stream = cp.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
    with cp.cuda.Device(index), stream:
        values = [np.int32(args[p.name]) if p.kind == "flag"
                  else cp.from_dlpack(args[p.name].detach()) for p in spec.params(direction)]
        fn(((n + BLOCK - 1) // BLOCK,), (BLOCK,), (*values, np.int64(steps), np.int64(n)))
