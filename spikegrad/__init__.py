"""spikegrad: gradient rules for spiking neural networks, as drop-in neurons for snntorch and
spikingjelly.

Layers (see the README):

* :mod:`spikegrad.rules` -- the math, pure torch, time-major ``[T, B, *]``.
* :mod:`spikegrad.adapters` -- translations between a host framework and the rules.
* :mod:`spikegrad.neurons` -- the classes users import (lazy: importing one host never imports
  the other).
"""

__version__ = "0.1.0"
