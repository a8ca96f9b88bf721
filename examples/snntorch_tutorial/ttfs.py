"""Time-to-first-spike (seed 002) in the seed-002 snntorch tutorial: a loss, not a neuron.

Replace ``SF.ce_rate_loss()`` by ``ttfs.ce_temporal_loss()`` and keep ``snn.Leaky(beta=0.95)``.
``--recipe`` reads the earliest-spiking class out (``common.ttfs_recipe``) instead of counting.
"""

from tutorial import common, example, host_neuron

from spikegrad.rules import ttfs

main = example(__name__, "ttfs", host_neuron, loss=ttfs.ce_temporal_loss(),
               recipe=common.ttfs_recipe)
