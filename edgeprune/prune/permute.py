"""Channel permutation before N:M masking (Pool and Yu, NeurIPS'21).

An N:M mask keeps the N largest of every run of M consecutive input channels. Which channels share
a run is an accident of the order the network was built in; reordering the input channels of a
layer changes the runs and therefore what the mask keeps. Reordering is free at inference time if
it is applied consistently: permute a layer's input channels, and the same permutation on the
output channels of every producer of those channels (and their BatchNorm), and the model computes
exactly the same function.

"Consistently" is what the structural engine's coupled-channel groups give us: a group lists every
place a channel lives (producer outputs, norms, consumer inputs, residual partners), so permuting
the group's channels in all of its places is function-preserving by construction. Groups that
reach the model's inputs or outputs are fixed and left alone.

The search is Pool and Yu's channel swap, greedy: among all pairs of channels in different runs,
apply the swap that raises the kept magnitude (summed over every N:M-eligible consumer of the
group) the most; repeat until no swap helps. Each pass scores all pairs at once, O(S^2 * R * M) for
a group of S channels whose consumers have R rows (output channels x kernel positions); fine for
edge-sized layers, and capped by ``max_swaps``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.errors import PruneError, UsageError
from edgeprune.prune.graph import Group, Place, build_groups
from edgeprune.prune.patterns import nm_eligible, nm_mask, prunable_layers


@dataclass
class PermutationResult:
    """The permuted copy and what the search did.

    Attributes:
        model: the permuted model (computes the same function as the input).
        kept_before: magnitude an N:M mask keeps, summed over eligible layers, before permuting.
        kept_after: the same after permuting (never lower).
        groups: per permuted group: id, size, consumers scored, swaps, kept gain.
    """

    model: nn.Module
    kept_before: float
    kept_after: float
    groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gain(self) -> float:
        """Relative rise of the kept magnitude."""
        return self.kept_after / self.kept_before - 1.0 if self.kept_before else 0.0


def nm_kept_magnitude(model: nn.Module, n: int = 2, m: int = 4, ignore: frozenset[str] = frozenset()) -> float:
    """Sum of |w| that an N:M magnitude mask keeps, over every eligible Conv2d/Linear layer."""
    total = 0.0
    for layer in prunable_layers(model, ignore).values():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if isinstance(layer, nn.Conv2d) and layer.groups > 1 or nm_eligible(weight, m):
            continue
        total += float((weight.detach().abs() * nm_mask(weight, n, m)).sum())
    return total


def _member_places(group: Group) -> dict[tuple[str, str], list[list[Place]]]:
    """(module, kind) -> for each channel of the group, its places in that member."""
    members: dict[tuple[str, str], list[list[Place]]] = {}
    for c, places in enumerate(group.channels):
        for place in places:
            per_channel = members.setdefault((place.module, place.kind), [[] for _ in group.channels])
            per_channel[c].append(place)
    return members


def _index_map(per_channel: list[list[Place]], order: list[int], size: int) -> torch.Tensor:
    """Gather indices for one dimension: the slot of channel j takes channel ``order[j]``'s content."""
    perm = torch.arange(size)
    for j, source in enumerate(order):
        for dst, src in zip(per_channel[j], per_channel[source]):
            for t in range(dst.expand):
                perm[dst.index + t] = src.index + t
    return perm


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


def permutable(model: nn.Module, group: Group) -> str | None:
    """None if :func:`apply_group_permutation` can reorder this group exactly, else why not."""
    if group.fixed is not None:
        return group.fixed
    modules = dict(model.named_modules())
    for member in group.members:
        if member.kind == "param":
            continue
        module = modules.get(member.module)
        if member.kind in ("out", "in") and not isinstance(module, (nn.Conv2d, nn.Linear)):
            return f"{member.module}: a {type(module).__name__} is not permuted"
        if isinstance(module, nn.Conv2d) and module.groups > 1 and member.kind != "dw":
            return f"{member.module}: grouped convolution"
        if member.kind == "norm" and not isinstance(module, _NORMS):
            return f"{member.module}: {type(module).__name__} is not permuted"
        if member.kind not in ("out", "in", "dw", "norm"):
            return f"{member.module}: places of kind {member.kind!r} are not permuted"
    return None


def _param(model: nn.Module, path: str) -> torch.Tensor:
    try:
        return model.get_parameter(path)
    except AttributeError:
        return model.get_buffer(path)


@torch.no_grad()
def apply_group_permutation(model: nn.Module, group: Group, order: list[int]) -> None:
    """Reorder a group's channels in every place they live (in place); the function is unchanged.

    Args:
        model: the model the group was built from.
        group: a coupled-channel group of it (see :func:`permutable`).
        order: new slot j holds old channel ``order[j]`` (a permutation of ``range(group.size)``).

    Raises:
        ValueError: ``order`` is not a permutation, or the group holds a place this cannot reorder.
    """
    if sorted(order) != list(range(group.size)):
        raise UsageError("order must be a permutation of the group's channels")
    why = permutable(model, group)
    if why:
        raise UsageError(f"group {group.id} cannot be permuted: {why}")
    modules = dict(model.named_modules())
    for (path, kind), per_channel in _member_places(group).items():
        if kind == "param":
            by_dim: dict[int, list[list[Place]]] = {}
            for c, places in enumerate(per_channel):
                for place in places:
                    by_dim.setdefault(place.dim, [[] for _ in per_channel])[c].append(place)
            tensor = _param(model, path)
            for dim, places_of in by_dim.items():
                perm = _index_map(places_of, order, int(tensor.shape[dim]))
                tensor.copy_(tensor.index_select(dim, perm))
            continue
        module = modules[path]
        if kind in ("out", "dw", "norm"):
            weight = getattr(module, "weight", None)
            reference = weight if isinstance(weight, torch.Tensor) else getattr(module, "running_mean", None)
            if not isinstance(reference, torch.Tensor):
                continue  # a norm without affine parameters or statistics holds nothing per channel
            perm = _index_map(per_channel, order, int(reference.shape[0]))
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(module, name, None)
                if isinstance(value, torch.Tensor):
                    value.copy_(value.index_select(0, perm))
        else:
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            perm = _index_map(per_channel, order, int(weight.shape[1]))
            weight.copy_(weight.index_select(1, perm))


def _consumer_matrix(module: nn.Module) -> torch.Tensor:
    """|W| with input channels last and every other axis flattened into rows: ``[R, C_in]``."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach().abs().movedim(1, -1).reshape(-1, weight.shape[1]).clone()


def _swap_gains(a: torch.Tensor, cols: torch.Tensor, n: int, m: int, chunk: int = 64) -> torch.Tensor:
    """Gain in N:M-kept magnitude of swapping each pair of slots (``[S, S]``; 0 within a run).

    With slot p's value replaced by x, its run keeps ``top_{N-1}(rest) + max(x, v_N(rest))``, where
    ``rest`` is the run without p and ``v_N`` its N-th largest value; so one sort of the runs and
    one broadcast max score every pair, instead of a top-k per pair.
    """
    rows, width = a.shape
    size = cols.numel()
    if n >= m:
        return torch.zeros(size, size)
    runs = a.reshape(rows, width // m, m)
    base = torch.topk(runs, n, dim=-1).values.sum(-1).sum(0)  # kept per run, [runs]
    run_of, slot = cols // m, cols % m
    own = runs[:, run_of, :]  # [R, S, M]: each slot's run
    keep_others = torch.ones(size, m, dtype=torch.bool)
    keep_others[torch.arange(size), slot] = False
    rest = own[:, keep_others].reshape(rows, size, m - 1)  # the run without the slot itself
    ordered = torch.sort(rest, dim=-1, descending=True).values
    top_rest = ordered[..., : n - 1].sum(-1).sum(0)  # [S]
    nth = ordered[..., n - 1]  # [R, S]
    incoming = a[:, cols]  # [R, S]
    replaced_kept = torch.empty(size, size)  # [p, q]: run(p) with p's value replaced by q's
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        replaced_kept[start:stop] = torch.maximum(incoming[:, None, :], nth[:, start:stop, None]).sum(0)
    replaced_kept += top_rest[:, None]
    run_base = base[run_of]
    gains = replaced_kept + replaced_kept.T - run_base[:, None] - run_base[None, :]
    gains[run_of[:, None] == run_of[None, :]] = 0.0
    return gains


def _scored_consumers(model: nn.Module, group: Group, m: int, ignore: frozenset[str]) -> list[tuple[str, torch.Tensor]]:
    """(path, column of each channel) for the group's consumers whose N:M kept magnitude we optimize."""
    modules = dict(model.named_modules())
    found = []
    for (path, kind), per_channel in _member_places(group).items():
        if kind != "in" or path in ignore:
            continue
        module = modules[path]
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or nm_eligible(weight, m):
            continue
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            continue
        if any(len(p) != 1 or p[0].expand != 1 for p in per_channel):
            continue  # features of one channel spread over several columns: not scored
        found.append((path, torch.tensor([p[0].index for p in per_channel])))
    return found


def search_group_order(
    model: nn.Module, group: Group, n: int, m: int, ignore: frozenset[str] = frozenset(), max_swaps: int | None = None
) -> tuple[list[int], int, float]:
    """Greedy channel-swap search for one group: (order, swaps applied, kept-magnitude gain)."""
    modules = dict(model.named_modules())
    consumers = [(_consumer_matrix(modules[path]), cols) for path, cols in _scored_consumers(model, group, m, ignore)]
    order = list(range(group.size))
    if not consumers or group.size < 2:
        return order, 0, 0.0
    limit = 10 * group.size if max_swaps is None else max_swaps
    swaps, gained = 0, 0.0
    while swaps < limit:
        gains = sum(_swap_gains(a, cols, n, m) for a, cols in consumers)
        assert isinstance(gains, torch.Tensor)
        best = int(torch.argmax(gains))
        p, q = divmod(best, group.size)
        value = float(gains[p, q])
        scale = sum(float(a.sum()) for a, _ in consumers)
        if value <= 1e-7 * scale:
            break
        for a, cols in consumers:
            cp, cq = int(cols[p]), int(cols[q])
            a[:, [cp, cq]] = a[:, [cq, cp]]
        order[p], order[q] = order[q], order[p]
        swaps += 1
        gained += value
    return order, swaps, gained


def permute_for_nm(
    model: nn.Module,
    input_shape: tuple[int, ...],
    n: int = 2,
    m: int = 4,
    ignore: frozenset[str] = frozenset(),
    max_swaps: int | None = None,
) -> PermutationResult:
    """Permute a copy of ``model`` so that an N:M mask keeps more magnitude; the input is untouched.

    Args:
        model: the model (left unchanged).
        input_shape: one sample's shape, for tracing the coupled-channel groups.
        n, m: the N:M pattern.
        ignore: layers that will stay dense (their kept magnitude is not optimized).
        max_swaps: cap on swaps per group (default 10 x the group's size).

    Raises:
        GraphError: the model holds an op the engine cannot map.
    """
    permuted = copy.deepcopy(model).eval()
    before = nm_kept_magnitude(permuted, n, m, ignore)
    groups = build_groups(permuted, torch.zeros(2, *input_shape))
    report = []
    for group in groups:
        consumers = [p for p, _ in _scored_consumers(permuted, group, m, ignore)]
        if not consumers:
            continue
        why = permutable(permuted, group)
        if why:
            report.append(
                {
                    "group": group.id,
                    "size": group.size,
                    "swaps": 0,
                    "kept_gain": 0.0,
                    "consumers": consumers,
                    "skipped": why,
                }
            )
            continue
        order, swaps, gained = search_group_order(permuted, group, n, m, ignore, max_swaps)
        if swaps:
            apply_group_permutation(permuted, group, order)
        report.append(
            {
                "group": group.id,
                "size": group.size,
                "swaps": swaps,
                "kept_gain": gained,
                "consumers": consumers,
                "skipped": None,
            }
        )
    after = nm_kept_magnitude(permuted, n, m, ignore)
    with torch.no_grad():
        probe = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
        reference, got = model.eval()(probe), permuted(probe)
    if not torch.allclose(reference, got, rtol=1e-4, atol=1e-4 * float(reference.abs().max()) + 1e-6):
        raise PruneError("channel permutation changed the model's outputs; report this model to the maintainers")
    return PermutationResult(permuted, before, after, report)
