"""Shared pieces of the pruning tests: tiny models that run in well under a second, random
weights that make every channel matter, and the zero-channel removal check.

The zero-channel check is the strongest test of the channel graph: kill some channels of every
group at their producers, remove them, and the pruned model must give the same outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.prune.graph import Group, build_groups
from edgeprune.prune.surgery import apply_structural, plan_from_groups

TINY_SHAPE = (4, 8, 8)


class Tiny(nn.Module):
    """conv-bn-relu, conv-bn-relu, 1x1 conv with bias, pool, linear: three prunable channel groups."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyResidual(nn.Module):
    """A stem and one residual block: the stem's channels are coupled with the block's output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(y)) + x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights *and* BatchNorm statistics, in eval mode, so every place of a channel matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.3)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model.eval()


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One torch thread per test, restored after: on a shared 2-core machine OpenMP's spinning
    threads make small convolutions hundreds of times slower under contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def randomize_norms(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if isinstance(m, (nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def zero_channels(model: nn.Module, group: Group, channels: list[int]) -> None:
    """Kill channels at their producers and norms: every consumer then reads exact zeros."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for c in channels:
            for place in group.channels[c]:
                if place.kind in ("out", "dw", "norm"):
                    mod = modules[place.module]
                    for name in ("weight", "bias"):
                        tensor = getattr(mod, name, None)
                        if tensor is not None:
                            tensor[place.index] = 0


def norm_oracle(model: nn.Module, plan: list[dict[str, Any]]) -> list[Any]:
    """Hooks making each pruned GroupNorm / LayerNorm normalize over its kept channels only."""
    modules = dict(model.named_modules())
    handles = []
    for entry in plan:
        module = modules[entry["module"]]
        keep = entry.get("out_keep")
        if keep is None or not isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            continue
        idx = torch.as_tensor(keep)

        def hook(
            mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, idx: torch.Tensor = idx
        ) -> torch.Tensor:
            x = inputs[0]
            out = torch.zeros_like(output)
            if isinstance(mod, nn.GroupNorm):
                groups = len(idx) if mod.num_groups == mod.num_channels else mod.num_groups
                out[:, idx] = F.group_norm(x[:, idx], groups, mod.weight[idx], mod.bias[idx], mod.eps)
            else:
                assert isinstance(mod, nn.LayerNorm)
                out[..., idx] = F.layer_norm(x[..., idx], (len(idx),), mod.weight[idx], mod.bias[idx], mod.eps)
            return out

        handles.append(module.register_forward_hook(hook))
    return handles


def check_zero_removal(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed))
    groups = build_groups(model, x)
    rng = np.random.default_rng(seed)
    keep = {}
    for g in groups:
        if g.fixed is not None or g.size < 2:
            continue
        drop = sorted(rng.choice(g.size, size=max(1, g.size // 3), replace=False).tolist())
        zero_channels(model, g, drop)
        keep[g.id] = [i for i in range(g.size) if i not in drop]
    plan = plan_from_groups(model, groups, keep)
    pruned = apply_structural(copy.deepcopy(model), plan)
    handles = norm_oracle(model, plan)
    try:
        with torch.no_grad():
            expected = model(x)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        got = pruned(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    return pruned
