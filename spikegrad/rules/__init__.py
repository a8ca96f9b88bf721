"""The math of every rule, pure torch, time-major ``[T, B, *]``; no host framework imports.

Rules: :mod:`~spikegrad.rules.surrogate`, :mod:`~spikegrad.rules.reset_term`,
:mod:`~spikegrad.rules.na`, :mod:`~spikegrad.rules.bpsta`, :mod:`~spikegrad.rules.multistrength`,
:mod:`~spikegrad.rules.ttfs`; each one's docstring has the equations and the citation. A rule
with hand-written kernels is a folder (``reference``, ``ops``, ``triton``, ``cupy``; NA also
``cpu``, its compiled CPU kernel, and ``triton_replay``; reset-term ``spec``, its kernels'
parameters); a rule written as a step function is one file in
:mod:`spikegrad.rules.stepfn.rules`, its kernels generated. :mod:`~spikegrad.rules.dispatch`
picks the implementation of the folder rules and of the nodes' ``backend``; it imports none of
them (they register with it).
"""
