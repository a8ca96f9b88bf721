"""NA, Neighborhood Aggregation (ICML 2021), in spikingjelly's Fashion-MNIST CSNN.

Put ``neurons.NALIFNode()`` (the authors' tau 5, threshold 1) where the example has
``neuron.IFNode(...)``.

``--recipe``: every node outputs its PSP trace, and ``common.na_recipe`` sets up the rest of
the authors' recipe around the same network.
"""

from csnn import common, example

from spikegrad import neurons, recipes


def neuron(output: bool, recipe: bool):
    return neurons.NALIFNode(tau_s=recipes.TAU_S if recipe else None)


main = example(__name__, "na", neuron, recipe=common.na_recipe)
