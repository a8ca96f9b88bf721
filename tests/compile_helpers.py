"""Helpers shared by the torch.compile tests (tests/test_compile.py, test_compile_heldout.py)."""

from __future__ import annotations

import torch


def as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def forward_backward(fn, args, wrt, upstream=None, reset=None):
    """``fn(*args)``'s outputs (detached), the gradients of ``wrt`` under random upstream
    gradients (``upstream``, drawn from a fixed seed when ``None``) on the outputs that require
    grad, and those upstream gradients. ``reset`` (if given) runs first."""
    if reset is not None:
        reset()
    outs = as_tuple(fn(*args))
    if upstream is None:
        gen = torch.Generator().manual_seed(1234)
        upstream = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
    pairs = [(o, u) for o, u in zip(outs, upstream, strict=True) if o.requires_grad]
    grads = (torch.autograd.grad([o for o, _ in pairs], wrt, [u for _, u in pairs])
             if wrt else ())
    return [o.detach() for o in outs], grads, upstream
