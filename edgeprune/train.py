"""One training and evaluation loop over batches, kept plain (nanoGPT style): seeded, CPU-friendly.

Every step that trains goes through :func:`train`: training a baseline, fine-tuning after a cut,
regularized training (a proximal step in ``after_update``), the gradual schedule. The loop takes
a :class:`~edgeprune.data.Task`, so the loss and the metric are the task's, and its batches come
from a ``DataLoader``; ``(x, y)`` tensors are accepted and wrapped.

Two recipes share it:

* from scratch (:class:`TrainConfig` defaults): a one-cycle schedule;
* recovery after a cut (:func:`finetune_config`, :func:`finetune`). A pruned network's BatchNorm
  layers still hold the statistics of the dense network's activations, which no longer match, so
  they are re-estimated on training batches first (no gradient step). Then a short linear warm-up
  and a cosine decay, which behave alike whatever the budget, where a one-cycle schedule over one
  epoch spends most of its steps at a high rate and lands wherever its last steps leave it
  (BENCHMARKS.md, "Fine-tune recovery").

The loop seeds only its own generator (the shuffling order, from ``config.seed``) and leaves
torch's global one to the caller, so a run is repeatable on one machine for a model without
dropout, and a user's own seeding is never overwritten. ``masks`` re-applies the zero pattern of
masked (unstructured, N:M) variants after every step so that fine-tuning cannot regrow weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.data.task import Task, as_task, iterate
from edgeprune.errors import UsageError

ProgressFn = Callable[[int, int, str], None]
"""Called with (step, total steps, a short note such as ``loss 0.41 top-1 88.0%``)."""
SCHEDULES = ("onecycle", "warmup-cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; defaults train digits-resnet to about 99% in well under 90 s on 2 cores.

    Attributes:
        epochs: passes over the training split.
        batch_size: samples per step (a loader the task holds keeps its own).
        lr: peak learning rate of SGD with Nesterov momentum.
        schedule: ``onecycle`` (from scratch) or ``warmup-cosine`` (fine-tuning: linear warm-up
            over ``warmup_fraction`` of the steps, then cosine decay to zero).
        bn_batches: before the first step, re-estimate BatchNorm statistics on this many training
            batches (0: keep them).
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    schedule: str = "onecycle"
    warmup_fraction: float = 0.15
    bn_batches: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise UsageError(f"epochs must be 0 or more, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}")


FINETUNE_LR = 0.01
FINETUNE_BN_BATCHES = 32
# Half the from-scratch batch: on a small set one epoch of 64-sample batches is too few steps to
# recover (digits: 23 steps; 82-90% at 50% of MACs vs 98% with 32-sample batches).
FINETUNE_BATCH = 32


def finetune_config(
    epochs: int, lr: float = FINETUNE_LR, seed: int = 1, batch_size: int = FINETUNE_BATCH
) -> TrainConfig:
    """The recovery recipe after pruning: BatchNorm re-estimated, then warm-up and cosine decay."""
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        schedule="warmup-cosine",
        warmup_fraction=0.1,
        bn_batches=FINETUNE_BN_BATCHES,
    )


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the weights outside each mask (module path -> bool mask shaped like the weight)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for path, mask in masks.items():
            weight = modules[path].weight
            assert isinstance(weight, torch.Tensor)
            weight.mul_(mask.to(weight.dtype))


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], count: int) -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``count`` batches.

    The statistics are reset and then averaged over the batches with equal weight (momentum
    ``None``), so the result does not depend on what the dense model had. Weights are untouched
    and the model's train/eval mode is restored.

    Returns:
        The number of batches used (0 where the model has no BatchNorm).
    """
    norms = _norms(model)
    if not norms or count <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    used = 0
    try:
        for x, _ in iterate(batches):
            if used == count:
                break
            if len(x) < 2:  # BatchNorm needs two samples per channel in training mode
                continue
            model(x)
            used += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return used


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=total, pct_start=config.warmup_fraction
        )
    warmup = max(1, round(config.warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train(
    model: nn.Module,
    data: Task | tuple[torch.Tensor, ...],
    config: TrainConfig,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: ProgressFn | None = None,
    after_update: Callable[[float], None] | None = None,
) -> nn.Module:
    """Train in place with seeded SGD (Nesterov) and the config's schedule; returns the model in eval mode.

    Args:
        model: the network to train.
        data: a task (its training split, loss and metric), or ``(x, y)`` tensors.
        config: hyperparameters.
        masks: module path -> bool mask; re-applied after every step (sparse fine-tuning).
        on_step: progress, called after every step with the running loss and metric.
        after_update: called after each optimizer update with the learning rate it used, before
            masks are re-applied (a proximal step for regularized training goes here).
    """
    task = as_task(data)
    if config.bn_batches:
        recalibrate_batchnorm(model, task.batches("train", config.batch_size, True, config.seed), config.bn_batches)
    if config.epochs == 0:
        return model.eval()
    steps_per_epoch = len(task.batches("train", config.batch_size))  # type: ignore[arg-type]
    total = max(1, steps_per_epoch * config.epochs)
    opt = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
    )
    sched = _scheduler(opt, config, total)
    model.train()
    step, loss_sum, metric_sum, seen = 0, 0.0, 0.0, 0
    for epoch in range(config.epochs):
        for x, y in iterate(task.batches("train", config.batch_size, True, config.seed + epoch)):
            if step == total:  # a user loader longer than its len() says
                break
            output = model(x)
            loss = task.loss(output, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lr = float(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            if after_update is not None:
                after_update(lr)
            if masks:
                apply_masks(model, masks)
            step += 1
            if on_step is not None:
                with torch.no_grad():
                    loss_sum += float(loss) * len(x)
                    metric_sum += task.metric(output.detach(), y) * len(x)
                    seen += len(x)
                on_step(step, total, f"loss {loss_sum / seen:.3f} {task.metric_name} {metric_sum / seen:.1%}")
                if step % steps_per_epoch == 0:
                    loss_sum, metric_sum, seen = 0.0, 0.0, 0
    return model.eval()


def finetune(
    model: nn.Module,
    data: Task | tuple[torch.Tensor, ...],
    epochs: int,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: ProgressFn | None = None,
    lr: float = FINETUNE_LR,
    seed: int = 1,
    batch_size: int = FINETUNE_BATCH,
) -> nn.Module:
    """Recover accuracy after pruning with :func:`finetune_config`; 0 epochs re-estimates BatchNorm only."""
    return train(model, data, finetune_config(epochs, lr=lr, seed=seed, batch_size=batch_size), masks, on_step)


@torch.no_grad()
def evaluate(model: nn.Module, data: Task | tuple[torch.Tensor, ...], batch_size: int = 256) -> float:
    """The task's metric on its validation split (or on ``(x, y)`` tensors), in [0, 1] for top-1."""
    task = as_task(data)
    # Bare (x, y) tensors are the set to evaluate on; a task is judged on its validation split.
    batches = task.batches("train" if isinstance(data, tuple) and len(data) == 2 else "val", batch_size)
    model.eval()
    total, count = 0.0, 0
    for x, y in iterate(batches):
        total += task.metric(model(x), y) * len(x)
        count += len(x)
    return total / max(1, count)
