"""Criteria rank channels sensibly over whole groups; "how much" policies do what they promise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.prune.criteria import CRITERIA, get_criterion, register_criterion
from edgeprune.prune.graph import Group, build_groups
from edgeprune.prune.structural import ChannelConfig, prune_channels


class Net(nn.Module):
    """conv1 -> bn1 -> relu -> conv2 (+ shortcut conv) -> bn2 -> relu -> pool -> fc."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 16, 3, padding=1)
        self.short = nn.Conv2d(3, 16, 1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y) + self.short(x)))
        return self.fc(y.mean((2, 3)))


SHAPE = (3, 8, 8)


def group_of(groups: list[Group], module: str) -> Group:
    return next(g for g in groups if any(m.module == module and m.kind == "out" for m in g.members))


def setup() -> tuple[nn.Module, list[Group], dict[str, nn.Module]]:
    torch.manual_seed(0)
    model = Net().eval()
    groups = build_groups(model, torch.zeros(2, *SHAPE))
    return model, groups, dict(model.named_modules())


def calibration() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, *SHAPE, generator=g) for _ in range(2)]


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_every_criterion_scores_every_channel(name: str) -> None:
    model, groups, modules = setup()
    ctx = {"seed": 0, "calibration": calibration(), "cache": {}}
    for group in groups:
        scores = get_criterion(name)(modules, group, ctx)
        assert scores.shape == (group.size,) and torch.isfinite(scores).all()


def test_l1_prefers_heavier_filters_and_aggregates_over_members() -> None:
    model, groups, modules = setup()
    with torch.no_grad():
        model.conv1.weight.mul_(torch.arange(1, 9).view(8, 1, 1, 1).float())
        model.conv2.weight.mul_(torch.arange(1, 9).view(1, 8, 1, 1).float())
        model.conv2.weight[:, 0] = 0  # channel 0 is also unused by conv2: doubly unimportant
    scores = get_criterion("l1")(modules, group_of(groups, "conv1"), {})
    assert scores.argmin() == 0 and scores.argmax() == 7
    # The coupled group of conv2 and the shortcut: a channel dead in one member still counts the other.
    with torch.no_grad():
        model.conv2.weight[3] = 0
    stream = group_of(groups, "conv2")
    assert {m.module for m in stream.producers} == {"conv2", "short"}
    scores = get_criterion("l1")(modules, stream, {})
    assert 0 < scores[3] < scores.mean()


def test_bn_scale_follows_gamma() -> None:
    model, groups, modules = setup()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([5.0, 1, 2, 0.01, 3, 4, 6, 7]))
    scores = get_criterion("bn-scale")(modules, group_of(groups, "conv1"), {})
    assert scores.argmin() == 3 and scores.argmax() == 7


def test_taylor_needs_calibration() -> None:
    model, groups, modules = setup()
    with pytest.raises(UsageError, match="calibration"):
        get_criterion("taylor")(modules, groups[0], {})


def test_taylor_scores_a_dead_channel_zero_and_leaves_the_model_alone() -> None:
    model, groups, modules = setup()
    with torch.no_grad():
        model.conv1.weight[2] = 0
        model.conv1.bias[2] = 0
        model.bn1.weight[2] = 0
        model.bn1.bias[2] = 0
    model.fc.weight.requires_grad_(False)
    scores = get_criterion("taylor")(modules, group_of(groups, "conv1"), {"calibration": calibration()})
    assert scores[2] == 0 and (scores[[0, 1, 3, 4, 5, 6, 7]] > 0).all()
    assert all(p.grad is None for p in model.parameters())
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad


def test_fpgm_drops_filters_near_the_geometric_median() -> None:
    model, groups, modules = setup()
    with torch.no_grad():
        base = torch.randn(3, 3, 3)
        for i in range(8):
            model.conv1.weight[i] = base * (1 + 0.01 * i)  # a tight cluster...
        model.conv1.weight[5] = -4 * base  # ...and one outlier
    scores = get_criterion("fpgm")(modules, group_of(groups, "conv1"), {})
    assert scores.argmax() == 5


def test_unknown_criterion_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="l1.*random"):
        get_criterion("nope")


def test_registered_criterion_drives_pruning() -> None:
    @register_criterion("keep-first")
    def keep_first(modules, group, ctx):  # type: ignore[no-untyped-def]
        return -torch.arange(group.size, dtype=torch.float)

    try:
        result = prune_channels(Net().eval(), SHAPE, ChannelConfig(sparsity=0.5, criterion="keep-first"))
    finally:
        CRITERIA.pop("keep-first")
    conv1 = next(e for e in result.plan if e["module"] == "conv1")
    assert conv1["out_keep"] == [0, 1, 2, 3]


def test_taylor_prunes_with_calibration_batches() -> None:
    model = Net().eval()
    result = prune_channels(model, SHAPE, ChannelConfig(sparsity=0.5, criterion="taylor", calibration=calibration()))
    assert result.model.conv1.out_channels == 4
    assert result.model(torch.zeros(1, *SHAPE)).shape == (1, 4)


class TwoBranches(nn.Module):
    """Two independent groups of 16 channels each."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(3, 16, 1)
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))


def test_global_ranking_prunes_where_scores_are_low_within_the_cap() -> None:
    model = TwoBranches().eval()
    with torch.no_grad():
        model.a.weight[:12] *= 1e-3  # 12 of a's 16 channels are nearly dead; b is uniform
        model.b.weight.copy_(torch.ones_like(model.b.weight))
        model.fc.weight.copy_(torch.ones_like(model.fc.weight))
    result = prune_channels(model, (3, 4, 4), ChannelConfig(sparsity=0.25, global_ranking=True))
    assert result.model.a.out_channels == 8 and result.model.b.out_channels == 16
    capped = prune_channels(model, (3, 4, 4), ChannelConfig(sparsity=0.25, global_ranking=True, max_sparsity=0.25))
    assert capped.model.a.out_channels == 12 and capped.model.b.out_channels == 12


def test_layer_sparsity_dict_overrides_per_layer() -> None:
    model = TwoBranches().eval()
    only_a = prune_channels(model, (3, 4, 4), ChannelConfig(layer_sparsity={"a": 0.5}))
    assert only_a.model.a.out_channels == 8 and only_a.model.b.out_channels == 16
    both = prune_channels(model, (3, 4, 4), ChannelConfig(sparsity=0.25, layer_sparsity={"b": 0.75}))
    assert both.model.a.out_channels == 12 and both.model.b.out_channels == 4


def test_target_params_is_met_and_estimated_exactly() -> None:
    model = Net(width=32).eval()
    result = prune_channels(model, SHAPE, ChannelConfig(target_params=0.5))
    assert result.params_after <= 0.5 * result.params_before
    assert result.params_after >= 0.4 * result.params_before
    assert result.params_after == sum(p.numel() for p in result.model.parameters())


class ResNeXtBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 1)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, groups=4)
        self.conv3 = nn.Conv2d(64, 32, 1)
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))).mean((2, 3)))


def test_round_to_counts_every_conv_group() -> None:
    result = prune_channels(ResNeXtBlock().eval(), (3, 6, 6), ChannelConfig(sparsity=0.4, round_to=16))
    m = result.model
    assert m.conv2.groups == 4
    for conv in (m.conv1, m.conv2, m.conv3):
        assert conv.out_channels % 16 == 0 and conv.out_channels < 64 or conv is m.conv3
    assert m.conv1.out_channels == m.conv2.in_channels and m.conv2.out_channels == m.conv3.in_channels
    assert m(torch.zeros(1, 3, 6, 6)).shape == (1, 2)


def test_target_macs_with_global_ranking_and_round_to() -> None:
    model = Net(width=32).eval()
    result = prune_channels(model, SHAPE, ChannelConfig(target_macs=0.5, global_ranking=True, round_to=8))
    assert result.macs_after <= 0.5 * result.macs_before
    assert result.model.conv1.out_channels % 8 == 0 and result.model.conv2.out_channels % 8 == 0
