"""Granularities (Mao et al.), bank-balanced masks (Cao et al.), and the N:M validator."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.prune.patterns import (
    bank_balanced_mask,
    bank_counts,
    block_mask,
    gemm_view,
    kernel_mask,
    make_masks,
    nm_mask,
    validate_nm,
    vector_mask,
)
from edgeprune.train import apply_masks
from tests.prune import (
    Tiny,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 6),
    banks=st.integers(1, 4),
    size=st.integers(2, 9),
    sparsity=st.floats(0.05, 0.95),
    seed=st.integers(0, 999),
)
def test_bank_balanced_masks_have_equal_counts_per_bank(
    out: int, banks: int, size: int, sparsity: float, seed: int
) -> None:
    weight = torch.randn(out, banks * size, generator=torch.Generator().manual_seed(seed))
    mask = bank_balanced_mask(weight, sparsity, banks=banks)
    counts = bank_counts(weight * mask, banks=banks)
    expected = max(1, size - int(round(size * sparsity)))
    assert bool((counts == expected).all()), "every bank keeps the same number of weights"
    # Inside each bank, every kept weight is at least as large as every pruned one (Algorithm 1).
    kept = (weight.abs() * mask).reshape(out, banks, size)
    dropped = (weight.abs() * ~mask).reshape(out, banks, size)
    kept_min = torch.where(mask.reshape(out, banks, size), kept, torch.inf).min(-1).values
    assert bool((kept_min >= dropped.max(-1).values).all())


def test_bank_by_size_on_a_conv_uses_the_gemm_rows() -> None:
    weight = torch.randn(4, 8, 3, 3)  # GEMM rows of 72 weights
    mask = bank_balanced_mask(weight, 0.5, bank_size=18)
    assert mask.shape == weight.shape
    assert bool((bank_counts(weight * mask, bank_size=18) == 9).all())
    with pytest.raises(ValueError, match="does not split"):
        bank_balanced_mask(weight, 0.5, banks=5)


def test_make_masks_skips_rows_that_do_not_split_into_banks() -> None:
    masks, reports = make_masks(randomized(Tiny()), "bank", 0.5, banks=8)
    skipped = {r.module: r.skipped for r in reports if r.skipped}
    # GEMM rows: conv1 4*9 = 36 weights (not a multiple of 8), conv2 72, conv3 8, fc 8.
    assert skipped == {"conv1": "a row of 36 weights does not split into 8 equal banks"}
    assert set(masks) == {"conv2", "conv3", "fc"}


def _unit_constant(mask: torch.Tensor, dims: tuple[int, ...]) -> bool:
    return bool((mask.all(dim=dims) | (~mask).all(dim=dims)).all())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 999), sparsity=st.floats(0.1, 0.9))
def test_coarse_units_are_whole_and_the_weakest_go(seed: int, sparsity: float) -> None:
    weight = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(seed))
    vec, ker = vector_mask(weight, sparsity), kernel_mask(weight, sparsity)
    assert _unit_constant(vec, (-1,)) and _unit_constant(ker, (-2, -1))
    scores = weight.abs().sum((-2, -1))
    kept = ker[..., 0, 0]
    if kept.any() and (~kept).any():
        assert scores[kept].min() >= scores[~kept].max()
    for mask, unit in ((vec, 3), (ker, 9)):
        units = weight.numel() // unit
        assert abs(int((~mask).sum()) / unit - units * sparsity) <= 1.0  # within one unit of the target


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 11),
    cols=st.integers(1, 13),
    block=st.integers(1, 4),
    sparsity=st.floats(0.1, 0.9),
    seed=st.integers(0, 999),
)
def test_block_masks_are_tiles_of_the_gemm_view(rows: int, cols: int, block: int, sparsity: float, seed: int) -> None:
    weight = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    mask = block_mask(weight, sparsity, block)
    g = gemm_view(mask)
    for r0 in range(0, rows, block):
        for c0 in range(0, cols, block):
            tile = g[r0 : r0 + block, c0 : c0 + block]
            assert bool(tile.all()) or not bool(tile.any())
    # Sparsity is as close to the target as whole tiles allow.
    assert abs(float((~mask).float().mean()) - sparsity) <= block * block / weight.numel() + 1e-9


def test_nm_masked_layers_pass_the_validator_and_dense_ones_say_why() -> None:
    model = randomized(Tiny())
    masks, _ = make_masks(model, "nm", n=2, m=4)
    apply_masks(model, masks)
    checks = {c.module: c for c in validate_nm(model)}
    for path in masks:
        assert checks[path].ok and checks[path].violating_runs == 0 and checks[path].runs > 0
    # conv1 reads 4 channels (eligible) but was masked too; make one layer dense again to see the reason.
    with torch.no_grad():
        model.conv2.weight.fill_(1.0)
    bad = next(c for c in validate_nm(model) if c.module == "conv2")
    assert not bad.ok and bad.reason is not None and "hold more than 2 non-zeros" in bad.reason
    odd = validate_nm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))[0]
    assert not odd.ok and "not a multiple of 4" in str(odd.reason)


def test_nm_mask_runs_along_input_channels() -> None:
    weight = torch.randn(2, 8, 3, 3)
    mask = nm_mask(weight, 2, 4)
    runs = mask.permute(0, 2, 3, 1).reshape(2, 3, 3, 2, 4)
    assert bool((runs.sum(-1) == 2).all())
