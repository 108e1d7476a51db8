"""Masks: unstructured sparsity is exact, N:M masks obey the TensorRT rule, ineligible layers say why."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.models.digits import digits_resnet
from edgeprune.prune.patterns import check_nm, make_masks, nm_mask, unstructured_mask


@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 8),
    groups=st.integers(1, 6),
    k=st.sampled_from([1, 3]),
    nm=st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 2)]),
    seed=st.integers(0, 1000),
)
def test_nm_masks_pass_the_validator(out: int, groups: int, k: int, nm: tuple[int, int], seed: int) -> None:
    n, m = nm
    weight = torch.randn(out, groups * m, k, k, generator=torch.Generator().manual_seed(seed))
    mask = nm_mask(weight, n, m)
    assert mask.shape == weight.shape
    assert check_nm(weight * mask, n, m)
    # Exactly N kept per run of M, and they are the largest of their run.
    runs = mask.movedim(1, -1).reshape(out, k, k, groups, m)
    assert bool((runs.sum(-1) == n).all())
    kept = (weight.abs() * mask).movedim(1, -1).reshape(out, k, k, groups, m)
    dropped = (weight.abs() * ~mask).movedim(1, -1).reshape(out, k, k, groups, m)
    assert bool((kept.max(-1).values >= dropped.max(-1).values).all())


def test_validator_rejects_dense_and_misaligned() -> None:
    assert not check_nm(torch.ones(4, 8, 3, 3))
    assert not check_nm(torch.ones(4, 6))
    with pytest.raises(ValueError, match="not a multiple of 4"):
        nm_mask(torch.ones(4, 6))


@settings(max_examples=30, deadline=None)
@given(numel=st.integers(1, 500), sparsity=st.floats(0.01, 0.99))
def test_unstructured_sparsity_is_exact(numel: int, sparsity: float) -> None:
    weight = torch.randn(numel)
    mask = unstructured_mask(weight, sparsity)
    assert int((~mask).sum()) == int(round(numel * sparsity))
    if (~mask).any() and mask.any():
        assert weight.abs()[mask].min() >= weight.abs()[~mask].max()


def test_nm_skips_the_single_channel_stem_and_says_why() -> None:
    masks, reports = make_masks(digits_resnet(), "nm")
    skipped = {r.module: r.skipped for r in reports if r.skipped}
    assert skipped == {"stem.0": "1 input channels are not a multiple of 4"}
    assert "layer1.conv1" in masks and "fc" in masks
