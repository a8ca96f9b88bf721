"""The seed-002 snntorch tutorial network, with the neuron of your choice in its per-step loop.

snntorch's tutorial 5 (the network of seed 002): 784-1000-10 fully connected, ``snn.Leaky(beta=
0.95)`` in both layers, the image fed as the same input at each of 25 steps, Adam (lr 5e-4,
betas 0.9/0.999), batch 128. Loss: snntorch's rate cross-entropy ``functional.ce_rate_loss()``
(the CE of the output spikes at every step); readout: the spike count, as
``functional.accuracy_rate``. The rule scripts next to this file change only what their rule
needs; run one with ``--help``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import snntorch as snn
import snntorch.functional as SF
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/common.py
import common  # noqa: E402

BETA = 0.95


def host_neuron(output: bool, recipe: bool) -> nn.Module:
    """snntorch's own neuron, as in the tutorial."""
    return snn.Leaky(beta=BETA)


class TutorialNet(nn.Module):
    """Tutorial 5's network; ``make_neuron(output)`` gives each layer its neuron."""

    def __init__(self, make_neuron: Callable[[bool], nn.Module], outputs: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 1000)
        self.lif1 = make_neuron(False)
        self.fc2 = nn.Linear(1000, outputs)  # BPSA/BPTA's voting layer: 10 * recipes.VOTES
        self.lif2 = make_neuron(True)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, 784]`` -> the output layer's spikes (or traces) ``[T, B, outputs]``."""
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        for x in x_seq:  # the tutorial's loop over time steps
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
        return torch.stack(spk2_rec)


HOST = common.Host(
    name="snntorch-tutorial",
    build=lambda make_neuron, votes, args: TutorialNet(make_neuron, 10 * votes),
    loss=SF.ce_rate_loss(),
    predict=lambda out: out.sum(0).argmax(1),  # the largest spike count
    image_shape=(784,), T=25, batch_size=128, lr=5e-4,
    describe=lambda args: ", 784-1000-10")


#: ``main = example(__name__, rule, neuron, ...)``: a rule script's ``main(argv=None)``, run at
#: once when the script is executed (see :func:`common.example`)
example = functools.partial(common.example, HOST)
