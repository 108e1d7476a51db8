"""Channel (filter) pruning: score coupled groups, decide how many channels each keeps, cut.

The four concerns stay apart, as in Torch-Pruning: the graph says what is coupled
(:mod:`~edgeprune.prune.graph`), a criterion scores channels (:mod:`~edgeprune.prune.criteria`),
this module decides *how much*, and surgery cuts (:mod:`~edgeprune.prune.surgery`).

How much, in increasing order of automation:

* ``layer_sparsity``: a fraction per layer (a module path, or a container's path for everything
  under it), applied to the groups that layer produces;
* ``sparsity``: the same fraction of every group (uniform), or, with ``global_ranking``, that
  fraction of all channels taken where the scores are lowest across groups (each group's scores
  are divided by their mean first, so groups compare on their shape, not their scale), never
  more than ``max_sparsity`` of one group;
* ``target_macs`` / ``target_params``: the fraction of the baseline to keep; the uniform or
  global fraction is found by bisection.

Every candidate is costed analytically from the baseline: a layer's MACs and weights scale with
its kept output and input fractions (a depthwise conv's with its output fraction only), so the
search never copies or runs the model. ``round_to`` keeps each module's channel count a multiple
of 8, 16 or 32 (tensor-core friendly), counting a grouped conv's channels in all its groups.

The user's model is never modified: the graph and the plan are built and checked first, then the
pruned copy is made directly from sliced tensors (:func:`~edgeprune.prune.surgery.pruned_copy`),
so the pruner never holds a second full-size copy of the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.analysis.cost import ModelCost, model_cost
from edgeprune.errors import PruneError, UsageError
from edgeprune.prune.criteria import get_criterion
from edgeprune.prune.graph import Group, build_groups
from edgeprune.prune.surgery import plan_from_groups, pruned_copy


@dataclass(frozen=True)
class ChannelConfig:
    """How to prune channels.

    Attributes:
        sparsity: fraction of channels to remove, in (0, 1): of each group, or of all channels
            with ``global_ranking``; or
        target_macs: fraction of the baseline MACs to keep, in (0, 1); or
        target_params: fraction of the baseline parameters to keep, in (0, 1). At most one of the
            three; none only when ``layer_sparsity`` says everything.
        criterion: a name in :data:`edgeprune.prune.criteria.CRITERIA`.
        ignore: module paths whose output channels are never pruned. A container's path leaves the
            whole block untouched (it is traced as an opaque leaf, which also gets past ops the
            graph does not know inside it). The classifier's outputs are always kept, because
            they are the model's output.
        round_to: keep channel counts multiples of this (8/16/32 suit tensor cores).
        max_sparsity: never remove more than this fraction of a group.
        global_ranking: rank channels across groups instead of pruning each group alike.
        layer_sparsity: module path -> fraction for the groups that module (or anything under
            it) produces; overrides the uniform or global fraction there.
        calibration: a few batches (tensors, or (inputs, targets) pairs) for data-aware criteria
            such as ``taylor``.
        loss_fn: ``loss_fn(output, target)`` for data-aware criteria; default cross-entropy
            (against the model's own predictions when batches carry no targets).
        seed: for the random criterion and FPGM's sampling.
    """

    sparsity: float | None = None
    target_macs: float | None = None
    target_params: float | None = None
    criterion: str = "l1"
    ignore: frozenset[str] = field(default_factory=frozenset)
    round_to: int = 1
    max_sparsity: float = 0.9
    global_ranking: bool = False
    layer_sparsity: Mapping[str, float] = field(default_factory=dict)
    calibration: Sequence[Any] | None = field(default=None, compare=False, repr=False)
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = field(default=None, compare=False, repr=False)
    seed: int = 0

    def __post_init__(self) -> None:
        given = [v for v in (self.sparsity, self.target_macs, self.target_params) if v is not None]
        if len(given) > 1 or (not given and not self.layer_sparsity):
            raise UsageError("give exactly one of sparsity, target_macs or target_params (or a layer_sparsity dict)")
        for label, value in (
            ("sparsity", self.sparsity),
            ("target_macs", self.target_macs),
            ("target_params", self.target_params),
        ):
            if value is not None and not 0.0 < value < 1.0:
                raise UsageError(f"{label} must be between 0 and 1 (exclusive), got {value}")
        for path, value in self.layer_sparsity.items():
            if not 0.0 <= value < 1.0:
                raise UsageError(f"layer_sparsity['{path}'] must be in [0, 1), got {value}")
        if self.round_to < 1:
            raise UsageError(f"round_to must be a positive integer, got {self.round_to}")
        if not 0.0 < self.max_sparsity <= 1.0:
            raise UsageError(f"max_sparsity must be in (0, 1], got {self.max_sparsity}")
        object.__setattr__(self, "ignore", frozenset(self.ignore))


@dataclass
class ChannelResult:
    """The pruned model, its plan entries, and what happened to each group.

    Attributes:
        groups: one entry per pruned candidate group (size, kept, producers).
        fixed: one entry per group that could not be pruned, with the reason.
        ratio: the uniform (or global) fraction used for groups without a per-layer fraction.
    """

    model: nn.Module
    plan: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    ratio: float
    macs_before: int
    macs_after: int
    params_before: int = 0
    params_after: int = 0
    fixed: list[dict[str, Any]] = field(default_factory=list)


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r + ".") for r in roots)


def _step(group: Group, round_to: int) -> int:
    """The kept-channel step that keeps every producer and norm of the group a multiple of round_to.

    A channel of a grouped conv's group occupies one index in each conv group, so the module's
    width is the kept count times that multiplicity.
    """
    if round_to <= 1 or not group.channels:
        return 1
    step = 1
    for member in group.members:
        if member.kind not in ("out", "dw", "norm"):
            continue
        multiplicity = sum(1 for p in group.channels[0] if p.module == member.module and p.kind == member.kind)
        need = round_to // math.gcd(round_to, max(multiplicity, 1))
        step = step * need // math.gcd(step, need)
    return step


def _kept(size: int, ratio: float, step: int, max_sparsity: float) -> int:
    keep = max(1, int(round(size * (1.0 - min(ratio, max_sparsity)))))
    keep = max(keep, size - int(math.floor(size * max_sparsity)))
    if step > 1 and size >= step:
        keep = max(step, int(round(keep / step)) * step)
    return min(size, keep)


class _CostModel:
    """MACs and parameter counts of a candidate pruning, from per-channel place counts.

    For every group and every (module, side) it touches, the number of output or input indices
    each channel occupies there is kept as a vector, so the removed count of a module under any
    keep decision is a few vector sums.
    """

    def __init__(self, model: nn.Module, cost: ModelCost, groups: Sequence[Group]) -> None:
        self.model = model
        self.cost = cost
        self.modules = dict(model.named_modules())
        self.counts: dict[int, dict[tuple[str, str, int], np.ndarray]] = {}
        for group in groups:
            per: dict[tuple[str, str, int], np.ndarray] = {}
            for c, places in enumerate(group.channels):
                for p in places:
                    side = "in" if p.kind == "in" else ("param" if p.kind == "param" else "out")
                    vector = per.setdefault((p.module, side, p.dim), np.zeros(group.size))
                    vector[c] += p.expand
            self.counts[group.id] = per
        self.params_before = sum(p.numel() for p in model.parameters())

    def removed(self, keep: Mapping[int, Sequence[int]], sizes: Mapping[int, int]) -> dict[tuple[str, str, int], float]:
        out: dict[tuple[str, str, int], float] = {}
        for gid, kept in keep.items():
            mask = np.ones(sizes[gid], dtype=bool)
            mask[list(kept)] = False
            for key, vector in self.counts[gid].items():
                out[key] = out.get(key, 0.0) + float(vector[mask].sum())
        return out

    def _fractions(
        self, path: str, module: nn.Module, removed: Mapping[tuple[str, str, int], float]
    ) -> tuple[float, float]:
        out_size = in_size = 0
        if isinstance(module, nn.modules.conv._ConvNd):
            out_size, in_size = module.out_channels, module.in_channels
        elif isinstance(module, nn.Linear):
            out_size, in_size = module.out_features, module.in_features
        elif (w := getattr(module, "weight", None)) is not None and isinstance(w, torch.Tensor) and w.ndim:
            out_size = w.shape[0]
        out_frac = 1.0 - removed.get((path, "out", 0), 0.0) / out_size if out_size else 1.0
        in_frac = 1.0 - removed.get((path, "in", 0), 0.0) / in_size if in_size else 1.0
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels:
            in_frac = 1.0  # depthwise: each output reads one channel whatever the width
        return out_frac, in_frac

    def macs(self, removed: Mapping[tuple[str, str, int], float]) -> float:
        total = 0.0
        for layer in self.cost.layers:
            module = self.modules[layer.name]
            out_frac, in_frac = self._fractions(layer.name, module, removed)
            total += layer.macs * out_frac * in_frac
        return total

    def params(self, removed: Mapping[tuple[str, str, int], float]) -> float:
        total = float(self.params_before)
        touched = {key[0] for key in removed if key[1] != "param"}
        for path in touched:
            module = self.modules.get(path)
            if module is None:
                continue
            out_frac, in_frac = self._fractions(path, module, removed)
            for name, p in module.named_parameters(recurse=False):
                frac = out_frac * in_frac if name == "weight" and p.ndim > 1 else out_frac
                total -= p.numel() * (1.0 - frac)
        for (path, side, dim), count in removed.items():
            if side != "param":
                continue
            owner, _, attr = path.rpartition(".")
            tensor = getattr(self.modules.get(owner), attr, None)
            if isinstance(tensor, nn.Parameter):
                total -= tensor.numel() * count / tensor.shape[dim]
        return total


def prune_channels(model: nn.Module, input_shape: tuple[int, ...], config: ChannelConfig) -> ChannelResult:
    """Prune a copy of ``model``; the original is left untouched.

    Raises:
        GraphError: the model holds an op the graph cannot map (nothing is changed).
        PruneError: nothing in the model can be pruned, or the MAC or parameter target cannot be met.
        UsageError: a criterion is missing what it needs (calibration batches for ``taylor``).
    """
    criterion = get_criterion(config.criterion)
    example = torch.zeros(2, *input_shape)
    groups = build_groups(model, example, sorted(config.ignore))
    candidates: list[Group] = []
    fixed: list[dict[str, Any]] = []
    for group in groups:
        if group.fixed is not None:
            fixed.append(
                {
                    "group": group.id,
                    "size": group.size,
                    "reason": group.fixed,
                    "producers": [m.module for m in group.producers],
                }
            )
        elif group.producers and group.size > 1 and not any(_under(m.module, config.ignore) for m in group.producers):
            candidates.append(group)
    if not candidates:
        raise PruneError("no prunable channel group found (every group is fixed or ignored)")
    modules = dict(model.named_modules())
    ctx: dict[str, Any] = {
        "seed": config.seed,
        "calibration": config.calibration,
        "loss_fn": config.loss_fn,
        "cache": {},
    }
    scores: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for g in candidates:
            score = criterion(modules, g, ctx).detach().float()
            if score.shape != (g.size,):
                raise PruneError(
                    f"criterion '{config.criterion}' returned {tuple(score.shape)} scores for a "
                    f"group of {g.size} channels"
                )
            scores[g.id] = score
    ctx["cache"].clear()  # Taylor's gradients: free them before the model is copied
    order = {gid: torch.argsort(s, descending=True, stable=True) for gid, s in scores.items()}
    steps = {g.id: _step(g, config.round_to) for g in candidates}
    sizes = {g.id: g.size for g in candidates}
    fixed_ratio: dict[int, float] = {}
    for g in candidates:
        listed = [v for path, v in config.layer_sparsity.items() if any(_under(m.module, [path]) for m in g.producers)]
        if listed:
            fixed_ratio[g.id] = max(listed)
    free_groups = [g for g in candidates if g.id not in fixed_ratio]
    ranked = _global_order(free_groups, scores) if config.global_ranking else []

    def keep_for(ratio: float) -> dict[int, list[int]]:
        counts = {gid: _kept(sizes[gid], r, steps[gid], config.max_sparsity) for gid, r in fixed_ratio.items()}
        if config.global_ranking:
            counts.update(_global_counts(free_groups, ranked, ratio, config.max_sparsity, steps))
        else:
            counts.update({g.id: _kept(g.size, ratio, steps[g.id], config.max_sparsity) for g in free_groups})
        return {gid: sorted(order[gid][:count].tolist()) for gid, count in counts.items()}

    cost = model_cost(model, input_shape)
    estimator = _CostModel(model, cost, candidates)
    if config.target_macs is not None or config.target_params is not None:
        if config.target_macs is not None:
            goal, label, baseline = config.target_macs * cost.macs, "MACs", float(cost.macs)

            def measure(ratio: float) -> float:
                return estimator.macs(estimator.removed(keep_for(ratio), sizes))
        else:
            assert config.target_params is not None
            baseline = float(estimator.params_before)
            goal, label = config.target_params * baseline, "parameters"

            def measure(ratio: float) -> float:
                return estimator.params(estimator.removed(keep_for(ratio), sizes))

        target = goal / baseline
        lo, hi = 0.0, 1.0
        if measure(hi) > goal:
            raise PruneError(
                f"cannot reach {target:.0%} of the {label} with at most {config.max_sparsity:.0%} of "
                "each group removed: fixed and ignored layers carry too much of the cost"
            )
        for _ in range(25):
            mid = (lo + hi) / 2
            if measure(mid) > goal:
                lo = mid
            else:
                hi = mid
        ratio = hi
    else:
        ratio = config.sparsity or 0.0
    keep = keep_for(ratio)
    plan = plan_from_groups(model, groups, keep)
    pruned = pruned_copy(model, plan)
    after = model_cost(pruned, input_shape)
    report = [
        {"group": g.id, "size": g.size, "kept": len(keep[g.id]), "producers": [m.module for m in g.producers]}
        for g in candidates
    ]
    return ChannelResult(
        pruned,
        plan,
        report,
        ratio,
        cost.macs,
        after.macs,
        estimator.params_before,
        sum(p.numel() for p in pruned.parameters()),
        fixed,
    )


def _global_order(groups: Sequence[Group], scores: Mapping[int, torch.Tensor]) -> list[tuple[float, int]]:
    """Every channel of every group as (mean-normalized score, group id), lowest first."""
    entries: list[tuple[float, int]] = []
    for g in groups:
        s = scores[g.id]
        normalized = (s / s.mean().clamp_min(1e-12)).tolist()
        entries.extend((value, g.id) for value in normalized)
    entries.sort(key=lambda e: e[0])
    return entries


def _global_counts(
    groups: Sequence[Group],
    ranked: Sequence[tuple[float, int]],
    ratio: float,
    max_sparsity: float,
    steps: Mapping[int, int],
) -> dict[int, int]:
    """Kept counts when ``ratio`` of all channels go where the normalized scores are lowest."""
    sizes = {g.id: g.size for g in groups}
    cap = {gid: min(size - 1, int(math.floor(size * max_sparsity))) for gid, size in sizes.items()}
    removed = dict.fromkeys(sizes, 0)
    goal = int(round(ratio * sum(sizes.values())))
    taken = 0
    for _, gid in ranked:
        if taken >= goal:
            break
        if removed[gid] < cap[gid]:
            removed[gid] += 1
            taken += 1
    counts = {}
    for gid, size in sizes.items():
        keep = size - removed[gid]
        step = steps[gid]
        if step > 1 and size >= step:
            keep = min(size, max(step, int(round(keep / step)) * step))
        counts[gid] = keep
    return counts
