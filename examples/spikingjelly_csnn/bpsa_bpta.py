"""BPSA/BPTA with BrainCog's HTDGLIF node (Patterns 2022) in spikingjelly's CSNN.

``neurons.HTDGLIFNode()`` replaces every ``IFNode``; a node that does not spike passes no
gradient (BPSA). The paper's recipe, ``--recipe``: a voting last layer, 10 nodes per class,
the voting MSE and the ReLU warm-up at the start (``common.bpsa_bpta_recipe``).
"""

from csnn import common, example

from spikegrad import neurons, recipes

main = example(__name__, "bpsa-bpta", lambda output, recipe: neurons.HTDGLIFNode(),
               recipe=common.bpsa_bpta_recipe, votes=recipes.VOTES)
