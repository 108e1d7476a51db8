"""Zhu and Gupta's cubic schedule hits its end points; the withdraw rule rolls back and stops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.prune.patterns import make_masks
from edgeprune.prune.schedule import cubic_schedule, cubic_sparsity, gradual_prune
from tests.prune import (
    Tiny,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


@settings(max_examples=60, deadline=None)
@given(final=st.floats(0.05, 0.99), initial=st.floats(0.0, 0.04), begin=st.integers(0, 100), span=st.integers(1, 1000))
def test_cubic_schedule_hits_its_end_points_and_rises_monotonically(
    final: float, initial: float, begin: int, span: int
) -> None:
    end = begin + span
    assert cubic_sparsity(begin, final, begin, end, initial) == initial
    assert cubic_sparsity(end, final, begin, end, initial) == final
    assert cubic_sparsity(begin - 5, final, begin, end, initial) == initial
    assert cubic_sparsity(end + 5, final, begin, end, initial) == final
    values = [cubic_sparsity(t, final, begin, end, initial) for t in range(begin, end + 1, max(1, span // 50))]
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))
    # Cubic: the first half of the time removes 7/8 of the way.
    assert cubic_sparsity(begin + span / 2, final, begin, end, initial) == pytest.approx(
        initial + (final - initial) * 7 / 8
    )


def test_schedule_steps_end_at_the_target() -> None:
    steps = cubic_schedule(0.8, 4)
    assert len(steps) == 4 and steps[-1] == 0.8 and steps == sorted(steps)
    assert cubic_schedule(0.5, 1) == [0.5]
    with pytest.raises(UsageError):
        cubic_schedule(0.5, 0)


def _unstructured(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    return make_masks(model, "unstructured", sparsity)[0]


def test_masks_only_grow_and_the_history_records_each_step() -> None:
    model = randomized(Tiny())
    seen: list[float] = []

    def finetune(m: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        seen.append(1 - float(torch.cat([k.flatten().float() for k in masks.values()]).mean()))

    result = gradual_prune(model, cubic_schedule(0.75, 3), _unstructured, finetune, lambda m: 0.9)
    assert [h["accepted"] for h in result.history] == [True, True, True]
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.75, abs=0.01)
    assert result.withdrawn is None and result.final_sparsity == 0.75
    assert float((model.conv2.weight == 0).float().mean()) == pytest.approx(0.75, abs=0.01)


def test_withdraw_rule_rolls_back_the_last_step_and_stops() -> None:
    model = randomized(Tiny())
    accuracies = iter([0.95, 0.94, 0.80, 0.81])  # reference, step 1, step 2, step 2 after recovery
    rounds: list[int] = []

    result = gradual_prune(
        model, [0.3, 0.6, 0.9], _unstructured, lambda m, k: rounds.append(1), lambda m: next(accuracies), tolerance=0.02
    )
    assert result.reference_accuracy == 0.95
    assert [h["accepted"] for h in result.history] == [True, False]
    assert result.history[1]["recovery_rounds"] == 1 and len(rounds) == 3  # step 1, step 2, one recovery
    assert result.withdrawn is not None and "withdrawn" in result.withdrawn
    assert result.final_sparsity == 0.3
    # Weights are those of the accepted 30% step, masks too.
    assert float((model.conv2.weight == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert 1 - float(result.masks["conv2"].float().mean()) == pytest.approx(0.3, abs=0.01)


def test_withdraw_rule_needs_an_evaluation() -> None:
    with pytest.raises(UsageError, match="evaluation"):
        gradual_prune(randomized(Tiny()), [0.5], _unstructured, lambda m, k: None, None, tolerance=0.01)
