"""Analysis: what a model costs, what pruning should buy on a target, and why it did or did not.

* :mod:`~edgeprune.analysis.cost`: MACs, parameters, bytes and arithmetic intensity per layer.
* :mod:`~edgeprune.analysis.devices`: peak FLOP/s per precision and memory bandwidth, each sourced;
  the host CPU's figures measured by a short calibration run.
* :mod:`~edgeprune.analysis.speedup`: theoretical speedup three ways (MAC ratio, kernel-aware,
  roofline), labelled, with per-layer rows.
* :mod:`~edgeprune.analysis.lint`: alignment warnings that predict little or no measured gain.
* :mod:`~edgeprune.analysis.profile`: per-layer measured time (ONNX Runtime profiler, TensorRT
  layer profile) and which layers reached their theoretical speedup.

The package imports nothing heavy by itself; each module imports what it needs.
"""
