"""Channel importance criteria: a group in, one score per channel out (higher = keep).

Scores are aggregated over every member of a coupled group, because a channel of a residual
stream lives in several convolutions at once: judging it by one of them would remove channels
that matter to the others. Each member's scores are normalized by their mean first, so a layer
with large weights does not outvote the rest.

Add your own with :func:`register_criterion`::

    @register_criterion("my-score")
    def my_score(modules, group, ctx):
        return torch.ones(group.size)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.prune.graph import Group

Criterion = Callable[[Mapping[str, nn.Module], Group, Mapping[str, Any]], torch.Tensor]
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Decorator that adds a criterion to :data:`CRITERIA` under ``name``."""

    def wrap(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn

    return wrap


def get_criterion(name: str) -> Criterion:
    """Look up a criterion by name.

    Raises:
        UsageError: unknown name; the message lists the known ones.
    """
    if name not in CRITERIA:
        raise UsageError(f"unknown criterion '{name}': choose one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]


def _per_channel_norm(weight: torch.Tensor, dim: int, p: int) -> torch.Tensor:
    moved = weight.detach().transpose(0, dim).reshape(weight.shape[dim], -1)
    return moved.abs().sum(1) if p == 1 else moved.pow(2).sum(1).sqrt()


def _place_scores(modules: Mapping[str, nn.Module], group: Group, kind_scores: Callable[[nn.Module, str, int], torch.Tensor | None]) -> torch.Tensor:
    """Sum, over a group's members, each channel's per-member score normalized by the member's mean.

    ``kind_scores(module, kind, p)`` returns a score per index of that module dimension, or None
    when the member carries no information for this criterion.
    """
    total = torch.zeros(group.size)
    cache: dict[tuple[str, str], torch.Tensor | None] = {}
    for member in group.members:
        cache[(member.module, member.kind)] = kind_scores(modules[member.module], member.kind, 0)
    for (module, kind), per_index in cache.items():
        if per_index is None:
            continue
        values = torch.zeros(group.size)
        for c, places in enumerate(group.channels):
            for place in places:
                if place.module == module and place.kind == kind:
                    values[c] += per_index[place.index:place.index + place.expand].sum()
        total += values / values.mean().clamp_min(1e-12)
    return total


def _weight_norms(p: int) -> Callable[[nn.Module, str, int], torch.Tensor | None]:
    def scores(module: nn.Module, kind: str, _: int) -> torch.Tensor | None:
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            return None
        if kind in ("out", "dw"):
            return _per_channel_norm(weight, 0, p)
        if kind == "in" and not (isinstance(module, nn.Conv2d) and module.groups > 1):
            return _per_channel_norm(weight, 1, p)
        return None

    return scores


def _member_norms(modules: Mapping[str, nn.Module], group: Group, p: int) -> torch.Tensor:
    return _place_scores(modules, group, _weight_norms(p))


@register_criterion("l1")
def l1(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """L1 norm of each channel's weights over all members (Li et al., "Pruning Filters", 2017)."""
    return _member_norms(modules, group, 1)


@register_criterion("l2")
def l2(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """L2 norm of each channel's weights over all members."""
    return _member_norms(modules, group, 2)


@register_criterion("bn-scale")
def bn_scale(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """|gamma| of the group's BatchNorms (network slimming, Liu et al. 2017); L1 if there are none."""
    def gamma(module: nn.Module, kind: str, _: int) -> torch.Tensor | None:
        weight = getattr(module, "weight", None)
        return weight.detach().abs() if kind == "norm" and isinstance(weight, torch.Tensor) else None

    if not any(m.kind == "norm" for m in group.members):
        return l1(modules, group, ctx)
    return _place_scores(modules, group, gamma)


@register_criterion("random")
def random(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """Random scores (seeded): the baseline every real criterion must beat."""
    generator = torch.Generator().manual_seed(int(ctx.get("seed", 0)) * 100_003 + group.id)
    return torch.rand(group.size, generator=generator)
