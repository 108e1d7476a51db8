"""Training-time sparsity: penalties and their proximal steps (SSL, Wen et al. NIPS'16; slimming).

A penalty on the loss is minimized here by *proximal* gradient steps: after every optimizer step
the weights go through the penalty's proximal operator with threshold ``lr x strength``. For the
L1 family that operator is a (group) soft threshold, which sets weights or whole groups to
**exactly** zero; a plain (sub)gradient step on ``|w|`` only makes them oscillate around zero,
so nothing could be removed without a second, lossy thresholding.

=============  =====================================================  ==========================
kind           penalty                                                proximal operator
=============  =====================================================  ==========================
``l1``         lasso: sum |w|                                         soft threshold
``l2``         ridge: 1/2 sum w^2                                     shrink by 1 / (1 + t)
``l1/2``       non-convex sum |w|^(1/2): sparser than L1 for the      half threshold
               same shrinkage of large weights (Xu et al. 2012)
``group-lasso``  sum_g sqrt(|g|) ||w_g||_2 over SSL groups             group soft threshold
``bn-l1``      network slimming: sum |gamma| over BatchNorm scales    soft threshold on gamma
               (relative to each layer's mean |gamma| by default)
=============  =====================================================  ==========================

Group lasso groups (for a conv weight ``W[n, c, i, j]``; a Linear weight is a 1x1 conv):

* ``filter``: ``W[n, :, :, :]``, a row of the GEMM view. Where a BatchNorm normalizes that output,
  the step that zeroes the filter also zeroes the BatchNorm's scale and shift for it, so the
  channel is exactly zero (otherwise BN would turn the zero into a constant, and the channel could
  not be removed without changing the outputs); training goes on and absorbs the dropped constant.
  The BatchNorm parameters are not shrunk otherwise: unlike the conv weights, they set the scale
  of the output;
* ``channel``: ``W[:, c, :, :]``, the weights reading input channel c;
* ``shape``: ``W[:, c, i, j]``, a column of the GEMM view;
* ``depth``: all of ``W`` (its BatchNorm zeroed with it): a whole layer, removable only where a
  shortcut carries the signal around it.

Each group's threshold is scaled by sqrt(group size) (Yuan and Lin), so a group goes to zero when
its RMS weight falls below ``lr x strength`` whatever its size.

BatchNorm changes the picture, and by default (``relative``) the penalty follows it: a conv
followed by BatchNorm computes the same function at any scale of its weights, so an absolute
penalty shrinks every group of the layer together at no cost to the loss, until whole layers hit
zero at once, and the shrunken weights meanwhile multiply the effective learning rate. (Measured
on the digits model: with the absolute form, entire residual branches die within a narrow band of
lambda and accuracy collapses.) For such layers groups are measured in units of the layer's RMS
weight and the layer's norm is restored after each step, so the step changes only the *shape* of
the weights: groups that are small compared with their layer shrink and die, the rest keep the
layer's scale. Layers without a following BatchNorm use the plain absolute form. The same holds
for slimming's BatchNorm scales, which the next BatchNorm renormalizes: by default each layer's
scales are thresholded relative to their mean and the layer's sum is kept. Overlapping
groupings (filter and channel together) are applied one after the other, a standard
approximation of their joint prox.

After training, :func:`remove_zero_channels` asks the structural engine which channels are now
dead (never read, or always exactly zero) and removes them physically; the removal is exact, and
is checked by comparing outputs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from edgeprune.data.task import Task
from edgeprune.errors import UsageError
from edgeprune.prune.graph import Group, build_groups, trace
from edgeprune.prune.patterns import as_4d, gemm_view, prunable_layers
from edgeprune.prune.surgery import apply_structural, plan_from_groups
from edgeprune.train import ProgressFn, TrainConfig, train
from edgeprune.vocab import REGULARIZERS

GROUPINGS = ("filter", "channel", "shape", "depth")


# -- proximal operators ------------------------------------------------------------------------
def soft_threshold(w: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """argmin_x 1/2 (x - w)^2 + threshold |x| = sign(w) max(|w| - threshold, 0): exact zeros.

    The closed form of the single-variable lasso: x = w - t if w > t, w + t if w < -t, else 0.
    """
    return torch.sign(w) * torch.clamp(w.abs() - threshold, min=0.0)


HALF_THRESHOLD_FACTOR = 54 ** (1 / 3) / 4


def half_threshold(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """argmin_x 1/2 (x - w)^2 + threshold |x|^(1/2), elementwise (Xu et al. 2012's half threshold).

    Xu et al. solve ``(x - w)^2 + lam |x|^(1/2)``, so ``lam = 2 threshold`` here. Below
    ``54^(1/3) / 4 x lam^(2/3)`` the minimizer is 0; above it, the closed form
    ``2/3 w (1 + cos(2 pi / 3 - 2/3 arccos(lam / 8 (|w| / 3)^(-3/2))))``. Unlike the soft threshold,
    large weights are shrunk less, and the jump to zero is a discontinuity (a non-convex penalty).
    """
    lam = 2.0 * threshold
    if lam <= 0:
        return w.clone()
    cut = HALF_THRESHOLD_FACTOR * lam ** (2 / 3)
    mag = w.abs().clamp_min(1e-30)
    phi = torch.arccos(torch.clamp(lam / 8 * (mag / 3) ** -1.5, -1.0, 1.0))
    shrunk = 2 / 3 * w * (1 + torch.cos(2 * math.pi / 3 - 2 / 3 * phi))
    return torch.where(w.abs() > cut, shrunk, torch.zeros_like(w))


def group_soft_threshold(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """Proximal step of ``threshold x ||w||_2`` for one group: shrink the group's norm, or zero it."""
    norm = torch.linalg.vector_norm(w)
    if float(norm) <= threshold:
        return torch.zeros_like(w)
    return w * (1 - threshold / norm)


# -- groups ------------------------------------------------------------------------------------
def group_view(weight: torch.Tensor, grouping: str) -> tuple[torch.Tensor, list[int]]:
    """The weight as ``[groups, group size]`` for an SSL grouping, and the shape its norms broadcast to.

    Raises:
        UsageError: unknown grouping.
    """
    w = as_4d(weight)
    o, c, kh, kw = w.shape
    if grouping == "filter":
        return w.reshape(o, -1), [o, 1, 1, 1]
    if grouping == "channel":
        return w.transpose(0, 1).reshape(c, -1), [1, c, 1, 1]
    if grouping == "shape":
        return w.permute(1, 2, 3, 0).reshape(c * kh * kw, o), [1, c, kh, kw]
    if grouping == "depth":
        return w.reshape(1, -1), [1, 1, 1, 1]
    raise UsageError(f"unknown group-lasso grouping '{grouping}': choose from {', '.join(GROUPINGS)}")


def conv_bn_pairs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """Conv2d/Linear path -> the BatchNorm that directly normalizes its output (its only user)."""
    gm = trace(model, torch.zeros(2, *input_shape))
    modules = dict(gm.named_modules())
    pairs = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[str(node.target)], (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        source = node.args[0]
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and len(source.users) == 1
            and isinstance(modules[str(source.target)], (nn.Conv2d, nn.Linear))
        ):
            pairs[str(source.target)] = str(node.target)
    return pairs


@dataclass(frozen=True)
class RegularizerConfig:
    """Which penalty, how strong, on what.

    Attributes:
        kind: a name in :data:`REGULARIZERS`.
        strength: lambda; the proximal threshold per step is ``lr x strength``.
        groupings: group-lasso groupings, any of :data:`GROUPINGS`.
        ignore: Conv2d/Linear paths left unpenalized (the stem and classifier, by convention).
        relative: group lasso and bn-l1: measure groups (or scales) in units of their layer's RMS
            weight (mean |gamma|) and keep the layer's norm, where BatchNorm makes that scale free
            (see the module docstring); False gives the plain absolute penalty.
    """

    kind: str
    strength: float
    groupings: tuple[str, ...] = ("filter", "channel")
    ignore: frozenset[str] = field(default_factory=frozenset)
    relative: bool = True

    def __post_init__(self) -> None:
        if self.kind not in REGULARIZERS:
            raise UsageError(f"unknown regularizer '{self.kind}': choose one of {', '.join(REGULARIZERS)}")
        if not self.strength > 0:
            raise UsageError(f"regularization strength must be positive, got {self.strength}")
        if self.kind == "group-lasso":
            if not self.groupings:
                raise UsageError("group lasso needs at least one grouping")
            for grouping in self.groupings:
                if grouping not in GROUPINGS:
                    raise UsageError(f"unknown group-lasso grouping '{grouping}': choose from {', '.join(GROUPINGS)}")


class Regularizer:
    """A penalty bound to a model: its value (for logging) and its proximal step (for training)."""

    def __init__(self, model: nn.Module, config: RegularizerConfig, input_shape: tuple[int, ...]) -> None:
        self.config = config
        self.layers = prunable_layers(model, config.ignore)
        modules = dict(model.named_modules())
        self.norms: dict[str, nn.Module] = {}  # layer -> the BatchNorm right after it
        if config.kind == "group-lasso":
            self.norms = {
                conv: modules[bn] for conv, bn in conv_bn_pairs(model, input_shape).items() if conv in self.layers
            }
        self.bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]

    def penalty(self) -> torch.Tensor:
        """R(W), differentiable; strength not included."""
        kind = self.config.kind
        if kind == "bn-l1":
            return sum((bn.weight.abs().sum() for bn in self.bns if bn.weight is not None), torch.zeros(()))
        total = torch.zeros(())
        for path, layer in self.layers.items():
            w = layer.weight
            assert isinstance(w, torch.Tensor)
            if kind == "l1":
                total = total + w.abs().sum()
            elif kind == "l2":
                total = total + 0.5 * w.pow(2).sum()
            elif kind == "l1/2":
                total = total + w.abs().sqrt().sum()
            else:
                for grouping in self.config.groupings:
                    norms, size, _, _ = self._group_norms(path, w, grouping)
                    total = total + math.sqrt(size) * norms.sum()
        return total

    @torch.no_grad()
    def prox(self, lr: float) -> None:
        """Apply the proximal operator with threshold ``lr x strength`` to every penalized tensor."""
        t = lr * self.config.strength
        kind = self.config.kind
        if kind == "bn-l1":
            for bn in self.bns:
                if bn.weight is None:
                    continue
                before = float(bn.weight.abs().sum())
                scale = before / bn.weight.numel() if self.config.relative else 1.0
                bn.weight.copy_(soft_threshold(bn.weight, t * scale))
                after = float(bn.weight.abs().sum())
                if self.config.relative and after > 0:
                    bn.weight.mul_(before / after)
            return
        for path, layer in self.layers.items():
            w = layer.weight
            assert isinstance(w, torch.Tensor)
            if kind == "l1":
                w.copy_(soft_threshold(w, t))
            elif kind == "l2":
                w.div_(1 + t)
            elif kind == "l1/2":
                w.copy_(half_threshold(w, t))
            else:
                before = float(w.norm())
                filters_before = w.detach().flatten(1).norm(dim=1)
                for grouping in self.config.groupings:
                    self._group_prox(path, w, grouping, t)
                after = float(w.norm())
                if self._relative(path) and after > 0:
                    w.mul_(before / after)  # BatchNorm makes the layer's scale free: keep it, move only its shape
                self._follow_scale(path, w.detach().flatten(1).norm(dim=1) / filters_before.clamp_min(1e-30))

    def _group_norms(
        self, path: str, w: torch.Tensor, grouping: str
    ) -> tuple[torch.Tensor, int, nn.Module | None, list[int]]:
        """Each group's norm (in units of the layer's RMS weight when ``relative``), its size, its BN."""
        groups, shape = group_view(w, grouping)
        scale = float(w.detach().pow(2).mean().sqrt()) if self._relative(path) else 1.0
        norms = (groups / max(scale, 1e-30)).pow(2).sum(1).sqrt()
        bn = self.norms.get(path) if grouping in ("filter", "depth") else None
        return norms, groups.shape[1], bn, shape

    def _follow_scale(self, path: str, ratio: torch.Tensor) -> None:
        """Rescale the running statistics of the BatchNorm after ``path`` by each filter's change of scale.

        The step rescales filters between two batches, and BatchNorm in eval mode would normalize
        with statistics of the old scale until training catches up; for a pure rescaling this
        update is exact.
        """
        bn = self.norms.get(path)
        if bn is None or getattr(bn, "running_var", None) is None:
            return
        assert isinstance(bn.running_mean, torch.Tensor) and isinstance(bn.running_var, torch.Tensor)
        bn.running_mean.mul_(ratio)
        bn.running_var.mul_(ratio.pow(2))

    def _relative(self, path: str) -> bool:
        return self.config.relative and path in self.norms

    def _group_prox(self, path: str, w: torch.Tensor, grouping: str, t: float) -> None:
        norm, size, bn, shape = self._group_norms(path, w, grouping)
        factor = torch.clamp(1 - t * math.sqrt(size) / norm.clamp_min(1e-30), min=0.0)
        w4 = as_4d(w)
        w4.mul_(factor.reshape(shape))
        if bn is not None:
            # A dead filter takes its BatchNorm scale and shift with it, so the channel is exactly zero.
            assert isinstance(bn.weight, torch.Tensor) and isinstance(bn.bias, torch.Tensor)
            alive = (factor > 0).to(bn.weight.dtype)
            alive = alive if grouping == "filter" else alive.expand_as(bn.weight)
            bn.weight.mul_(alive)
            bn.bias.mul_(alive)


def train_regularized(
    model: nn.Module,
    data: Task | tuple[torch.Tensor, ...],
    config: TrainConfig,
    regularizer: Regularizer,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: ProgressFn | None = None,
) -> nn.Module:
    """Train in place like :func:`edgeprune.train.train`, with a proximal step after each update.

    The loop is the same (seeded SGD with Nesterov momentum, one-cycle schedule) so that a run with
    and without the penalty differ in the penalty only. The proximal threshold follows the learning
    rate of each step, as proximal gradient descent prescribes.
    """
    return train(model, data, config, masks=masks, on_step=on_step, after_update=regularizer.prox)


# -- what the penalty left -----------------------------------------------------------------------
def structure_report(model: nn.Module, ignore: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Per layer, the sparsity SSL reports: weights, GEMM rows (filters), columns (shapes), channels."""
    rows = []
    for path, layer in prunable_layers(model, ignore).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        nz = gemm_view(weight.detach()) != 0
        channels = as_4d(weight.detach() != 0).any(-1).any(-1).any(0)
        rows.append(
            {
                "module": path,
                "weight_sparsity": 1 - float(nz.float().mean()),
                "row_sparsity": 1 - float(nz.any(1).float().mean()),
                "column_sparsity": 1 - float(nz.any(0).float().mean()),
                "channel_sparsity": 1 - float(channels.float().mean()),
            }
        )
    return rows


def zero_masks(model: nn.Module, ignore: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Masks that keep every non-zero weight, for layers that hold zeros: fine-tuning keeps them zero."""
    masks = {}
    for path, layer in prunable_layers(model, ignore).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        mask = weight.detach() != 0
        if not bool(mask.all()):
            masks[path] = mask
    return masks


def _place_slice(module: nn.Module, kind: str, index: int, expand: int) -> list[torch.Tensor]:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    if kind == "in":
        return [weight.detach()[:, index : index + expand]]
    tensors = [weight.detach()[index]]
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        tensors.append(bias.detach()[index : index + 1])
    return tensors


def _norm_constant(bn: nn.Module, index: int) -> float:
    """What a BatchNorm (eval mode) outputs for an all-zero input channel."""
    assert isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d))
    gamma = float(bn.weight[index]) if bn.weight is not None else 1.0
    beta = float(bn.bias[index]) if bn.bias is not None else 0.0
    if bn.running_mean is None or bn.running_var is None:
        return beta  # batch statistics of an all-zero channel: mean 0, variance 0
    return beta - gamma * float(bn.running_mean[index]) / math.sqrt(float(bn.running_var[index]) + bn.eps)


def _simple_group(modules: dict[str, nn.Module], group: Group) -> bool:
    """Whether removal of a zero channel from this group is provably exact.

    Only per-channel operations qualify: plain or depthwise convolutions, linear layers and
    BatchNorm. A LayerNorm or GroupNorm mixes channels in its statistics, and a grouped
    convolution's input indices are local to its groups, so their channels are never removed here.
    """
    for member in group.members:
        module = modules.get(member.module)
        if member.kind == "norm" and not isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return False
        if member.kind in ("out", "in") and not isinstance(module, (nn.Conv2d, nn.Linear)):
            return False
        if isinstance(module, nn.Conv2d) and module.groups > 1 and member.kind != "dw":
            return False
        if member.kind not in ("out", "in", "dw", "norm"):
            return False
    return True


def dead_channels(modules: dict[str, nn.Module], group: Group, tol: float = 0.0) -> list[int]:
    """Channels of a group that can be removed without changing the model's output.

    A channel is dead if no consumer reads it (all its input weights are zero), or if it is zero
    everywhere it is produced: every producer's filter and bias are zero and every BatchNorm on it
    maps zero to zero. Groups holding anything but per-channel operations are left alone (see
    :func:`_simple_group`).
    """
    if not _simple_group(modules, group):
        return []
    dead = []
    for c, places in enumerate(group.channels):
        consumers = [p for p in places if p.kind == "in"]
        unread = bool(consumers) and all(
            float(t.abs().max()) <= tol
            for p in consumers
            for t in _place_slice(modules[p.module], "in", p.index, p.expand)
        )
        producers = [p for p in places if p.kind in ("out", "dw")]
        unproduced = (
            bool(producers)
            and all(
                float(t.abs().max()) <= tol
                for p in producers
                for t in _place_slice(modules[p.module], p.kind, p.index, 1)
            )
            and all(abs(_norm_constant(modules[p.module], p.index)) <= tol for p in places if p.kind == "norm")
        )
        if unread or unproduced:
            dead.append(c)
    return dead


@torch.no_grad()
def remove_zero_channels(
    model: nn.Module, input_shape: tuple[int, ...], tol: float = 0.0, ignore: frozenset[str] = frozenset()
) -> tuple[nn.Module, list[dict[str, Any]], dict[str, Any]]:
    """Remove every dead channel physically, through the structural engine; the input is untouched.

    Returns:
        (pruned copy, structural plan entries, report with per-group removal counts and the largest
        output difference between the model and its pruned copy on a random batch).
    """
    model.eval()
    groups = build_groups(model, torch.zeros(2, *input_shape))
    modules = dict(model.named_modules())
    keep: dict[int, list[int]] = {}
    removed = []
    for group in groups:
        if group.fixed is not None or any(m.module in ignore for m in group.producers):
            continue
        dead = set(dead_channels(modules, group, tol))
        if not dead:
            continue
        kept = [c for c in range(group.size) if c not in dead]
        if not kept:  # a group cannot vanish: keep its first channel (it contributes nothing anyway)
            kept = [0]
        keep[group.id] = kept
        removed.append(
            {
                "group": group.id,
                "size": group.size,
                "removed": group.size - len(kept),
                "producers": [m.module for m in group.producers],
            }
        )
    plan = plan_from_groups(model, groups, keep) if keep else []
    pruned = apply_structural(copy.deepcopy(model), plan).eval()
    probe = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
    diff = float((pruned(probe) - model(probe)).abs().max())
    return (
        pruned,
        plan,
        {"groups": removed, "channels_removed": sum(r["removed"] for r in removed), "max_output_diff": diff},
    )
