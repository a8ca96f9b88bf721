"""Neighborhood Aggregation (Yang, Zhang & Li, ICML 2021) in the seed-002 snntorch tutorial:
``snn.Leaky(beta=0.95)`` becomes ``neurons.NALeaky(beta=0.95)``, and the per-step loop stays as
it is. ``--recipe``: both layers output their PSP traces (``tau_s``), and ``common.na_recipe``
adds the filtered input, the trace-target loss, the authors' init, AdamW, clip and clamp.
"""

from tutorial import BETA, common, example

from spikegrad import neurons, recipes


def neuron(output: bool, recipe: bool):
    return neurons.NALeaky(beta=BETA, tau_s=recipes.TAU_S if recipe else None)


main = example(__name__, "na", neuron, recipe=common.na_recipe)
