"""What the hand-written Triton kernels share; the kernels themselves sit with their rules.

Each rule with hand-written kernels has a ``triton`` module in its folder (``@triton.jit``
kernels, ``torch.library.triton_op`` operators differentiable through ``register_autograd``, so
``torch.compile``/Inductor sees the kernels on CUDA, and an entry point ``sequence``; inputs
``[T, *]`` in float32, float16 or bfloat16 with float32 arithmetic, states broadcast to one step
``[*]``):

* :func:`spikegrad.rules.reset_term.triton.sequence` ``(c, v0, a0, spec) -> (out, v)``, ``spec``
  a :class:`~spikegrad.rules.reset_term.spec.ResetTermSpec`;
* :func:`spikegrad.rules.na.triton.sequence` ``(c, cfg, rescale=None, u_init=None, a_init=None)
  -> (out, u)`` and NA's neighbor replay :func:`spikegrad.rules.na.triton_replay.na_replay`;
* :func:`spikegrad.rules.bpsta.triton.sequence` ``(x, v0, cfg) -> (o, v)``;
* :func:`spikegrad.rules.multistrength.triton.sequence` ``(z, v0, cfg) -> (theta, v)``.

Here: :mod:`.spec` (what is known before Triton is imported: :func:`available`, float32
constants), :mod:`.lib` (the jit helpers and launch code every kernel uses; imports Triton),
:mod:`.check` (GPU-free checks: PTX/cubins for sm_80/sm_90, ``torch.compile`` graphs) and
:func:`modules` (every rule's ``triton`` module, found by its folder). Importing this package
does not import Triton (set ``TRITON_INTERPRET=1`` before a ``triton`` module is first
imported to run the kernels on CPU tensors in Triton's interpreter, for tests).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from spikegrad.rules.triton_kernels.spec import available, triton_problem

__all__ = ["available", "triton_problem", "rules_with_kernels", "modules"]

_RULES = Path(__file__).resolve().parent.parent


def rules_with_kernels() -> tuple[str, ...]:
    """The rule folders of ``spikegrad/rules`` that have a hand-written ``triton.py``."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules([str(_RULES)])
                        if info.ispkg and (_RULES / info.name / "triton.py").is_file()))


def modules() -> dict[str, ModuleType]:
    """Every rule's ``triton`` module (and NA's ``triton_replay``), imported (with Triton).

    Raises:
        ImportError: Triton is missing or broken (the message says which).
    """
    problem = triton_problem()
    if problem is not None:
        raise ImportError(f"spikegrad's Triton kernels: {problem}")
    found = {}
    for rule in rules_with_kernels():
        for name in sorted(p.stem for p in (_RULES / rule).glob("triton*.py")):
            found[f"{rule}.{name}"] = importlib.import_module(f"spikegrad.rules.{rule}.{name}")
    return found
