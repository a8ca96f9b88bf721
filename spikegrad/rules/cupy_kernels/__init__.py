"""Fused CUDA kernels (CuPy) for the multi-step paths of the rules, with a CPU host shim.

* :mod:`.source` and :mod:`.kernels`: the generator (one CUDA C source per rule configuration;
  the surrogate writes its own derivative via ``Surrogate.c_derivative``);
* :mod:`.dispatch`: the same module as :mod:`spikegrad.rules.dispatch`, the only place that
  picks torch, cpp, Triton or CuPy, recording why ``"auto"`` fell back;
* :mod:`.functions`: the autograd nodes; :mod:`.launch`: CuPy launches on torch's stream;
* :mod:`.host`: the same source compiled as C++ for CPU tests; :mod:`.bench`: timings on a GPU.

Importing this package does not import CuPy.
"""
