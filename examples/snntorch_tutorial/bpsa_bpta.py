"""BPSA/BPTA (Shen, Zhao & Zeng 2022; BrainCog's HTDGLIF node) in the seed-002 snntorch tutorial.

Swap ``snn.Leaky(beta=0.95)`` for ``neurons.HTDGLIFLeaky()`` (decay 0.9, threshold 0.5, as in
the paper). BPSA passes no gradient through a neuron that does not spike: ``--recipe`` builds
the voting output layer (``recipes.VOTES`` per class) and ``common.bpsa_bpta_recipe`` trains it
with ``recipes.voting_mse_loss`` after a short ``recipes.warm_up(net)`` (the nodes as ReLU).
"""

from tutorial import common, example

from spikegrad import neurons, recipes

main = example(__name__, "bpsa-bpta", lambda output, recipe: neurons.HTDGLIFLeaky(),
               recipe=common.bpsa_bpta_recipe, votes=recipes.VOTES)
