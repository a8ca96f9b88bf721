"""The math of every rule, pure torch, time-major ``[T, B, *]``; no host framework imports.

Modules: :mod:`~spikegrad.rules.surrogate`, :mod:`~spikegrad.rules.reset_term`,
:mod:`~spikegrad.rules.na` (with its compiled CPU kernel, :mod:`~spikegrad.rules.na.cpu`),
:mod:`~spikegrad.rules.bpsta`, :mod:`~spikegrad.rules.multistrength`,
:mod:`~spikegrad.rules.ttfs`. Each module's docstring has the equations and the citation.
"""
