"""Proximal steps give exact zeros; group lasso zeros whole groups; the engine removes them exactly."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.errors import UsageError
from edgeprune.prune.regularize import (
    Regularizer,
    RegularizerConfig,
    conv_bn_pairs,
    group_soft_threshold,
    half_threshold,
    remove_zero_channels,
    soft_threshold,
    structure_report,
    train_regularized,
)
from edgeprune.train import TrainConfig
from tests.prune import (
    TINY_SHAPE,
    Tiny,
    TinyResidual,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


@settings(max_examples=25, deadline=None)
@given(w=st.floats(-5, 5), lam=st.floats(0.01, 3))
def test_soft_threshold_is_the_single_variable_lasso(w: float, lam: float) -> None:
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)
    best = grid[torch.argmin(0.5 * (grid - w) ** 2 + lam * grid.abs())]
    got = float(soft_threshold(torch.tensor([w], dtype=torch.float64), lam)[0])
    assert abs(got - float(best)) <= 1e-3
    assert got == (w - lam if w > lam else w + lam if w < -lam else 0.0)


@settings(max_examples=25, deadline=None)
@given(w=st.floats(-4, 4), lam=st.floats(0.05, 1.5))
def test_half_threshold_minimizes_the_l_half_problem(w: float, lam: float) -> None:
    grid = torch.linspace(-5, 5, 40001, dtype=torch.float64)
    objective = 0.5 * (grid - w) ** 2 + lam * grid.abs().sqrt()
    got = float(half_threshold(torch.tensor([w], dtype=torch.float64), lam)[0])
    value = 0.5 * (got - w) ** 2 + lam * math.sqrt(abs(got))
    assert value <= float(objective.min()) + 1e-5  # the half threshold is the global minimizer


def test_group_soft_threshold_zeros_or_shrinks_the_whole_group() -> None:
    w = torch.tensor([3.0, 4.0])  # norm 5
    assert torch.equal(group_soft_threshold(w, 5.0), torch.zeros(2))
    torch.testing.assert_close(group_soft_threshold(w, 1.0), w * 0.8)


@pytest.mark.parametrize("kind", ["l1", "l1/2"])
def test_proximal_steps_produce_exact_zeros(kind: str) -> None:
    model = randomized(Tiny())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    regularizer = Regularizer(model, RegularizerConfig(kind, strength=1.0), TINY_SHAPE)
    regularizer.prox(lr=0.2)
    zeros = int((model.conv2.weight == 0).sum())
    assert zeros > 0
    if kind == "l1":
        assert zeros == int((before["conv2.weight"].abs() <= 0.2).sum())
    assert torch.equal(model.bn1.weight, before["bn1.weight"])  # BN is not an L1 target


def test_group_lasso_zeroes_filters_together_with_their_batchnorm() -> None:
    model = randomized(Tiny())
    assert conv_bn_pairs(model, TINY_SHAPE) == {"conv1": "bn1", "conv2": "bn2"}
    with torch.no_grad():
        model.conv2.weight[2] *= 0.01
        model.bn2.weight[2], model.bn2.bias[2] = 0.01, 0.01
    regularizer = Regularizer(model, RegularizerConfig("group-lasso", 0.05, ("filter",)), TINY_SHAPE)
    penalty_before = float(regularizer.penalty())
    regularizer.prox(lr=1.0)
    assert bool((model.conv2.weight[2] == 0).all()) and float(model.bn2.weight[2]) == 0.0
    assert float(model.bn2.bias[2]) == 0.0
    assert bool((model.conv2.weight[1] != 0).any())  # strong filters survive, shrunk
    assert float(regularizer.penalty()) < penalty_before


def test_relative_group_lasso_keeps_the_scale_of_a_batchnormed_layer() -> None:
    model = randomized(Tiny())
    norm_before = float(model.conv2.weight.norm())
    conv3_before = float(model.conv3.weight.norm())
    Regularizer(model, RegularizerConfig("group-lasso", 0.5, ("channel",)), TINY_SHAPE).prox(lr=0.1)
    assert float(model.conv2.weight.norm()) == pytest.approx(norm_before, rel=1e-5)  # BN follows: shape only
    assert float(model.conv3.weight.norm()) < conv3_before  # no BN after conv3: plain shrinkage
    absolute = randomized(Tiny())
    Regularizer(absolute, RegularizerConfig("group-lasso", 0.5, ("channel",), relative=False), TINY_SHAPE).prox(0.1)
    assert float(absolute.conv2.weight.norm()) < norm_before


def test_unknown_grouping_and_kind_are_user_errors() -> None:
    with pytest.raises(UsageError, match="grouping"):
        RegularizerConfig("group-lasso", 0.1, ("rows",))
    with pytest.raises(UsageError, match="unknown regularizer"):
        RegularizerConfig("l0", 0.1)


def test_zero_filters_and_unread_channels_are_removed_exactly() -> None:
    model = randomized(TinyResidual())
    with torch.no_grad():
        model.conv1.weight[3] = 0  # filter-wise zero: channel 3 of conv1 is produced as zero ...
        model.bn1.weight[3], model.bn1.bias[3] = 0.0, 0.0  # ... and BN maps it to zero
        model.conv2.weight[:, 5] = 0  # channel-wise zero: channel 5 is never read
        model.conv1.weight[0, :] *= 1.0
    pruned, plan, report = remove_zero_channels(model, TINY_SHAPE)
    assert report["channels_removed"] == 2
    assert pruned.conv1.out_channels == 6 and pruned.conv2.in_channels == 6
    assert pruned.stem.out_channels == 8  # the residual group keeps its channels
    assert report["max_output_diff"] < 1e-5
    x = torch.randn(3, *TINY_SHAPE)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-5)
    assert any(entry["module"] == "conv1" for entry in plan)


def test_a_zero_filter_with_a_live_batchnorm_shift_is_kept() -> None:
    model = randomized(Tiny())
    with torch.no_grad():
        model.conv1.weight[1] = 0  # BN still outputs a constant for it: removing would change outputs
    _, _, report = remove_zero_channels(model, TINY_SHAPE)
    assert report["channels_removed"] == 0


@pytest.mark.trains
def test_group_lasso_training_reaches_structured_sparsity() -> None:
    torch.manual_seed(0)
    model = randomized(Tiny())
    x = torch.randn(32, *TINY_SHAPE)
    y = torch.randint(0, 3, (32,))
    config = RegularizerConfig("group-lasso", 20.0, ("filter", "channel"), frozenset({"conv1", "fc"}))
    train_regularized(
        model, (x, y), TrainConfig(epochs=2, batch_size=16, lr=0.05), Regularizer(model, config, TINY_SHAPE)
    )
    rows = {r["module"]: r for r in structure_report(model, frozenset({"conv1", "fc"}))}
    assert rows["conv2"]["row_sparsity"] > 0 and rows["conv2"]["channel_sparsity"] > 0
    assert rows["conv2"]["weight_sparsity"] >= rows["conv2"]["row_sparsity"] * 0.99
    dead_rows = (model.conv2.weight.flatten(1) == 0).all(1)
    assert bool((model.bn2.weight[dead_rows] == 0).all()) and bool((model.bn2.bias[dead_rows] == 0).all())
    pruned, _, report = remove_zero_channels(model, TINY_SHAPE)
    assert report["channels_removed"] > 0 and report["max_output_diff"] < 1e-4
