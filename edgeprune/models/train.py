"""Training and evaluation loops, kept plain (nanoGPT style): seeded, CPU-friendly, no framework.

Two recipes share one loop:

* :func:`train` trains from scratch (or regularizes) with a one-cycle schedule;
* :func:`finetune` recovers accuracy after a cut. A pruned network's BatchNorm layers still hold
  the statistics of the dense network's activations, which no longer match: the first thing it
  does is re-estimate them on training batches (no gradient step), which alone recovers most of
  the loss of a channel cut. Then a short linear warm-up and a cosine decay, which behave the
  same whatever the budget, where a one-cycle schedule over one epoch spends most of its steps
  at a high learning rate and lands wherever the last few steps leave it.

``masks`` re-applies the zero pattern of masked (unstructured, N:M) variants after every step so
that fine-tuning cannot regrow weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; defaults train digits-resnet to about 98-99% in well under 90 s on 2 cores.

    Attributes:
        schedule: ``onecycle`` (training from scratch) or ``warmup-cosine`` (fine-tuning: linear
            warm-up over ``warmup_fraction`` of the steps, then cosine decay to zero).
        bn_batches: before the first step, re-estimate BatchNorm statistics on this many training
            batches (0: keep them as they are).
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


# Half the from-scratch batch: on a small set one epoch of 64-sample batches is too few steps to
# recover (digits: 23 steps; 82-90% at 50% of MACs vs 98% with 32-sample batches).
FINETUNE_BATCH = 32


def finetune_config(epochs: int, lr: float = 0.01, seed: int = 1, batch_size: int = FINETUNE_BATCH) -> TrainConfig:
    """The recovery recipe after pruning: BatchNorm re-estimated, then warm-up and cosine decay.

    Measured on digits-resnet at 50% and 25% of MACs kept, over seeds and CPU kernels
    (BENCHMARKS.md, "Fine-tune recovery").
    """
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        schedule="warmup-cosine",
        warmup_fraction=0.1,
        bn_batches=32,
    )


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the weights outside each mask (module path -> bool mask shaped like the weight)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for path, mask in masks.items():
            weight = modules[path].weight
            assert isinstance(weight, torch.Tensor)
            weight.mul_(mask.to(weight.dtype))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int = 64, seed: int = 0) -> int:
    """Re-estimate every BatchNorm's running mean and variance on training batches.

    The statistics are reset and then averaged over the batches with equal weight (momentum
    ``None``), so the result does not depend on what the dense model had. Weights are untouched.

    Returns:
        The number of batches used (0 where the model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or batches <= 0 or len(x) == 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    used = 0
    for start in range(0, len(x), batch_size):
        if used == batches:
            break
        idx = order[start : start + batch_size]
        if len(idx) < 2:  # BatchNorm needs two samples per channel in training mode
            break
        model(x[idx])
        used += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return used


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=total, pct_start=config.warmup_fraction
        )
    if config.schedule != "warmup-cosine":
        raise ValueError(f"unknown schedule {config.schedule!r}")
    warmup = max(1, round(config.warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: ProgressFn | None = None,
    after_update: Callable[[float], None] | None = None,
) -> nn.Module:
    """Train in place with seeded SGD (Nesterov) and the config's schedule; returns the model.

    Args:
        model: the network to train.
        x, y: training inputs and labels.
        config: hyperparameters.
        masks: module path -> bool mask; re-applied after every step (sparse fine-tuning).
        on_step: called with (step, total steps).
        after_update: called after each optimizer update with the learning rate it used, before
            masks are re-applied (a proximal step for regularized training goes here).
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if config.bn_batches:
        recalibrate_batchnorm(model, x, config.bn_batches, config.batch_size, seed=config.seed)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    total = max(1, steps_per_epoch * config.epochs)
    opt = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
    )
    sched = _scheduler(opt, config, total)
    model.train()
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
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
                on_step(step, total)
    model.eval()
    return model


def finetune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: ProgressFn | None = None,
    lr: float = 0.01,
    seed: int = 1,
    batch_size: int = FINETUNE_BATCH,
) -> nn.Module:
    """Recover accuracy after pruning with :func:`finetune_config`; with 0 epochs only BatchNorm is re-estimated."""
    config = finetune_config(epochs, lr=lr, seed=seed, batch_size=batch_size)
    if epochs <= 0:
        recalibrate_batchnorm(model, x, config.bn_batches, config.batch_size, seed=seed)
        return model.eval()
    return train(model, x, y, config, masks=masks, on_step=on_step)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1]."""
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    return correct / max(1, len(x))
