"""Baseline: the seed-002 snntorch tutorial with snntorch's own ``snn.Leaky(beta=0.95)``, the
reference of the other scripts here. ``--recipe`` adds nothing: the tutorial's rate loss is the
host's own recipe."""

from tutorial import example, host_neuron

main = example(__name__, "baseline", host_neuron)
