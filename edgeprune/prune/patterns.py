"""Weight masks for the non-structural patterns: unstructured (fine-grained) and N:M.

A mask keeps the shape of the weight; zeros stay in the tensor. Whether they buy anything depends
on the kernel that runs the layer: ONNX Runtime on a CPU executes them like any other number,
TensorRT's sparse tensor-core kernels skip exactly half the work of a valid 2:4 layer.

N:M runs along the **input-channel** axis, as TensorRT requires: for every output channel and
every kernel position, each run of M consecutive input channels holds at most N non-zeros. Layers
whose input channels are not a multiple of M cannot carry the pattern and are skipped (reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MaskReport:
    """What a masking pass did to one layer."""

    module: str
    pattern: str
    sparsity: float
    skipped: str | None = None


def prunable_layers(model: nn.Module, ignore: frozenset[str] = frozenset()) -> dict[str, nn.Module]:
    """Conv2d and Linear layers by path, minus ``ignore``."""
    return {
        path: m for path, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and path not in ignore
    }


def unstructured_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest-magnitude ``1 - sparsity`` fraction of weights (ties broken by position)."""
    count = int(round(weight.numel() * sparsity))
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if count > 0:
        order = torch.argsort(weight.detach().abs().flatten(), stable=True)
        mask[order[:count]] = False
    return mask.reshape(weight.shape)


def nm_eligible(weight: torch.Tensor, m: int) -> str | None:
    """None if the weight can carry an N:M pattern along dim 1, else the reason it cannot."""
    if weight.dim() < 2:
        return "not a matrix"
    if weight.shape[1] % m != 0:
        return f"{weight.shape[1]} input channels are not a multiple of {m}"
    return None


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the N largest of every M consecutive input channels, per output channel and position.

    Raises:
        ValueError: the weight is not eligible (see :func:`nm_eligible`), or n > m.
    """
    if not 0 < n <= m:
        raise ValueError(f"N:M needs 0 < N <= M, got {n}:{m}")
    reason = nm_eligible(weight, m)
    if reason:
        raise ValueError(reason)
    # Move input channels last and split them into runs of M: [..., C/M, M].
    w = weight.detach().abs().movedim(1, -1)
    runs = w.reshape(*w.shape[:-1], w.shape[-1] // m, m)
    top = torch.topk(runs, n, dim=-1).indices
    mask = torch.zeros_like(runs, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(w.shape).movedim(-1, 1).contiguous()


def check_nm(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True if the weight obeys the N:M rule along dim 1 (the TensorRT 2:4 check)."""
    if nm_eligible(weight, m):
        return False
    w = (weight.detach() != 0).movedim(1, -1)
    runs = w.reshape(*w.shape[:-1], w.shape[-1] // m, m)
    return bool((runs.sum(-1) <= n).all())


def make_masks(model: nn.Module, pattern: str, sparsity: float = 0.5, n: int = 2, m: int = 4,
               ignore: frozenset[str] = frozenset()) -> tuple[dict[str, torch.Tensor], list[MaskReport]]:
    """Masks for every prunable layer, and a per-layer report (skipped layers say why).

    Args:
        model: the model (not modified).
        pattern: ``unstructured`` or ``nm``.
        sparsity: fraction of weights to zero (unstructured only; N:M fixes it at 1 - N/M).
        n, m: the N:M pattern.
        ignore: layer paths to leave dense.
    """
    masks: dict[str, torch.Tensor] = {}
    reports = []
    for path, layer in prunable_layers(model, ignore).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if pattern == "unstructured":
            masks[path] = unstructured_mask(weight, sparsity)
        elif pattern == "nm":
            if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                reason = "grouped convolution (TensorRT never picks sparse kernels)"
                reports.append(MaskReport(path, pattern, 0.0, reason))
                continue
            why = nm_eligible(weight, m)
            if why:
                reports.append(MaskReport(path, pattern, 0.0, why))
                continue
            masks[path] = nm_mask(weight, n, m)
        else:
            raise ValueError(f"unknown mask pattern {pattern!r}")
        reports.append(MaskReport(path, pattern, 1.0 - masks[path].float().mean().item()))
    return masks, reports
