"""Fused CUDA kernels (CuPy) for the multi-step paths of the rules, with a CPU host shim.

* :mod:`.source`: the generator (one CUDA C source per rule configuration, whose bodies and
  parameters are in each rule folder's ``cupy.py``; the surrogate writes its own derivative via
  ``Surrogate.c_derivative``); :mod:`spikegrad.rules.dispatch` decides when the kernels run;
* :mod:`.functions`: what the kernels' autograd nodes share (the LIF-type node; NA's node is
  in its folder); :mod:`.ctext`: C float literals and the prelude (also used by ``stepfn``);
  :mod:`.launch`: CuPy launches on torch's stream;
* :mod:`.host`: the same source compiled as C++ for CPU tests; :mod:`.bench`: timings on a GPU.

Importing this package does not import CuPy.
"""
