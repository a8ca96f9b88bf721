"""A user-defined rule (``examples/adaptive_lif.py``) in spikingjelly's Fashion-MNIST CSNN.

Each ``neuron.IFNode(...)`` becomes ``neurons.Node(AdaptiveLIF())``: both step modes; in
multi-step mode a CUDA run uses the kernels generated from the step. ``--recipe`` adds nothing.
"""

import sys
from pathlib import Path

from csnn import example

from spikegrad import neurons

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaptive_lif import AdaptiveLIF  # noqa: E402


def neuron(output: bool, recipe: bool):
    return neurons.Node(AdaptiveLIF())


main = example(__name__, "adaptive-lif", neuron)
