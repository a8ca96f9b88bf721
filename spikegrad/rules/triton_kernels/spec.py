"""What the Triton kernels need to know before Triton is imported.

* :func:`available`: whether the kernels can run for a device and dtype, and if not, why;
* float32 constants exactly as torch rounds a Python scalar (:func:`f32`, :func:`f32_div`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import struct
import sys

import torch

__all__ = ["DTYPES", "SIGMOID", "ATAN", "available", "device_problem",
           "interpreting", "triton_problem", "f32", "f32_div"]

#: storage dtypes of the kernels (arithmetic is float32 for all of them)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: surrogate kinds as the kernels know them (a ``tl.constexpr``)
SIGMOID, ATAN = 0, 1


def f32(value: float) -> float:
    """``value`` rounded to float32 (round to nearest), as torch casts a Python scalar."""
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def f32_div(a: float, b: float) -> float:
    """``float32(a) / float32(b)`` computed in float32 (a kernel constant such as ``1/τs``)."""
    return float(torch.tensor(f32(a), dtype=torch.float32) / torch.tensor(f32(b),
                                                                           dtype=torch.float32))



def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``).

    Decided when the kernels are defined (the first call of an entry point imports them): the
    variable must be set before that.
    """
    kernels = sys.modules.get("spikegrad.rules.triton_kernels.lib")
    if kernels is not None:
        return bool(kernels.INTERPRETED)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_problem() -> str | None:
    """Why Triton cannot be imported (``None`` if it can)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton; it comes with CUDA builds of torch)"
    try:
        importlib.import_module("triton.language")
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised here
        return f"triton cannot be imported ({type(exc).__name__}: {exc})"
    return None


def available(device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> str | None:
    """``None`` if the Triton kernels can run on ``device`` with storage ``dtype``, else why.

    Args:
        device: ``"cuda"`` (default when ``None``), ``"cuda:1"``, ``"cpu"`` ... CPU tensors run
            only in Triton's interpreter (``TRITON_INTERPRET=1`` set before the kernels are
            first imported; slow, for tests).
        dtype: the tensors' dtype (``None``: not checked); float32, float16 or bfloat16.

    Returns:
        ``None`` when usable, else a sentence saying why not.
    """
    problem = triton_problem()
    return problem if problem is not None else device_problem(device, dtype)


def device_problem(device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> str | None:
    """:func:`available` without the Triton import check (for callers that imported it)."""
    if dtype is not None and dtype not in DTYPES:
        return f"dtype {dtype} has no Triton kernel (float32, float16, bfloat16)"
    dev = torch.device("cuda" if device is None else device)
    if dev.type == "cpu":
        if not interpreting():
            return ("CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 before "
                    "the kernels are first imported (tests only: it is slow)")
        return None
    if dev.type != "cuda":
        return f"the Triton kernels run on CUDA tensors (or CPU ones when interpreting), not {dev}"
    if not torch.cuda.is_available():
        return ("no CUDA device (torch.cuda.is_available() is False): the Triton kernels run on "
                "CUDA tensors, or on CPU ones under TRITON_INTERPRET=1")
    return None
