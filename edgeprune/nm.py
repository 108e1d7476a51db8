"""The N:M sparsity rule, once: in every run of M consecutive weights along an axis, at most N non-zeros.

NVIDIA's 2:4 rule (TensorRT ``SPARSE_WEIGHTS``, cuSPARSELt, torch's semi-structured tensors) is
the case N=2, M=4 along a weight's input-channel (reduction) axis. The pruner checks the masks it
made with it, the packager checks the ONNX the device will parse, and the PyTorch runner checks a
layer before converting it. numpy only, so every side of the product can import it.
"""

from __future__ import annotations

import numpy as np

N, M = 2, 4


def nm_violations(weight: np.ndarray, axis: int, n: int = N, m: int = M) -> tuple[int, int]:
    """Count runs of ``m`` consecutive values along ``axis`` and those with more than ``n`` non-zeros.

    Returns:
        (runs, runs that break the rule).

    Raises:
        ValueError: the axis length is not a multiple of ``m``.
    """
    if weight.shape[axis] % m:
        raise ValueError(f"axis {axis} has length {weight.shape[axis]}, not a multiple of {m}")
    nonzero = np.moveaxis(np.asarray(weight) != 0, axis, -1)
    runs = nonzero.reshape(*nonzero.shape[:-1], nonzero.shape[-1] // m, m).sum(-1)
    return int(runs.size), int((runs > n).sum())


def follows_nm(weight: np.ndarray, n: int = N, m: int = M, axis: int = 1) -> bool:
    """True if the weight has at least two axes, ``axis`` is a multiple of ``m`` long, and the rule holds."""
    if weight.ndim < 2 or weight.shape[axis] % m:
        return False
    return nm_violations(weight, axis, n, m)[1] == 0
