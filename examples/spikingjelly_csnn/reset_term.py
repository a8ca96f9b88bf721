"""Reset-term BPTT (Yang 2020) in spikingjelly's Fashion-MNIST CSNN.

Each ``neuron.IFNode(...)`` becomes ``neurons.ResetTermLIFNode()``: tau 2, the paper's sigmoid
surrogate, ``detach_reset=False`` (the reset term's gradient).

``--recipe``: PSP traces out of the hidden nodes (``tau_s``), spikes out of the last one, and
``common.reset_term_recipe`` (filtered input, van Rossum loss to the target train, NA's
initialisation, AdamW, clipping, clamp).
"""

from csnn import common, example

from spikegrad import neurons, recipes


def neuron(output: bool, recipe: bool):
    tau_s = recipes.TAU_S if recipe and not output else None  # recipe: hidden layers' traces
    return neurons.ResetTermLIFNode(tau_s=tau_s)


main = example(__name__, "reset-term", neuron, recipe=common.reset_term_recipe)
