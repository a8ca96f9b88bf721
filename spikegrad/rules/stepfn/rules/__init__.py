"""spikegrad's own LIF-family rules written as step rules, one file per rule.

Each step *is* the rule's reference step, so the generated kernels derive from the
specification itself and are tested against it and against the hand-written kernels.

A rule file defines its :class:`~spikegrad.rules.stepfn.StepRule` subclasses and
``EXAMPLES``, a dict of named configurations. Every module in this folder is found by
:func:`examples`, and the shared contract tests (interpreter parity in every storage type, the
CUDA C through the host shim, both hosts' neurons) run every configuration it returns: adding a
rule means adding one file here, without editing the tests.
"""

from __future__ import annotations

import importlib
import pkgutil

from spikegrad.rules.stepfn.contract import StepRule
from spikegrad.rules.stepfn.rules.htdglif import HTDGLIF
from spikegrad.rules.stepfn.rules.multistrength import MultiStrength
from spikegrad.rules.stepfn.rules.reset_term import ResetTerm

__all__ = ["ResetTerm", "HTDGLIF", "MultiStrength", "examples"]


def examples() -> dict[str, StepRule]:
    """Every configuration of every rule file in this folder (``EXAMPLES``), by name."""
    out: dict[str, StepRule] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, rule in getattr(module, "EXAMPLES", {}).items():
            if name in out:
                raise ValueError(f"two rule files define the example {name!r}")
            out[name] = rule
    return out
