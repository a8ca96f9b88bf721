"""Moved to :mod:`spikegrad.rules.dispatch`, the one dispatcher of every rule (torch, cpp,
Triton, CuPy); this name stays importable and is the same module object, so that code (and
tests) using ``spikegrad.rules.cupy_kernels.dispatch`` read and patch that one dispatcher."""

import sys

from spikegrad.rules import dispatch as _dispatch

sys.modules[__name__] = _dispatch
