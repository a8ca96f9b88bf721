"""The math of every rule, pure torch, time-major ``[T, B, *]``; no host framework imports.

Modules: :mod:`surrogate`, :mod:`reset_term`, :mod:`na` (with its compiled CPU kernel,
:mod:`na_cpu`), :mod:`bpsta`, :mod:`multistrength`, :mod:`ttfs`. Each module's docstring has
the equations and the citation.
"""
