"""When to prune: one-shot, or gradually with fine-tuning in between (Zhu and Gupta 2017).

One-shot pruning removes everything at once and fine-tunes after. Gradual pruning raises the
sparsity over n steps and fine-tunes between them, so the network adapts while it still has
capacity; Zhu and Gupta's cubic schedule prunes fast early (when many weights are redundant) and
slowly near the end:

    s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n dt))^3     for t_0 <= t <= t_0 + n dt

The bank-balanced paper (Cao et al. 2019, Sec. 3.2) adds a *withdraw* rule, which we implement
as stated: if accuracy drops past a tolerance and fine-tuning does not recover it, the last step is
rolled back and pruning stops. The result then says at which sparsity it stopped and why.

The functions take callables for masking, fine-tuning and evaluation, so the schedule knows
nothing about data sets, patterns or optimizers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.train import apply_masks

MaskFn = Callable[[nn.Module, float], dict[str, torch.Tensor]]
FinetuneFn = Callable[[nn.Module, dict[str, torch.Tensor]], None]
EvaluateFn = Callable[[nn.Module], float]


def cubic_sparsity(
    step: float, final_sparsity: float, begin_step: float, end_step: float, initial_sparsity: float = 0.0
) -> float:
    """Zhu and Gupta's sparsity at ``step``: ``initial`` up to ``begin_step``, ``final`` from ``end_step`` on.

    Raises:
        UsageError: ``end_step`` not after ``begin_step``.
    """
    if end_step <= begin_step:
        raise UsageError(f"end step {end_step} must come after begin step {begin_step}")
    if step <= begin_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    remaining = 1.0 - (step - begin_step) / (end_step - begin_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * remaining**3


def cubic_schedule(final_sparsity: float, steps: int, initial_sparsity: float = 0.0) -> list[float]:
    """Target sparsity after each of ``steps`` pruning steps (the last is ``final_sparsity``).

    Raises:
        UsageError: fewer than one step.
    """
    if steps < 1:
        raise UsageError(f"a schedule needs at least one step, got {steps}")
    return [cubic_sparsity(k, final_sparsity, 0, steps, initial_sparsity) for k in range(1, steps + 1)]


@dataclass
class ScheduleResult:
    """What a schedule produced.

    Attributes:
        model: the pruned, fine-tuned model (rolled back to the last accepted step if withdrawn).
        masks: its masks.
        history: one record per step: target sparsity, accuracy after fine-tuning, accepted.
        reference_accuracy: the accuracy the tolerance is measured from.
        withdrawn: why the schedule stopped early, or None if it ran to the end.
    """

    model: nn.Module
    masks: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    reference_accuracy: float | None = None
    withdrawn: str | None = None

    @property
    def final_sparsity(self) -> float:
        """Target sparsity of the last accepted step (0 if none was accepted)."""
        accepted = [h["sparsity"] for h in self.history if h["accepted"]]
        return accepted[-1] if accepted else 0.0


@dataclass(frozen=True)
class Verdict:
    """What the withdraw rule decided about one step."""

    accuracy: float | None
    rounds: int
    accepted: bool


def floor(reference: float | None, tolerance: float | None) -> float | None:
    """The lowest accuracy a step may keep: the reference less the tolerance (None: no rule)."""
    return None if reference is None or tolerance is None else reference - tolerance


def withdraw_rule(
    accuracy: float | None, lowest: float | None, recover: Callable[[int], float | None], rounds: int = 1
) -> Verdict:
    """The bank-balanced paper's withdraw rule, the one implementation both gradual schedules use.

    A step whose accuracy is below ``lowest`` gets up to ``rounds`` more fine-tuning rounds
    (``recover(round)`` trains once more and returns the new accuracy); if it is still below, the
    step is not accepted and the caller restores the previous step and stops.
    """
    done = 0
    while lowest is not None and accuracy is not None and accuracy < lowest and done < rounds:
        done += 1
        accuracy = recover(done)
    accepted = lowest is None or accuracy is None or accuracy >= lowest
    return Verdict(accuracy, done, accepted)


def gradual_prune(
    model: nn.Module,
    sparsities: list[float],
    mask_fn: MaskFn,
    finetune: FinetuneFn,
    evaluate: EvaluateFn | None = None,
    *,
    tolerance: float | None = None,
    reference_accuracy: float | None = None,
    recovery_rounds: int = 1,
) -> ScheduleResult:
    """Prune ``model`` in place through ``sparsities``, fine-tuning after each step.

    Masks only grow: each step's mask is ANDed with the previous one, so a weight once pruned
    stays pruned. With a ``tolerance``, a step whose accuracy (after fine-tuning and up to
    ``recovery_rounds`` more fine-tuning rounds) is more than ``tolerance`` below the reference is
    withdrawn: the weights and masks of the previous step are restored and the schedule stops.

    Args:
        model: trained model, modified in place.
        sparsities: target sparsity per step (one entry: one-shot).
        mask_fn: (model, sparsity) -> masks.
        finetune: (model, masks) -> None; trains in place keeping masked weights zero.
        evaluate: model -> accuracy in [0, 1]; needed for the withdraw rule and the history.
        tolerance: accuracy drop (absolute, e.g. 0.01 = one point) that triggers a withdrawal.
        reference_accuracy: what the drop is measured from (default: the model before pruning).
        recovery_rounds: extra fine-tuning rounds tried before withdrawing.

    Raises:
        UsageError: a tolerance without an evaluate function.
    """
    if tolerance is not None and evaluate is None:
        raise UsageError("the withdraw rule needs an evaluation function (data to measure accuracy on)")
    if tolerance is not None and reference_accuracy is None:
        assert evaluate is not None
        reference_accuracy = evaluate(model)
    result = ScheduleResult(model, {}, reference_accuracy=reference_accuracy)
    accepted_state = copy.deepcopy(model.state_dict())
    masks: dict[str, torch.Tensor] = {}
    for step, sparsity in enumerate(sparsities, 1):
        new = mask_fn(model, sparsity)
        step_masks = {path: mask & masks[path] if path in masks else mask for path, mask in new.items()}
        apply_masks(model, step_masks)
        finetune(model, step_masks)
        accuracy = evaluate(model) if evaluate is not None else None

        def recover(round_: int, step_masks: dict[str, torch.Tensor] = step_masks) -> float | None:
            finetune(model, step_masks)
            return evaluate(model) if evaluate is not None else None

        verdict = withdraw_rule(accuracy, floor(reference_accuracy, tolerance), recover, recovery_rounds)
        accuracy, rounds = verdict.accuracy, verdict.rounds
        record = {"step": step, "sparsity": sparsity, "accuracy": accuracy, "recovery_rounds": rounds, "accepted": True}
        if not verdict.accepted:
            assert accuracy is not None and reference_accuracy is not None and tolerance is not None
            record["accepted"] = False
            result.history.append(record)
            model.load_state_dict(accepted_state)
            result.withdrawn = (
                f"step {step} (sparsity {sparsity:.1%}) reached accuracy {accuracy:.2%}, more than "
                f"{tolerance:.2%} below {reference_accuracy:.2%} after {rounds} recovery "
                "round(s): withdrawn, pruning stopped"
            )
            break
        result.history.append(record)
        masks = step_masks
        accepted_state = copy.deepcopy(model.state_dict())
    result.masks = masks
    return result
