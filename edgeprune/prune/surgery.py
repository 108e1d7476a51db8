"""Physical channel removal: turn "keep these channels of each group" into smaller ordinary modules.

Surgery works in two steps so that it can be replayed: :func:`plan_from_groups` turns group-level
decisions into per-module index lists (output channels kept, input features kept), and
:func:`apply_structural` slices weights by those lists. The result is a plain ``nn.Module`` with
no masks or wrappers, which exports to ONNX like any other.

Per-module entry, as stored in ``plan.json``::

    {"module": "layer1.conv1", "type": "Conv2d", "out_keep": [0, 2, 3], "in_keep": [1, 2, 5]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from edgeprune.errors import PruneError
from edgeprune.prune.graph import Group


def plan_from_groups(model: nn.Module, groups: Sequence[Group],
                     keep: Mapping[int, Sequence[int]]) -> list[dict[str, Any]]:
    """Per-module slicing instructions for the kept channels of each pruned group.

    Args:
        model: the unpruned model the groups were built from.
        groups: its groups (from :func:`edgeprune.prune.graph.build_groups`).
        keep: group id -> channel indices to keep; groups not listed keep everything.
    """
    removed_out: dict[str, set[int]] = {}
    removed_in: dict[str, set[int]] = {}
    for group in groups:
        if group.id not in keep:
            continue
        kept = {int(i) for i in keep[group.id]}
        if not kept:
            raise PruneError(f"group {group.id} would lose all of its {group.size} channels")
        for channel, places in enumerate(group.channels):
            if channel in kept:
                continue
            for place in places:
                if place.kind in ("out", "norm", "dw"):
                    removed_out.setdefault(place.module, set()).add(place.index)
                elif place.kind == "in":
                    removed_in.setdefault(place.module, set()).update(
                        range(place.index, place.index + place.expand))
    entries = []
    for path, module in model.named_modules():
        if path not in removed_out and path not in removed_in:
            continue
        entry: dict[str, Any] = {"module": path, "type": type(module).__name__}
        if path in removed_out:
            entry["out_keep"] = [i for i in range(_out_size(module)) if i not in removed_out[path]]
        if path in removed_in:
            entry["in_keep"] = [i for i in range(_in_size(module)) if i not in removed_in[path]]
        entries.append(entry)
    return entries


def _out_size(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return module.num_features
    raise PruneError(f"cannot remove output channels of a {type(module).__name__}")


def _in_size(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels
    if isinstance(module, nn.Linear):
        return module.in_features
    raise PruneError(f"cannot remove input channels of a {type(module).__name__}")


def _index(tensor: torch.Tensor, dim: int, keep: Sequence[int]) -> torch.Tensor:
    return torch.index_select(tensor.detach(), dim, torch.as_tensor(list(keep), dtype=torch.long)).clone()


@torch.no_grad()
def apply_structural(model: nn.Module, plan: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Slice the model's modules in place according to plan entries; returns the model.

    Raises:
        PruneError: an entry names a module that does not exist or is of an unsupported type.
    """
    modules = dict(model.named_modules())
    for entry in plan:
        path = entry["module"]
        if path not in modules:
            raise PruneError(f"plan names module '{path}', which this model does not have")
        module = modules[path]
        out_keep, in_keep = entry.get("out_keep"), entry.get("in_keep")
        if isinstance(module, nn.Conv2d):
            _slice_conv(module, out_keep, in_keep)
        elif isinstance(module, nn.Linear):
            if out_keep is not None:
                module.weight = nn.Parameter(_index(module.weight, 0, out_keep))
                if module.bias is not None:
                    module.bias = nn.Parameter(_index(module.bias, 0, out_keep))
                module.out_features = len(out_keep)
            if in_keep is not None:
                module.weight = nn.Parameter(_index(module.weight, 1, in_keep))
                module.in_features = len(in_keep)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            assert out_keep is not None
            if module.weight is not None:
                module.weight = nn.Parameter(_index(module.weight, 0, out_keep))
                module.bias = nn.Parameter(_index(module.bias, 0, out_keep))
            if module.running_mean is not None:
                module.running_mean = _index(module.running_mean, 0, out_keep)
                module.running_var = _index(module.running_var, 0, out_keep)  # type: ignore[arg-type]
            module.num_features = len(out_keep)
        else:
            raise PruneError(f"plan entry for '{path}': surgery on {type(module).__name__} is not supported")
    return model


def _slice_conv(conv: nn.Conv2d, out_keep: Sequence[int] | None, in_keep: Sequence[int] | None) -> None:
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if conv.groups > 1 and not depthwise:
        raise PruneError(f"grouped convolution with groups={conv.groups} cannot be sliced yet")
    if out_keep is not None:
        conv.weight = nn.Parameter(_index(conv.weight, 0, out_keep))
        if conv.bias is not None:
            conv.bias = nn.Parameter(_index(conv.bias, 0, out_keep))
        conv.out_channels = len(out_keep)
    if depthwise:
        # Depthwise: one filter per channel; input and output channels are the same channels.
        conv.in_channels = conv.out_channels
        conv.groups = conv.out_channels
    elif in_keep is not None:
        conv.weight = nn.Parameter(_index(conv.weight, 1, in_keep))
        conv.in_channels = len(in_keep)
