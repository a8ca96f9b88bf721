"""The neuron classes users import: ``from spikegrad import neurons``.

Imports are lazy: touching ``neurons.ResetTermLeaky`` imports snntorch only, touching
``neurons.ResetTermLIFNode`` imports spikingjelly only; importing one host never imports the
other. Missing hosts raise an ImportError saying what to install.
"""

from __future__ import annotations

import importlib
from typing import Any

_SNNTORCH = ("ResetTermLeaky", "HTDGLIFLeaky", "MultiStrengthLeaky")
_LOCATIONS = {name: ("spikegrad.neurons.snntorch", name) for name in _SNNTORCH}
_LOCATIONS["NALeaky"] = ("spikegrad.neurons.snntorch_na", "NALeaky")
for _name in ("ResetTermLIFNode", "NALIFNode", "HTDGLIFNode", "MultiStrengthIFNode"):
    _LOCATIONS[_name] = ("spikegrad.neurons.spikingjelly", _name)
_LOCATIONS["reset_net"] = ("spikegrad.adapters.spikingjelly", "reset_net")
_LOCATIONS["Leaky"] = ("spikegrad.neurons.snntorch_step", "Leaky")
_LOCATIONS["Node"] = ("spikegrad.neurons.spikingjelly_step", "Node")
_LOCATIONS["reset_states"] = ("spikegrad.adapters.snntorch", "reset_states")

__all__ = sorted(_LOCATIONS)


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'spikegrad.neurons' has no attribute {name!r}")
    module, attr = _LOCATIONS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
