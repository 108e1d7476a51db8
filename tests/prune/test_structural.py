"""Channel pruning: zeroed channels removed leave the output unchanged; exports stay faithful."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgeprune.analysis.cost import model_cost
from edgeprune.errors import PruneError, UsageError
from edgeprune.models.digits import digits_resnet
from edgeprune.prune.graph import build_groups
from edgeprune.prune.structural import ChannelConfig, prune_channels
from edgeprune.prune.surgery import apply_structural, plan_from_groups


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def zero_channels(model: nn.Module, group, channels: list[int]) -> None:
    """Make channels of a group dead: producer weights, BN scale and shift all zero.

    Then every consumer sees exactly 0 in those channels, so removing them cannot change outputs.
    """
    modules = dict(model.named_modules())
    with torch.no_grad():
        for c in channels:
            for place in group.channels[c]:
                mod = modules[place.module]
                if place.kind in ("out", "dw", "norm"):
                    mod.weight[place.index] = 0
                    if mod.bias is not None:
                        mod.bias[place.index] = 0


def check_zero_removal(model: nn.Module, shape: tuple[int, ...], seed: int) -> None:
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed))
    groups = build_groups(model, x)
    prunable = [g for g in groups if g.fixed is None]
    rng = np.random.default_rng(seed)
    keep = {}
    for g in prunable:
        drop = sorted(rng.choice(g.size, size=max(1, g.size // 3), replace=False).tolist()) if g.size > 1 else []
        zero_channels(model, g, drop)
        keep[g.id] = [i for i in range(g.size) if i not in drop]
    expected = model(x)
    pruned = apply_structural(copy.deepcopy(model), plan_from_groups(model, groups, keep))
    got = pruned(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert model_cost(pruned, shape).macs < model_cost(model, shape).macs


def test_zeroed_channels_removed_digits_resnet() -> None:
    torch.manual_seed(0)
    check_zero_removal(randomize_bn(digits_resnet()), (1, 32, 32), seed=0)


# --- random architectures for the property test --------------------------------------------------


class Block(nn.Module):
    def __init__(self, kind: str, ch: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        elif kind == "residual":
            self.body = nn.Sequential(
                nn.Conv2d(ch, ch, 3, padding=1),
                nn.BatchNorm2d(ch),
                nn.ReLU(),
                nn.Conv2d(ch, ch, 3, padding=1),
                nn.BatchNorm2d(ch),
            )
        elif kind == "depthwise":
            self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1, groups=ch), nn.BatchNorm2d(ch), nn.ReLU6())
        elif kind == "se":
            self.body = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(ch, max(1, ch // 2), 1),
                nn.ReLU(),
                nn.Conv2d(max(1, ch // 2), ch, 1),
                nn.Sigmoid(),
            )
        elif kind == "concat":
            self.a = nn.Sequential(nn.Conv2d(ch, ch // 2, 1), nn.BatchNorm2d(ch // 2))
            self.b = nn.Sequential(nn.Conv2d(ch, ch - ch // 2, 3, padding=1), nn.BatchNorm2d(ch - ch // 2))
            self.post = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "residual":
            return torch.relu(self.body(x) + x)
        if self.kind == "se":
            return x * self.body(x)
        if self.kind == "concat":
            return self.post(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.body(x)


class RandomNet(nn.Module):
    def __init__(self, kinds: list[str], ch: int, flatten: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(k, ch) for k in kinds])
        self.flatten = flatten
        self.pool = nn.AdaptiveAvgPool2d(2 if flatten else 1)
        self.fc = nn.Linear(ch * (4 if flatten else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(["conv", "residual", "depthwise", "se", "concat"]), min_size=1, max_size=5),
    ch=st.integers(4, 12),
    flatten=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_zeroed_channels_removed_random_architectures(kinds: list[str], ch: int, flatten: bool, seed: int) -> None:
    torch.manual_seed(seed)
    check_zero_removal(randomize_bn(RandomNet(kinds, ch, flatten), seed), (3, 8, 8), seed)


def test_target_macs_and_round_to() -> None:
    model = digits_resnet().eval()
    result = prune_channels(model, (1, 32, 32), ChannelConfig(target_macs=0.5, round_to=8))
    assert result.macs_after <= 0.5 * result.macs_before * 1.02
    for m in result.model.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels > 1:
            assert m.out_channels % 8 == 0
    assert result.model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == 77_754  # the original is untouched


def test_bad_requests() -> None:
    with pytest.raises(UsageError):
        ChannelConfig(sparsity=1.5)
    with pytest.raises(UsageError):
        ChannelConfig(sparsity=0.5, target_macs=0.5)
    with pytest.raises(PruneError, match="cannot reach"):
        prune_channels(digits_resnet(), (1, 32, 32), ChannelConfig(target_macs=0.001))


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "random"])
def test_criteria_prune_and_export(criterion: str, tmp_path) -> None:
    from edgeprune.export.onnx_export import check_parity, export_onnx

    model = randomize_bn(digits_resnet())
    result = prune_channels(model, (1, 32, 32), ChannelConfig(sparsity=0.4, criterion=criterion))
    onnx_path = export_onnx(result.model, (1, 32, 32), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    parity, _ = check_parity(result.model, onnx_path, x)
    assert parity.passed, parity
