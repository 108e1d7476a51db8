"""Channel importance criteria: a group in, one score per channel out (higher = keep).

Scores are aggregated over every member of a coupled group, because a channel of a residual
stream lives in several convolutions at once: judging it by one of them would remove channels
that matter to the others. Each member's scores are normalized by their mean first, so a layer
with large weights does not outvote the rest.

Built in:

* ``l1``, ``l2``: the norm of each channel's filter (outputs) and of its input slice in every
  consumer (Li et al., "Pruning Filters for Efficient ConvNets", 2017);
* ``bn-scale``: |gamma| of the group's norms (network slimming, Liu et al. 2017);
* ``taylor``: first-order Taylor, ``|w * dL/dw|`` summed over each channel's weights in every
  member, norms and directly used parameters included (Molchanov et al. 2019). It needs a few
  calibration batches (``ChannelConfig(calibration=...)``); without labels the loss is the
  cross-entropy against the model's own predictions;
* ``fpgm``: distance of each filter from the others of its layer: filters near the geometric
  median are the replaceable ones (He et al., "Filter Pruning via Geometric Median", 2019);
* ``random``: the baseline every real criterion must beat.

Add your own with :func:`register_criterion`::

    @register_criterion("my-score")
    def my_score(modules, group, ctx):
        return torch.ones(group.size)

``modules`` maps module paths to modules (``modules[""]`` is the model); ``ctx`` carries
``seed``, ``calibration`` (batches), ``loss_fn`` and a ``cache`` dict shared by all the groups of
one pruning run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.prune.graph import Group

Criterion = Callable[[Mapping[str, nn.Module], Group, Mapping[str, Any]], torch.Tensor]
CRITERIA: dict[str, Criterion] = {}
# A per-index score along one place's dimension: (path, kind, dim) -> 1-D scores or None.
SiteScores = Callable[[str, str, int], "torch.Tensor | None"]
# The tensor a criterion measures for (module path, attribute name): a weight, or |w * grad|.
TensorOf = Callable[[str, str], "torch.Tensor | None"]


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


def aggregate(
    group: Group, site_scores: SiteScores, ctx: Mapping[str, Any] | None = None, tag: str = ""
) -> torch.Tensor:
    """Sum, over a group's members, each channel's per-member score normalized by the member's mean.

    A channel's score in one member is the sum of the site's per-index scores over the indices
    it occupies there (one index for a conv filter, H*W features after a flatten, one index per
    conv group for a grouped conv). With a ``tag``, per-site scores are memoized in
    ``ctx["cache"]`` across groups (a DenseNet's convs read channels of many groups).
    """
    shared = ctx.get("cache") if ctx is not None and tag else None
    cache: dict[Any, np.ndarray | None] = shared if isinstance(shared, dict) else {}
    totals: dict[tuple[str, str, int], np.ndarray] = {}
    for c, places in enumerate(group.channels):
        for place in places:
            key = (place.module, place.kind, place.dim)
            memo = (tag, *key)
            if memo not in cache:
                scores = site_scores(*key)
                cache[memo] = (
                    None
                    if scores is None
                    else np.concatenate([[0.0], np.cumsum(scores.detach().double().cpu().numpy())])
                )
            cumulative = cache[memo]
            if cumulative is None:
                continue
            values = totals.setdefault(key, np.zeros(group.size))
            values[c] += cumulative[place.index + place.expand] - cumulative[place.index]
    total = np.zeros(group.size)
    for values in totals.values():
        total += values / max(float(values.mean()), 1e-12)
    return torch.from_numpy(total).float()


def _along(tensor: torch.Tensor, dim: int, p: int) -> torch.Tensor:
    """The p-norm of every slice of ``tensor`` along ``dim``."""
    moved = tensor.detach().transpose(0, dim).reshape(tensor.shape[dim], -1)
    return moved.abs().sum(1) if p == 1 else moved.pow(2).sum(1).sqrt()


def _grouped_in(module: nn.Module, tensor: torch.Tensor, p: int) -> torch.Tensor:
    """Per global input channel of a grouped conv, whose weight's dim 1 indexes within a group."""
    assert isinstance(module, nn.modules.conv._ConvNd)
    groups = module.groups
    width = tensor.shape[1]
    blocks = tensor.detach().reshape(groups, tensor.shape[0] // groups, width, -1).transpose(1, 2)
    flat = blocks.reshape(groups * width, -1)
    return flat.abs().sum(1) if p == 1 else flat.pow(2).sum(1).sqrt()


def site_magnitudes(modules: Mapping[str, nn.Module], tensor_of: TensorOf, p: int, kinds: Iterable[str]) -> SiteScores:
    """Per-index p-norms of ``tensor_of``'s tensors at every place kind in ``kinds``.

    ``out``/``dw`` measure filters (weight dim 0), ``in`` input slices (weight dim 1), ``norm``
    the affine weight and bias, ``param`` a parameter along the place's dimension.
    """
    wanted = set(kinds)

    def scores(path: str, kind: str, dim: int) -> torch.Tensor | None:
        if kind not in wanted:
            return None
        if kind == "param":
            owner, _, attr = path.rpartition(".")
            tensor = tensor_of(owner, attr)
            return None if tensor is None else _along(tensor, dim, p)
        module = modules.get(path)
        if module is None:
            return None
        if kind == "norm":
            parts = [t for t in (tensor_of(path, "weight"), tensor_of(path, "bias")) if t is not None]
            return sum((_along(t, 0, p) for t in parts), torch.zeros(())) if parts else None
        weight = tensor_of(path, "weight")
        if weight is None:
            return None
        if kind in ("out", "dw"):
            return _along(weight, 0, p)
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
            return _grouped_in(module, weight, p)
        return _along(weight, 1, p) if weight.ndim > 1 else None

    return scores


def _weights(modules: Mapping[str, nn.Module]) -> TensorOf:
    def tensor_of(path: str, attr: str) -> torch.Tensor | None:
        module = modules.get(path)
        value = getattr(module, attr, None) if module is not None else None
        return value.detach() if isinstance(value, torch.Tensor) else None

    return tensor_of


def _member_norms(modules: Mapping[str, nn.Module], group: Group, p: int, ctx: Mapping[str, Any]) -> torch.Tensor:
    return aggregate(group, site_magnitudes(modules, _weights(modules), p, ("out", "dw", "in")), ctx, f"l{p}")


@register_criterion("l1")
def l1(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """L1 norm of each channel's weights over all members (Li et al., "Pruning Filters", 2017)."""
    return _member_norms(modules, group, 1, ctx)


@register_criterion("l2")
def l2(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """L2 norm of each channel's weights over all members."""
    return _member_norms(modules, group, 2, ctx)


@register_criterion("bn-scale")
def bn_scale(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """|gamma| of the group's norms (network slimming, Liu et al. 2017); L1 if there are none."""
    weights = _weights(modules)

    def gamma(path: str, attr: str) -> torch.Tensor | None:
        return weights(path, attr) if attr == "weight" else None

    if not any(m.kind == "norm" and getattr(modules.get(m.module), "weight", None) is not None for m in group.members):
        return l1(modules, group, ctx)
    return aggregate(group, site_magnitudes(modules, gamma, 1, ("norm",)), ctx, "bn-scale")


@register_criterion("random")
def random(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """Random scores (seeded): the baseline every real criterion must beat."""
    generator = torch.Generator().manual_seed(int(ctx.get("seed", 0)) * 100_003 + group.id)
    return torch.rand(group.size, generator=generator)


# -- first-order Taylor -------------------------------------------------------------------------
def _split_batch(batch: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], batch[1] if len(batch) > 1 else None
    raise UsageError("calibration batches must be tensors or (inputs, targets) pairs")


def _default_loss(output: torch.Tensor, target: Any) -> torch.Tensor:
    """Cross-entropy against the labels, or against the model's own predictions without labels."""
    if output.ndim == 2:
        labels = target if target is not None else output.detach().argmax(1)
        return F.cross_entropy(output, labels)
    return output.pow(2).mean()


def gradients(
    model: nn.Module, batches: Iterable[Any], loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Sum of dL/dp over the calibration batches, for every parameter, without touching the model.

    ``torch.func.functional_call`` runs the model on detached views of its parameters, so the
    user's ``.grad`` fields, ``requires_grad`` flags and BatchNorm statistics (eval mode) stay as
    they were. The gradients are one extra copy of the weights, freed with the cache.
    """
    params = {name: p.detach().requires_grad_(True) for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    names = list(params)
    total: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        count = 0
        for batch in batches:
            inputs, target = _split_batch(batch)
            with torch.enable_grad():
                output = torch.func.functional_call(model, {**params, **buffers}, (inputs,))
                if isinstance(output, (tuple, list)):
                    output = output[0]
                loss = (loss_fn or _default_loss)(output, target)
                grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            for name, grad in zip(names, grads):
                if grad is None:
                    continue
                if name in total:
                    total[name] += grad
                else:
                    total[name] = grad
            count += 1
        if count == 0:
            raise UsageError("the calibration set is empty: pass at least one batch")
    finally:
        model.train(was_training)
    return total


@register_criterion("taylor")
def taylor(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """First-order Taylor: ``|w * dL/dw|`` of each channel's weights over all members.

    Raises:
        UsageError: no calibration batches in ``ctx``.
    """
    batches = ctx.get("calibration")
    if not batches:
        raise UsageError(
            "criterion 'taylor' needs a few calibration batches: "
            "ChannelConfig(criterion='taylor', calibration=[batch, ...])"
        )
    cache = ctx.get("cache")
    grads = cache.get("taylor") if isinstance(cache, dict) else None
    if grads is None:
        grads = gradients(modules[""], batches, ctx.get("loss_fn"))
        if isinstance(cache, dict):
            cache["taylor"] = grads

    def saliency(path: str, attr: str) -> torch.Tensor | None:
        name = f"{path}.{attr}" if path else attr
        module = modules.get(path)
        value = getattr(module, attr, None) if module is not None else None
        grad = grads.get(name)
        if not isinstance(value, torch.Tensor) or grad is None:
            return None
        return (value.detach() * grad).abs()

    return aggregate(group, site_magnitudes(modules, saliency, 1, ("out", "dw", "in", "norm", "param")), ctx, "taylor")


# -- FPGM ---------------------------------------------------------------------------------------
_FPGM_MAX_FEATURES = 1024


@register_criterion("fpgm")
def fpgm(modules: Mapping[str, nn.Module], group: Group, ctx: Mapping[str, Any]) -> torch.Tensor:
    """Sum of Euclidean distances from each filter to the other filters of its layer.

    A filter close to the layer's geometric median is well represented by the others and goes
    first. Filters longer than 1024 weights are compared on a seeded random subset of 1024
    coordinates (an unbiased estimate of the squared distances), which keeps wide linear layers
    from costing seconds each. Groups without filters fall back to ``l2``.
    """
    seed = int(ctx.get("seed", 0))

    def distances(path: str, kind: str, dim: int) -> torch.Tensor | None:
        if kind not in ("out", "dw"):
            return None
        weight = getattr(modules.get(path), "weight", None)
        if not isinstance(weight, torch.Tensor):
            return None
        flat = weight.detach().reshape(weight.shape[0], -1).float()
        if flat.shape[1] > _FPGM_MAX_FEATURES:
            generator = torch.Generator().manual_seed(seed)
            columns = torch.randperm(flat.shape[1], generator=generator)[:_FPGM_MAX_FEATURES]
            flat = flat[:, columns]
        return torch.cdist(flat.unsqueeze(0), flat.unsqueeze(0)).squeeze(0).sum(1)

    if not group.producers:
        return l2(modules, group, ctx)
    return aggregate(group, distances, ctx, "fpgm")
