"""The benchmark harness behind ``benchmarks/compare.py``.

- :mod:`suite.recipes`: each rule's neurons in each host, its paper recipe and the common one.
- :mod:`suite.metrics`: spike rates and NeuroBench synaptic operations, versions, machine.
- :mod:`suite.train`: one training configuration (resumable, data-parallel).
- :mod:`suite.speed`: neuron-layer and training-step timings against the host's native LIF.
- :mod:`suite.store`: ``results.jsonl`` (atomic), ``summary.md`` and the plots.
"""
