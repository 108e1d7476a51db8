"""edgeprune: prune neural networks for edge devices and measure what pruning really buys there.

The public Python API (see the README's "Python" section)::

    import edgeprune
    result = edgeprune.prune_model(model, example_input, pattern="channel", target_macs=0.5)
    with edgeprune.keep_masks(result):
        ...  # your own training loop
    edgeprune.save(result, "runs/pruned"); edgeprune.load("runs/pruned", MyNet())

The package is split along the pipeline of DESIGN.md: ``data`` (tasks), ``models`` (what to
prune), ``train`` (the one training loop), ``prune`` (graph, criteria, patterns, surgery, plan),
``analysis`` (cost and theoretical speedup), ``export`` (ONNX, bundles), ``device`` (runners,
measurement, agent; importable without torch) and ``report``. The API names below are imported
on first use, so ``import edgeprune.device`` on a board without torch stays torch-free.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edgeprune.errors import EdgepruneError

__version__ = "0.1.0"

_API = {
    "prune_model": "edgeprune.api",
    "PruneResult": "edgeprune.api",
    "keep_masks": "edgeprune.api",
    "save": "edgeprune.api",
    "load": "edgeprune.api",
    "train_model": "edgeprune.train",
    "finetune": "edgeprune.train",
    "evaluate": "edgeprune.train",
    "TrainConfig": "edgeprune.train",
    "Task": "edgeprune.data",
    "tensor_task": "edgeprune.data",
    "load_data": "edgeprune.data",
}
# Public names that differ from the function's own, where the own name is a subpackage's.
_ALIASES = {"load_data": "resolve_data", "train_model": "train"}
__all__ = ["EdgepruneError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module = import_module(_API[name])
        return getattr(module, _ALIASES.get(name, name))
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
