"""Multi-strength spikes in spikingjelly's CSNN: ``neurons.MultiStrengthIFNode()`` for each
``IFNode``. Its strengths are integers, so a rate above 1 overshoots the example's one-hot
MSE target; ``--recipe`` trains with ``recipes.rate_ce_loss`` instead (``common.rate_ce_recipe``).
"""

from csnn import common, example

from spikegrad import neurons

main = example(__name__, "multi-strength", lambda output, recipe: neurons.MultiStrengthIFNode(),
               recipe=common.rate_ce_recipe)
