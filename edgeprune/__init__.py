"""edgeprune: prune neural networks for edge devices and measure what pruning really buys there.

The package is split along the pipeline of DESIGN.md: ``models`` (what to prune), ``prune`` (graph,
criteria, patterns, surgery, plan), ``analysis`` (cost and theoretical speedup), ``export`` (ONNX,
bundles), ``device`` (runners, measurement, agent; importable without torch) and ``report``.
"""

__version__ = "0.1.0"
