"""TTFS in spikingjelly's CSNN: the IFNodes stay, the example's rate MSE becomes
``ttfs.ce_temporal_loss()`` on the last layer's spikes ``[T, B, 10]``; ``--recipe`` predicts
the class that spikes first (``common.ttfs_recipe``)."""

from csnn import common, example, host_neuron

from spikegrad.rules import ttfs

main = example(__name__, "ttfs", host_neuron, loss=ttfs.ce_temporal_loss(),
               recipe=common.ttfs_recipe)
