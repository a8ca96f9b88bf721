"""Baseline: spikingjelly's Fashion-MNIST CSNN with its own nodes,
``neuron.IFNode(surrogate_function=surrogate.ATan())``; the other scripts here are measured
against it. There is no recipe to add (``--recipe`` runs the same training)."""

from csnn import example, host_neuron

main = example(__name__, "baseline", host_neuron)
