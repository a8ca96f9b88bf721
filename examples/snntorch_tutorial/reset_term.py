"""Reset-term BPTT (Yang 2020) in the seed-002 snntorch tutorial.

Change ``snn.Leaky(beta=0.95)`` to ``neurons.ResetTermLeaky(beta=0.95)``: the paper's sigmoid
surrogate, with the gradient through the reset kept.

With ``--recipe`` the hidden layer outputs its PSP trace and ``common.reset_term_recipe``
applies: PSP-filtered input, ``recipes.van_rossum_target_loss``, NA's init, optimiser, clipping
and weight clamp (the author's framework).
"""

from tutorial import BETA, common, example

from spikegrad import neurons, recipes


def neuron(output: bool, recipe: bool):
    tau_s = recipes.TAU_S if recipe and not output else None  # recipe: hidden layers' traces
    return neurons.ResetTermLeaky(beta=BETA, tau_s=tau_s)


main = example(__name__, "reset-term", neuron, recipe=common.reset_term_recipe)
