"""The dispatcher: the only place that picks the torch reference or the CuPy kernels.

``backend="torch"`` always runs the reference; ``"cupy"`` runs the fused kernels or raises with
the reason it cannot (CuPy missing: ImportError naming the package; no CUDA device, or a CuPy
that imports but cannot compile or launch a kernel there, found by a one-time probe per device:
RuntimeError; a rule the kernels do not cover, a CPU tensor or an unsupported dtype:
ValueError); ``"auto"`` runs the kernels where they can run and otherwise the reference,
recording why (:class:`Choice`). The kernels run in multi-step mode only.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

from spikegrad._checks import check_choice

__all__ = ["BACKENDS", "KERNEL_DTYPES", "INSTALL_HINT", "Choice", "cupy_problem",
           "check_backend", "select"]

BACKENDS = ("torch", "cupy", "auto")
KERNEL_DTYPES = (torch.float32, torch.float16)
INSTALL_HINT = ("pip install 'spikegrad[cupy]' (cupy-cuda13x, for torch built with CUDA 13) or "
                "'spikegrad[cupy12]' (cupy-cuda12x, CUDA 12), matching your torch build's "
                "torch.version.cuda")


@dataclass(frozen=True)
class Choice:
    """What ran (or will run) and, when it is not what was asked for, why.

    Args:
        implementation: ``"torch"`` or ``"cupy"``.
        reason: why ``"auto"`` (or a single-step call) uses the torch reference; ``None``
            when the implementation is the requested one.
    """

    implementation: str
    reason: str | None = None


@functools.cache
def _import_cupy() -> Any:
    """CuPy, or the exception its import raised (cached: imported once per process)."""
    if importlib.util.find_spec("cupy") is None:
        return ModuleNotFoundError("cupy")
    try:
        return importlib.import_module("cupy")
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised here
        return exc


#: the one-time probe: one thread writes 1.0 (compiles with NVRTC and launches)
_PROBE_SOURCE = 'extern "C" __global__ void sg_probe(float* p) { p[threadIdx.x] = 1.0f; }'


@functools.cache
def _probe(cp: Any, index: int) -> str | None:
    """Why a tiny kernel cannot be compiled and launched on device ``index`` (cached per CuPy
    module and device: run once), or ``None`` when it ran."""
    try:
        with cp.cuda.Device(index):
            kernel = cp.RawKernel(_PROBE_SOURCE, "sg_probe")
            buf = cp.zeros(1, dtype=cp.float32)
            kernel((1,), (1,), (buf,))
            wrote = float(cp.asnumpy(buf)[0])
    except Exception as exc:  # noqa: BLE001 - any failure: the kernels cannot run here
        return (f"cupy cannot compile or launch a kernel on cuda:{index} "
                f"({type(exc).__name__}: {exc}); the cupy package must match the driver and "
                f"torch.version.cuda={torch.version.cuda!r}: {INSTALL_HINT}")
    return None if wrote == 1.0 else f"a probe kernel on cuda:{index} did not run (wrote {wrote})"


def _device_index(device: torch.device | int | None) -> int:
    if isinstance(device, int):
        return device
    if device is None or device.index is None:
        return torch.cuda.current_device()
    return device.index


def cupy_problem(device: torch.device | int | None = None) -> tuple[type[Exception], str] | None:
    """``None`` if the kernels can launch on ``device`` (default: torch's current CUDA device),
    else ``(exception type, message)``. The first call per device compiles and launches a tiny
    kernel (cached), so a CuPy that imports but cannot compile or launch is reported here."""
    cp = _import_cupy()
    if isinstance(cp, ModuleNotFoundError):
        return ImportError, f"cupy is not installed ({INSTALL_HINT})"
    if isinstance(cp, Exception):
        return ImportError, (f"cupy cannot be imported ({type(cp).__name__}: {cp}); "
                             f"reinstall it: {INSTALL_HINT}")
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return RuntimeError, ("no CUDA device: this torch is a CPU-only build "
                                  "(torch.version.cuda is None); install a CUDA build of torch "
                                  "to run the CuPy kernels")
        return RuntimeError, ("no CUDA device: cupy is installed but torch.cuda.is_available() "
                              "is False (no visible GPU: check the driver and "
                              "CUDA_VISIBLE_DEVICES), and the CuPy kernels run on CUDA tensors")
    reason = _probe(cp, _device_index(device))
    return None if reason is None else (RuntimeError, reason)


def check_backend(backend: Any, *, step_mode: str, kernel: Any = None) -> None:
    """Validate a requested backend when it is set (constructor or ``node.backend = ...``).

    Args:
        backend: ``"torch"``, ``"cupy"`` or ``"auto"``.
        step_mode: the node's step mode (the kernels are multi-step).
        kernel: the node's kernel spec, or a string saying why its configuration has none, or
            ``None`` if not known yet (during construction: only the name and the step mode
            are checked then; the rest when the kernel is known).

    Raises:
        ValueError: unknown backend; ``"cupy"`` in single-step mode or for a configuration
            without kernels.
        ImportError: ``"cupy"`` without CuPy.
        RuntimeError: ``"cupy"`` without a CUDA device.
    """
    check_choice("backend", backend, BACKENDS)
    if backend != "cupy":
        return
    if step_mode != "m":
        raise ValueError(
            "backend='cupy' runs fused multi-step kernels and needs step_mode='m' "
            "(supported_backends is ('torch',) in single-step mode); use backend='torch' or "
            "'auto', or set step_mode='m' first"
        )
    if kernel is None:
        return
    if isinstance(kernel, str):  # the configuration first: installing CuPy would not help
        raise ValueError(f"backend='cupy' is unavailable: {kernel}; use backend='torch' or "
                         "'auto' (which falls back to the torch reference)")
    problem = cupy_problem()
    if problem is not None:
        raise problem[0](f"backend='cupy' is unavailable: {problem[1]}")


def select(backend: str, *, step_mode: str, kernel: Any, device: torch.device | None = None,
           dtype: torch.dtype | None = None, bypass: str | None = None,
           strict: bool = True) -> Choice:
    """Pick the implementation of one multi-step call.

    Args:
        backend: the node's ``backend``.
        step_mode: the node's step mode.
        kernel: the node's kernel spec, or a string saying why its configuration has none.
        device, dtype: the input's; ``None`` to predict (no device or dtype check).
        bypass: set when the call runs no rule at all (e.g. a warm-up pass-through): the torch
            path runs for every backend, with this as the reason.
        strict: raise when an explicit ``"cupy"`` cannot be honoured (``False``: report it as
            a fallback instead, for read-only queries).

    Returns:
        The :class:`Choice`.

    Raises:
        ImportError, RuntimeError, ValueError: as :func:`check_backend`, and ValueError for a
            CPU tensor or an unsupported dtype, when ``backend="cupy"`` and ``strict``.
    """
    if backend == "torch":
        return Choice("torch")
    if step_mode != "m":
        return Choice("torch", f"step_mode={step_mode!r}: the CuPy kernels are multi-step")
    if bypass is not None:
        return Choice("torch", bypass)
    reason: str | None = None
    error: type[Exception] = ValueError
    cuda = device is not None and device.type == "cuda"
    if isinstance(kernel, str):
        reason = kernel
    elif (problem := cupy_problem(device if cuda else None)) is not None:
        error, reason = problem
    elif device is not None and device.type != "cuda":
        reason = f"the input is on {device}: the CuPy kernels run on CUDA tensors"
    elif dtype is not None and dtype not in KERNEL_DTYPES:
        reason = f"dtype {dtype} has no CuPy kernel (float32, float16)"
    if reason is None:
        return Choice("cupy")
    if backend == "cupy" and strict:
        raise error(f"backend='cupy' cannot run this call: {reason}; use backend='torch' or "
                    "'auto'")
    return Choice("torch", reason)
