"""Multi-strength spikes (Chen et al.; seed 002) in the seed-002 snntorch tutorial:
``neurons.MultiStrengthLeaky()`` (integrate-and-fire, threshold 1, integer spike strengths)
where the tutorial has ``snn.Leaky(beta=0.95)``.

The recipe (``--recipe``, ``common.rate_ce_recipe``) is the rate cross-entropy, which the
tutorial already uses (``SF.ce_rate_loss()``), so it changes nothing here.
"""

from tutorial import common, example

from spikegrad import neurons

main = example(__name__, "multi-strength", lambda output, recipe: neurons.MultiStrengthLeaky(),
               recipe=common.rate_ce_recipe)
