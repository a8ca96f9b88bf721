"""C text shared by every generated kernel: float literals and the device/host prelude.

The prelude makes one kernel source compile three ways: with NVRTC (CuPy), with ``nvcc`` and,
through a small host shim, as plain C++ (``g++``), where a launcher loops over the thread
indices so that a CPU test runs the kernels' arithmetic. Imports nothing from spikegrad (the
surrogates import :func:`c_float` from here).
"""

from __future__ import annotations

import math
import struct

__all__ = ["c_float", "PRELUDE"]


def c_float(value: float) -> str:
    """A C ``float`` literal that parses to exactly ``float32(value)`` (round to nearest).

    torch casts a Python scalar to the tensor's float32 before an elementwise op, so a
    kernel constant must be that float32 value, written with enough digits to round-trip.
    """
    f32 = struct.unpack("f", struct.pack("f", float(value)))[0]
    if not math.isfinite(f32):
        raise ValueError(f"kernel constant {value!r} is not a finite float32")
    return f"{f32:.9e}f"


#: Compiles as CUDA (``__CUDACC__``: NVRTC and nvcc) and as host C++ (the shim). Storage types
#: are ``float`` and ``sg_half`` (IEEE binary16 bits); all arithmetic is fp32.
#: ``SG_DIVS(x, b, inv_b)`` is "tensor / Python scalar" as torch computes it on each device:
#: CUDA multiplies by the float reciprocal, the CPU divides.
PRELUDE = r"""
#ifndef SG_PRELUDE
#define SG_PRELUDE
#if defined(__CUDACC__)
#define SG_GLOBAL extern "C" __global__
#define SG_DEVICE __device__ __forceinline__
typedef unsigned short sg_half;
SG_DEVICE float sg_load(const float* p, long long k) { return p[k]; }
SG_DEVICE float sg_load(const sg_half* p, long long k) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[k]));
  return f;
}
SG_DEVICE void sg_store(float* p, long long k, float x) { p[k] = x; }
SG_DEVICE void sg_store(sg_half* p, long long k, float x) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
  p[k] = h;
}
#define SG_DIVS(x, b, inv_b) ((x) * (inv_b))
#else  /* host shim: plain C++, one loop iteration per CUDA thread */
#include <math.h>
#include <stdint.h>
#include <string.h>
#define SG_GLOBAL static
#define SG_DEVICE static inline
struct sg_uint3 { unsigned int x, y, z; };
static thread_local sg_uint3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1};
typedef uint16_t sg_half;
SG_DEVICE float sg_load(const float* p, long long k) { return p[k]; }
SG_DEVICE void sg_store(float* p, long long k, float x) { p[k] = x; }
#if defined(__FLT16_MAX__)
SG_DEVICE float sg_load(const sg_half* p, long long k) {
  _Float16 h;
  memcpy(&h, p + k, sizeof h);
  return (float)h;
}
SG_DEVICE void sg_store(sg_half* p, long long k, float x) {
  const _Float16 h = (_Float16)x;  /* round to nearest even, as cvt.rn.f16.f32 */
  memcpy(p + k, &h, sizeof h);
}
#else  /* no _Float16: the float16 entry points trap (host.launch refuses them first) */
SG_DEVICE float sg_load(const sg_half*, long long) { __builtin_trap(); }
SG_DEVICE void sg_store(sg_half*, long long, float) { __builtin_trap(); }
#endif
#define SG_DIVS(x, b, inv_b) ((x) / (b))
#endif
#define SG_THREAD_INDEX \
  ((long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x)
SG_DEVICE float sg_relu(float x) { return x < 0.0f ? 0.0f : x; }
SG_DEVICE float sg_clamp(float x, float c) { return x > c ? c : (x < -c ? -c : x); }
#endif
"""
