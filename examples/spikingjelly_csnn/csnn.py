"""spikingjelly's Fashion-MNIST CSNN, with the neuron of your choice in every spiking layer.

The network of spikingjelly's ``activation_based/examples/conv_fashion_mnist.py``: conv3x3-BN-
node-maxpool twice, then flatten, linear, node, linear, node; multi-step mode; the image repeated
T = 4 times; output = the firing rate over T; loss = MSE of the rate to the one-hot label; Adam
(lr 1e-3). Its host neuron is ``IFNode(surrogate_function=surrogate.ATan())``. The example's 128
channels are slow on a small CPU: ``--channels`` (default 32) sets them. ``--swap hidden`` keeps
the host's ``IFNode`` as the output node and swaps only the hidden ones (default ``all``). The
rule scripts next to this file change only what their rule needs; run one with ``--help``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/common.py
import common  # noqa: E402


def host_neuron(output: bool, recipe: bool) -> nn.Module:
    """spikingjelly's own node, as in its example."""
    return neuron.IFNode(surrogate_function=surrogate.ATan())


class CSNN(nn.Module):
    """The example's CSNN; ``make_neuron(output)`` gives each spiking layer its node."""

    def __init__(self, make_neuron: Callable[[bool], nn.Module], channels: int = 32,
                 outputs: int = 10) -> None:
        super().__init__()
        c = channels
        self.conv_fc = nn.Sequential(
            layer.Conv2d(1, c, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(c),
            make_neuron(False),
            layer.MaxPool2d(2, 2),
            layer.Conv2d(c, c, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(c),
            make_neuron(False),
            layer.MaxPool2d(2, 2),
            layer.Flatten(),
            layer.Linear(c * 7 * 7, c * 4 * 4, bias=False),
            make_neuron(False),
            layer.Linear(c * 4 * 4, outputs, bias=False),  # BPSA/BPTA: 10 * recipes.VOTES
            make_neuron(True),
        )
        functional.set_step_mode(self, step_mode="m")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, 1, 28, 28]`` -> the last layer's spikes (or traces) ``[T, B, outputs]``."""
        functional.reset_net(self)  # every batch starts from rest
        return self.conv_fc(x_seq)


def mse_rate_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The example's loss: MSE between the firing rate and the one-hot label."""
    rate = out.mean(0)
    return F.mse_loss(rate, F.one_hot(labels, rate.shape[-1]).to(rate.dtype))


def _options(p) -> None:
    p.add_argument("--channels", type=int, default=32, help="the example uses 128")
    p.add_argument("--swap", choices=("all", "hidden"), default="all",
                   help="which nodes get the rule's neuron: all (default) or the hidden ones "
                        "only (the output node stays the host's IFNode)")


def _build(make_neuron: Callable[[bool], nn.Module], votes: int, args) -> CSNN:
    if args.swap == "hidden":  # the last node stays spikingjelly's own
        def make(output: bool) -> nn.Module:
            return host_neuron(output, False) if output else make_neuron(output)
        return CSNN(make, args.channels, 10 * votes)
    return CSNN(make_neuron, args.channels, 10 * votes)


HOST = common.Host(
    name="spikingjelly-csnn",
    build=_build,
    loss=mse_rate_loss,
    predict=lambda out: out.mean(0).argmax(1),  # the highest firing rate
    image_shape=(1, 28, 28), T=4, batch_size=64, lr=1e-3,
    options=_options,
    describe=lambda args: f", {args.channels} channels, swap {args.swap}")


#: ``main = example(__name__, rule, neuron, ...)``: a rule script's ``main(argv=None)``, run at
#: once when the script is executed (see :func:`common.example`)
example = functools.partial(common.example, HOST)
