"""One entry point for every pattern, used by the CLI and the demo: ``prune_model``.

``channel`` removes channels physically (a smaller dense model); ``unstructured`` and ``nm`` keep
the shape and zero weights through masks, which the plan records so fine-tuning and replay keep
the zeros where they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgeprune.errors import UsageError
from edgeprune.models.train import apply_masks
from edgeprune.prune.patterns import make_masks
from edgeprune.prune.plan import PrunePlan
from edgeprune.prune.structural import ChannelConfig, prune_channels

PATTERNS = ("channel", "unstructured", "nm")


@dataclass(frozen=True)
class PruneRequest:
    """A pruning request as the CLI takes it.

    Attributes:
        pattern: channel, unstructured or nm.
        sparsity: fraction removed, in (0, 1): channels per group, or weights per layer.
        target_macs: for channel pruning, the fraction of MACs to keep instead of ``sparsity``.
        criterion: channel importance criterion (channel pattern only).
        n, m: the N:M pattern (nm only).
        ignore: module paths left alone.
        round_to: channel counts rounded to multiples of this (channel pattern only).
    """

    pattern: str
    sparsity: float | None = None
    target_macs: float | None = None
    criterion: str = "l1"
    n: int = 2
    m: int = 4
    ignore: frozenset[str] = field(default_factory=frozenset)
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise UsageError(f"unknown pattern '{self.pattern}': choose one of {', '.join(PATTERNS)}")
        for label, value in (("sparsity", self.sparsity), ("target-macs", self.target_macs)):
            if value is not None and not 0.0 < value < 1.0:
                raise UsageError(f"{label} must be between 0 and 1 (exclusive), got {value}")
        if self.pattern == "unstructured" and self.sparsity is None:
            raise UsageError("unstructured pruning needs --sparsity")
        if self.pattern == "channel" and self.sparsity is None and self.target_macs is None:
            raise UsageError("channel pruning needs --sparsity or --target-macs")


def default_ignore(model: nn.Module) -> frozenset[str]:
    """For masks: the first conv (few weights, sees the raw input) and the last linear (classifier).

    Both are conventionally left dense: they hold little of the cost and much of the accuracy.
    """
    layers = [p for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return frozenset(layers[:1] + [p for p in layers[-1:] if isinstance(dict(model.named_modules())[p], nn.Linear)])


def prune_model(
    model: nn.Module, input_shape: tuple[int, ...], request: PruneRequest
) -> tuple[nn.Module, PrunePlan, dict[str, Any]]:
    """Prune a copy of ``model``; returns (pruned model, plan, summary). The input is untouched.

    Raises:
        UsageError, GraphError, PruneError: with a message that says what to do.
    """
    if request.pattern == "channel":
        result = prune_channels(model, input_shape, ChannelConfig(
            sparsity=request.sparsity, target_macs=request.target_macs, criterion=request.criterion,
            ignore=request.ignore, round_to=request.round_to,
        ))
        summary = {"pattern": "channel", "criterion": request.criterion, "channel_ratio": result.ratio,
                   "macs_before": result.macs_before, "macs_after": result.macs_after, "groups": result.groups}
        return result.model, PrunePlan("channel", result.plan), summary
    ignore = request.ignore or default_ignore(model)
    masks, reports = make_masks(model, request.pattern, request.sparsity or 0.5, request.n, request.m, ignore)
    pruned = copy.deepcopy(model)
    apply_masks(pruned, masks)
    summary = {
        "pattern": request.pattern,
        "n_m": [request.n, request.m] if request.pattern == "nm" else None,
        "ignored": sorted(ignore),
        "layers": [{"module": r.module, "sparsity": r.sparsity, "skipped": r.skipped} for r in reports],
    }
    return pruned, PrunePlan(request.pattern, [], masks), summary
