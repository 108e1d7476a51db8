"""Channel permutation (Pool and Yu): the kept N:M magnitude rises, the outputs do not change."""

from __future__ import annotations

import itertools

import torch

from edgeprune.prune.graph import build_groups
from edgeprune.prune.patterns import nm_mask
from edgeprune.prune.permute import _swap_gains, apply_group_permutation, nm_kept_magnitude, permute_for_nm
from tests.prune import (
    TINY_SHAPE,
    Tiny,
    TinyResidual,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


def _kept(a: torch.Tensor) -> float:
    return float((a * nm_mask(a, 2, 4)).sum())


def test_swap_gains_equal_brute_force() -> None:
    a = torch.rand(5, 12, generator=torch.Generator().manual_seed(1))
    cols = torch.arange(12)
    gains = _swap_gains(a, cols, 2, 4)
    base = _kept(a)
    for p, q in itertools.combinations(range(12), 2):
        swapped = a.clone()
        swapped[:, [p, q]] = swapped[:, [q, p]]
        assert abs(float(gains[p, q]) - (_kept(swapped) - base)) < 1e-4


def test_permutation_keeps_outputs_and_raises_kept_magnitude() -> None:
    for model in (randomized(Tiny(), 1), randomized(TinyResidual(), 2)):
        x = torch.randn(4, *TINY_SHAPE)
        result = permute_for_nm(model, TINY_SHAPE)
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-4, atol=1e-5)
        assert result.kept_after > result.kept_before  # strictly: random weights always leave room
        assert result.kept_after == nm_kept_magnitude(result.model)
        assert any(g["swaps"] > 0 for g in result.groups)
        assert not torch.equal(result.model.conv2.weight, model.conv2.weight)  # it did move weights
        assert nm_kept_magnitude(model) == result.kept_before  # and left the input alone


def test_any_group_permutation_preserves_the_function() -> None:
    model = randomized(TinyResidual(), 3)
    x = torch.randn(2, *TINY_SHAPE)
    expected = model(x)
    for group in build_groups(model, torch.zeros(2, *TINY_SHAPE)):
        if group.fixed is None:
            order = torch.randperm(group.size, generator=torch.Generator().manual_seed(group.id)).tolist()
            apply_group_permutation(model, group, order)
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
