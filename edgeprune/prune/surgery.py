"""Physical channel removal: turn "keep these channels of each group" into smaller ordinary modules.

Surgery works in two steps so that it can be replayed: :func:`plan_from_groups` turns group-level
decisions into per-module index lists (output channels kept, input features kept, parameter
indices kept), and :func:`apply_structural` slices weights by those lists. The result is a plain
``nn.Module`` with no masks or wrappers, which exports to ONNX like any other.

Per-module entry, as stored in ``plan.json``::

    {"module": "layer1.conv1", "type": "Conv2d", "out_keep": [0, 2, 3], "in_keep": [1, 2, 5]}
    {"module": "features.1.0", "type": "CNBlock", "params": {"layer_scale": {"0": [0, 2, 3]}}}

Grouped convolutions keep their ``groups``: the graph couples the i-th channel of every group, so
each group keeps the same local indices; a depthwise convolution loses whole groups instead (its
``groups`` follows its channel count). GroupNorm keeps ``num_groups`` the same way, unless it has
one channel per group. Every entry is checked before any module is changed, so a plan that does
not fit leaves the model as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from edgeprune.errors import PruneError
from edgeprune.prune.graph import Group

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def plan_from_groups(
    model: nn.Module, groups: Sequence[Group], keep: Mapping[int, Sequence[int]]
) -> list[dict[str, Any]]:
    """Per-module slicing instructions for the kept channels of each pruned group.

    Args:
        model: the unpruned model the groups were built from.
        groups: its groups (from :func:`edgeprune.prune.graph.build_groups`).
        keep: group id -> channel indices to keep; groups not listed keep everything.

    Raises:
        PruneError: a group would lose every channel, or the kept channels break a module's
            structure (unequal conv groups).
    """
    removed_out: dict[str, set[int]] = {}
    removed_in: dict[str, set[int]] = {}
    removed_param: dict[str, dict[str, dict[int, set[int]]]] = {}
    for group in groups:
        if group.id not in keep:
            continue
        kept = {int(i) for i in keep[group.id]}
        if not kept:
            raise PruneError(f"group {group.id} would lose all of its {group.size} channels")
        if group.fixed is not None and len(kept) < group.size:
            raise PruneError(f"group {group.id} cannot be pruned: {group.fixed}")
        for channel, places in enumerate(group.channels):
            if channel in kept:
                continue
            for place in places:
                if place.kind in ("out", "norm", "dw"):
                    removed_out.setdefault(place.module, set()).add(place.index)
                elif place.kind == "in":
                    removed_in.setdefault(place.module, set()).update(range(place.index, place.index + place.expand))
                elif place.kind == "param":
                    owner, _, attr = place.module.rpartition(".")
                    removed_param.setdefault(owner, {}).setdefault(attr, {}).setdefault(place.dim, set()).add(
                        place.index
                    )
    entries = []
    for path, module in model.named_modules():
        if path not in removed_out and path not in removed_in and path not in removed_param:
            continue
        entry: dict[str, Any] = {"module": path, "type": type(module).__name__}
        if path in removed_out:
            entry["out_keep"] = [i for i in range(_out_size(path, module)) if i not in removed_out[path]]
        if path in removed_in:
            entry["in_keep"] = [i for i in range(_in_size(path, module)) if i not in removed_in[path]]
        if path in removed_param:
            params: dict[str, dict[str, list[int]]] = {}
            for attr, dims in removed_param[path].items():
                tensor = _tensor(module, path, attr)
                params[attr] = {
                    str(d): [i for i in range(tensor.shape[d]) if i not in gone] for d, gone in sorted(dims.items())
                }
            entry["params"] = params
        _check(path, module, entry)
        entries.append(entry)
    return entries


def _out_size(path: str, module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, _NORMS):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    if isinstance(module, nn.PReLU):
        return module.num_parameters
    raise PruneError(f"cannot remove output channels of '{path}', a {type(module).__name__}")


def _in_size(path: str, module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels
    if isinstance(module, nn.Linear):
        return module.in_features
    raise PruneError(f"cannot remove input channels of '{path}', a {type(module).__name__}")


def _tensor(module: nn.Module, path: str, attr: str) -> torch.Tensor:
    tensor = getattr(module, attr, None)
    if not isinstance(tensor, torch.Tensor):
        raise PruneError(f"plan entry for '{path}': it has no parameter or buffer '{attr}'")
    return tensor


def _local(keep: Sequence[int], groups: int, width: int, what: str) -> list[int]:
    """The kept indices within one group, which must be the same in every group."""
    per_group = [sorted(i - g * width for i in keep if g * width <= i < (g + 1) * width) for g in range(groups)]
    if any(p != per_group[0] for p in per_group):
        raise PruneError(f"{what}: kept channels differ between its {groups} groups")
    if not per_group[0]:
        raise PruneError(f"{what}: every channel of its groups would be removed")
    return per_group[0]


def _check(path: str, module: nn.Module, entry: Mapping[str, Any]) -> None:
    """Refuse an entry that would leave a module inconsistent (before anything is changed)."""
    out_keep, in_keep = entry.get("out_keep"), entry.get("in_keep")
    for name, keep in (("out_keep", out_keep), ("in_keep", in_keep)):
        if keep is not None and not keep:
            raise PruneError(f"plan entry for '{path}': {name} is empty")
    if isinstance(module, nn.modules.conv._ConvNd):
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            raise PruneError(f"plan entry for '{path}': surgery on transposed convolutions is not supported")
        groups = module.groups
        depthwise = groups > 1 and groups == module.in_channels
        if depthwise:
            if in_keep is not None:
                raise PruneError(f"plan entry for '{path}': a depthwise conv takes out_keep only")
            if out_keep is not None:
                k = module.out_channels // groups
                kept_groups = {i // k for i in out_keep}
                if len(out_keep) != k * len(kept_groups):
                    raise PruneError(f"plan entry for '{path}': a depthwise conv loses whole groups only")
        elif groups > 1:
            if out_keep is not None:
                _local(out_keep, groups, module.out_channels // groups, path)
            if in_keep is not None:
                _local(in_keep, groups, module.in_channels // groups, path)
    elif isinstance(module, nn.GroupNorm) and out_keep is not None:
        if 1 < module.num_groups < module.num_channels:
            _local(out_keep, module.num_groups, module.num_channels // module.num_groups, path)
    elif isinstance(module, nn.Linear) or isinstance(module, _NORMS + (nn.LayerNorm, nn.PReLU)):
        if in_keep is not None and not isinstance(module, nn.Linear):
            raise PruneError(f"plan entry for '{path}': a {type(module).__name__} has no input channels")
    elif out_keep is not None or in_keep is not None:
        raise PruneError(f"plan entry for '{path}': surgery on {type(module).__name__} is not supported")
    for name, keep in (("out_keep", out_keep), ("in_keep", in_keep)):
        if keep is not None:
            size = _out_size(path, module) if name == "out_keep" else _in_size(path, module)
            if min(keep) < 0 or max(keep) >= size or len(set(keep)) != len(keep):
                raise PruneError(f"plan entry for '{path}': {name} does not fit its {size} channels")
    for attr, dims in (entry.get("params") or {}).items():
        tensor = _tensor(module, path, attr)
        for d, keep in dims.items():
            if int(d) >= tensor.ndim or not keep or max(keep) >= tensor.shape[int(d)]:
                raise PruneError(f"plan entry for '{path}': '{attr}' cannot keep {len(keep)} of dim {d}")


def _index(tensor: torch.Tensor, dim: int, keep: Sequence[int]) -> torch.Tensor:
    """A new tensor holding only the kept indices (index_select copies just what is kept)."""
    return torch.index_select(tensor.detach(), dim, torch.as_tensor(list(keep), dtype=torch.long))


def _wrap(old: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as the same kind of attribute as ``old`` (a parameter keeps its requires_grad)."""
    if isinstance(old, nn.Parameter):
        return nn.Parameter(tensor, requires_grad=old.requires_grad)
    return tensor


def _set(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace a parameter or buffer, keeping its kind."""
    wrapped = _wrap(getattr(module, name), tensor)
    if isinstance(wrapped, nn.Parameter):
        setattr(module, name, wrapped)
    else:
        module._buffers[name] = wrapped


def _sliced(module: nn.Module, entry: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The new values of the tensors an entry slices, computed from the module (left unchanged)."""
    new: dict[str, torch.Tensor] = {}

    def cut(names: Sequence[str], dim: int, keep: Sequence[int]) -> None:
        for name in names:
            tensor = new.get(name, getattr(module, name, None))
            if isinstance(tensor, torch.Tensor) and tensor.ndim > dim:
                new[name] = _index(tensor, dim, keep)

    out_keep, in_keep = entry.get("out_keep"), entry.get("in_keep")
    if isinstance(module, nn.modules.conv._ConvNd):
        groups = module.groups
        if out_keep is not None:
            cut(("weight", "bias"), 0, out_keep)
        if in_keep is not None and not (groups > 1 and groups == module.in_channels):
            local = _local(in_keep, groups, module.in_channels // groups, "conv") if groups > 1 else in_keep
            cut(("weight",), 1, local)
    elif isinstance(module, nn.Linear):
        if out_keep is not None:
            cut(("weight", "bias"), 0, out_keep)
        if in_keep is not None:
            cut(("weight",), 1, in_keep)
    elif out_keep is not None:
        cut(("weight", "bias", "running_mean", "running_var"), 0, out_keep)
    for attr, dims in (entry.get("params") or {}).items():
        for d, keep in dims.items():
            cut((attr,), int(d), keep)
    return new


def _resize(module: nn.Module, entry: Mapping[str, Any]) -> None:
    """Set the size attributes (channels, groups, normalized shape) that match the sliced tensors."""
    out_keep, in_keep = entry.get("out_keep"), entry.get("in_keep")
    if isinstance(module, nn.modules.conv._ConvNd):
        groups = module.groups
        if groups > 1 and groups == module.in_channels:
            if out_keep is not None:
                per_group = module.out_channels // groups
                module.out_channels = len(out_keep)
                module.groups = module.in_channels = len(out_keep) // per_group
            return
        if out_keep is not None:
            module.out_channels = len(out_keep)
        if in_keep is not None:
            module.in_channels = (
                len(in_keep)
                if groups == 1
                else groups * len(_local(in_keep, groups, module.in_channels // groups, "conv"))
            )
    elif isinstance(module, nn.Linear):
        if out_keep is not None:
            module.out_features = len(out_keep)
        if in_keep is not None:
            module.in_features = len(in_keep)
    elif out_keep is not None:
        if isinstance(module, _NORMS):
            module.num_features = len(out_keep)
        elif isinstance(module, nn.GroupNorm):
            if module.num_groups == module.num_channels:
                module.num_groups = len(out_keep)
            module.num_channels = len(out_keep)
        elif isinstance(module, nn.LayerNorm):
            module.normalized_shape = (len(out_keep),)
        elif isinstance(module, nn.PReLU):
            module.num_parameters = len(out_keep)


def _checked(model: nn.Module, plan: Sequence[Mapping[str, Any]]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    for entry in plan:
        path = entry["module"]
        if path not in modules:
            raise PruneError(f"plan names module '{path}', which this model does not have")
        _check(path, modules[path], entry)
    return modules


@torch.no_grad()
def apply_structural(model: nn.Module, plan: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Slice the model's modules in place according to plan entries; returns the model.

    Every entry is validated first, so a plan that does not fit raises before any change.

    Raises:
        PruneError: an entry names a module that does not exist, is of an unsupported type, or
            would break a module's structure.
    """
    modules = _checked(model, plan)
    for entry in plan:
        module = modules[entry["module"]]
        for name, tensor in _sliced(module, entry).items():
            _set(module, name, tensor)
        _resize(module, entry)
    return model


@torch.no_grad()
def pruned_copy(model: nn.Module, plan: Sequence[Mapping[str, Any]]) -> nn.Module:
    """A pruned copy of ``model``, which is left untouched; never holds two full copies.

    The sliced tensors are computed from the original and handed to ``copy.deepcopy`` through its
    memo, so the full-size weights of pruned layers are never copied: the extra memory is the
    pruned model itself (plus one layer's temporary slice).

    Raises:
        PruneError: as :func:`apply_structural`, before anything is copied.
    """
    modules = _checked(model, plan)
    memo: dict[int, Any] = {}
    for entry in plan:
        module = modules[entry["module"]]
        for name, tensor in _sliced(module, entry).items():
            old = getattr(module, name)
            memo[id(old)] = _wrap(old, tensor)
    pruned = copy.deepcopy(model, memo)
    copies = dict(pruned.named_modules())
    for entry in plan:
        _resize(copies[entry["module"]], entry)
    return pruned
