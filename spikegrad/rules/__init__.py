"""The math of every rule, pure torch, time-major ``[T, B, *]``; no host framework imports.

Modules: :mod:`surrogate`, :mod:`reset_term`, :mod:`bpsta`, :mod:`multistrength`, :mod:`ttfs`.
"""
