"""Registering spikegrad's torch operators: one helper for every ``ops_*`` module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: the operators' definitions, kept alive (a definition's Library deregisters it when collected)
_DEFINITIONS: dict[str, Any] = {}


def registrar(bodies: dict[str, Callable[..., Any]]
              ) -> Callable[[str, str], Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """``_op(name, schema)``: a decorator that registers ``fn`` as ``spikegrad::<name>`` (any
    device), records it in ``bodies`` (the plain torch body, for tests on ``meta`` tensors) and
    returns ``fn``."""
    def op(name: str, schema: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            _DEFINITIONS[name] = torch.library.custom_op(f"spikegrad::{name}", fn,
                                                         mutates_args=(), schema=schema)
            bodies[name] = fn
            return fn

        return register

    return op
