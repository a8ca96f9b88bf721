"""A user-defined rule (``examples/adaptive_lif.py``) in the seed-002 snntorch tutorial.

Change ``snn.Leaky(beta=0.95)`` to ``neurons.Leaky(AdaptiveLIF())``: the per-step loop stays;
``mem`` is the rule's first state. ``--recipe`` adds nothing (the tutorial's own loss).
"""

import sys
from pathlib import Path

from tutorial import example

from spikegrad import neurons

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaptive_lif import AdaptiveLIF  # noqa: E402


def neuron(output: bool, recipe: bool):
    return neurons.Leaky(AdaptiveLIF())


main = example(__name__, "adaptive-lif", neuron)
