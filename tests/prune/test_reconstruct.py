"""He et al.'s channel pruning: our solvers agree with scikit-learn, and regression beats approximation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Lasso, OrthogonalMatchingPursuit

from edgeprune.prune.graph import build_groups
from edgeprune.prune.reconstruct import (
    ReconstructConfig,
    lasso_cd,
    lasso_sklearn,
    omp,
    reconstruct_channels,
    reconstructable_groups,
    select_by_penalty,
    soft_threshold_scalar,
)
from tests.prune import (
    TINY_SHAPE,
    Tiny,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


@settings(max_examples=40, deadline=None)
@given(w=st.floats(-10, 10), alpha=st.floats(0.0, 5))
def test_single_variable_closed_form_matches_sklearn(w: float, alpha: float) -> None:
    # One sample, one feature x = 1: sklearn minimizes 1/2 (w - b)^2 + alpha |b|.
    model = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=10000) if alpha > 0 else None
    expected = w if model is None else float(model.fit(np.ones((1, 1)), np.array([w])).coef_[0])
    assert soft_threshold_scalar(w, alpha) == pytest.approx(expected, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 60), p=st.integers(1, 12), seed=st.integers(0, 10_000), scale=st.floats(0.001, 0.9))
def test_coordinate_descent_matches_sklearn_lasso(n: int, p: int, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    y = x @ rng.standard_normal(p) * (rng.random(p) > 0.5).any() + 0.3 * rng.standard_normal(n)
    alpha = scale * float(np.max(np.abs(x.T @ y)) / n)
    ours = lasso_cd(x, y, alpha, max_iter=10000, tol=1e-12)
    theirs = lasso_sklearn(x, y, alpha, max_iter=100000, tol=1e-12)
    objective = lambda b: 0.5 / n * np.sum((y - x @ b) ** 2) + alpha * np.abs(b).sum()  # noqa: E731
    assert objective(ours) <= objective(theirs) + 1e-9
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * max(1.0, float(np.abs(theirs).max())))


def test_omp_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 15))
    x /= np.linalg.norm(x, axis=0)
    y = x[:, [2, 7, 11]] @ np.array([3.0, -2.0, 1.5]) + 0.01 * rng.standard_normal(80)
    ours = omp(x, y, 3)
    theirs = OrthogonalMatchingPursuit(n_nonzero_coefs=3, fit_intercept=False).fit(x, y).coef_
    np.testing.assert_allclose(ours, theirs, atol=1e-8)
    assert set(np.flatnonzero(ours)) == {2, 7, 11}


@pytest.mark.parametrize("penalty", ["l1", "l1/2"])
def test_penalty_search_keeps_exactly_the_target_and_finds_the_planted_support(penalty: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 10))
    y = x[:, [1, 4, 8]] @ np.array([2.0, -1.5, 1.0]) + 0.05 * rng.standard_normal(200)
    selected, beta, alpha = select_by_penalty(x, y, 3, penalty=penalty)
    assert selected == [1, 4, 8] and alpha > 0
    assert np.count_nonzero(beta) >= 3


def test_least_squares_refit_beats_magnitude_selection_on_reconstruction() -> None:
    """Matrix regression (LASSO + least squares) reproduces each layer's outputs better than
    matrix approximation (L1 magnitude, weights kept), before any fine-tuning."""
    torch.manual_seed(0)
    model = randomized(Tiny())
    calibration = torch.randn(48, *TINY_SHAPE)
    groups = build_groups(model, torch.zeros(2, *TINY_SHAPE))
    assert [c for _, c in reconstructable_groups(model, groups)] == ["conv2", "conv3", "fc"]
    regression = reconstruct_channels(model, TINY_SHAPE, calibration, ReconstructConfig(sparsity=0.5))
    approximation = reconstruct_channels(
        model, TINY_SHAPE, calibration, ReconstructConfig(sparsity=0.5, selector="magnitude", refit=False)
    )
    for ours, baseline in zip(regression.layers, approximation.layers):
        assert ours["kept"] == baseline["kept"] == 4
        assert ours["relative_error"] < baseline["relative_error"]
    assert regression.model.conv2.in_channels == 4 and regression.model.conv1.out_channels == 4
    out = regression.model(torch.randn(2, *TINY_SHAPE))
    assert out.shape == (2, 3)
    assert any(e["module"] == "conv1" and len(e["out_keep"]) == 4 for e in regression.plan)


def test_omp_and_l_half_selectors_run_through_the_pipeline() -> None:
    model = randomized(Tiny())
    calibration = torch.randn(32, *TINY_SHAPE)
    for selector in ("omp", "l1/2"):
        result = reconstruct_channels(
            model, TINY_SHAPE, calibration, ReconstructConfig(sparsity=0.25, selector=selector)
        )
        assert [layer["kept"] for layer in result.layers] == [6, 6, 6]
        assert all(layer["relative_error"] < 1.0 for layer in result.layers)
