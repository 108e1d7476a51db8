"""Channel (filter) pruning: score coupled groups, decide how many channels each keeps, cut.

The four concerns stay apart, as in Torch-Pruning: the graph says what is coupled
(:mod:`~edgeprune.prune.graph`), a criterion scores channels (:mod:`~edgeprune.prune.criteria`),
this module decides *how much* (a uniform fraction per group, or the fraction that meets a MAC
target), and surgery cuts (:mod:`~edgeprune.prune.surgery`).

A MAC target is met by bisection over the uniform fraction. Each candidate is costed analytically
from the baseline's per-layer MACs (a layer's MACs scale with its kept output and input
fractions), so the search never copies or runs the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.analysis.cost import ModelCost, model_cost
from edgeprune.errors import PruneError, UsageError
from edgeprune.prune.criteria import get_criterion
from edgeprune.prune.graph import Group, build_groups
from edgeprune.prune.surgery import apply_structural, plan_from_groups


@dataclass(frozen=True)
class ChannelConfig:
    """How to prune channels.

    Attributes:
        sparsity: fraction of each group's channels to remove, in (0, 1); or
        target_macs: fraction of the baseline MACs to keep, in (0, 1) (exactly one of the two).
        criterion: a name in :data:`edgeprune.prune.criteria.CRITERIA`.
        ignore: module paths whose output channels are never pruned (the classifier's outputs are
            always fixed because they are the model's output).
        round_to: keep channel counts multiples of this (8/16/32 suit tensor cores).
        max_sparsity: never remove more than this fraction of a group.
        seed: for the random criterion.
    """

    sparsity: float | None = None
    target_macs: float | None = None
    criterion: str = "l1"
    ignore: frozenset[str] = field(default_factory=frozenset)
    round_to: int = 1
    max_sparsity: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.sparsity is None) == (self.target_macs is None):
            raise UsageError("give exactly one of sparsity or target_macs")
        for label, value in (("sparsity", self.sparsity), ("target_macs", self.target_macs)):
            if value is not None and not 0.0 < value < 1.0:
                raise UsageError(f"{label} must be between 0 and 1 (exclusive), got {value}")
        if self.round_to < 1:
            raise UsageError(f"round_to must be a positive integer, got {self.round_to}")


@dataclass
class ChannelResult:
    """The pruned model, its plan entries, and what happened to each group."""

    model: nn.Module
    plan: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    ratio: float
    macs_before: int
    macs_after: int


def _kept_count(size: int, ratio: float, round_to: int) -> int:
    keep = max(1, int(round(size * (1.0 - ratio))))
    if round_to > 1 and size >= round_to:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return min(size, keep)


def _estimate_macs(cost: ModelCost, model: nn.Module, plan: list[dict[str, Any]]) -> float:
    modules = dict(model.named_modules())
    by_module = {entry["module"]: entry for entry in plan}
    total = 0.0
    for layer in cost.layers:
        entry = by_module.get(layer.name)
        if entry is None:
            total += layer.macs
            continue
        module = modules[layer.name]
        out_frac = len(entry["out_keep"]) / layer.out_channels if "out_keep" in entry else 1.0
        in_frac = len(entry["in_keep"]) / layer.in_channels if "in_keep" in entry else 1.0
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            in_frac = 1.0  # depthwise: each output reads one channel whatever the width
        total += layer.macs * out_frac * in_frac
    return total


def prune_channels(model: nn.Module, input_shape: tuple[int, ...], config: ChannelConfig) -> ChannelResult:
    """Prune a copy of ``model``; the original is left untouched.

    Raises:
        GraphError: the model holds an op the graph cannot map (nothing is changed).
        PruneError: nothing in the model can be pruned, or the MAC target cannot be met.
    """
    criterion = get_criterion(config.criterion)
    example = torch.zeros(2, *input_shape)
    groups = build_groups(model, example)
    modules = dict(model.named_modules())
    candidates: list[Group] = []
    for group in groups:
        if group.fixed is None and not any(m.module in config.ignore for m in group.producers):
            candidates.append(group)
    if not candidates:
        raise PruneError("no prunable channel group found (every group is fixed or ignored)")
    ctx = {"seed": config.seed}
    with torch.no_grad():
        order = {g.id: torch.argsort(criterion(modules, g, ctx), descending=True, stable=True) for g in candidates}

    def plan_for(ratio: float) -> list[dict[str, Any]]:
        keep = {}
        for group in candidates:
            count = _kept_count(group.size, ratio, config.round_to)
            keep[group.id] = sorted(order[group.id][:count].tolist())
        return plan_from_groups(model, groups, keep)

    cost = model_cost(model, input_shape)
    if config.sparsity is not None:
        ratio = min(config.sparsity, config.max_sparsity)
    else:
        assert config.target_macs is not None
        goal = config.target_macs * cost.macs
        lo, hi = 0.0, config.max_sparsity
        if _estimate_macs(cost, model, plan_for(hi)) > goal:
            raise PruneError(
                f"cannot reach {config.target_macs:.0%} of the MACs with at most {config.max_sparsity:.0%} of "
                "each group removed: fixed and ignored layers carry too much of the cost"
            )
        for _ in range(30):
            mid = (lo + hi) / 2
            if _estimate_macs(cost, model, plan_for(mid)) > goal:
                lo = mid
            else:
                hi = mid
        ratio = hi
    plan = plan_for(ratio)
    pruned = apply_structural(copy.deepcopy(model), plan)
    after = model_cost(pruned, input_shape)
    report = [
        {"group": g.id, "size": g.size, "kept": _kept_count(g.size, ratio, config.round_to),
         "producers": [m.module for m in g.producers]}
        for g in candidates
    ]
    return ChannelResult(pruned, plan, report, ratio, cost.macs, after.macs)
