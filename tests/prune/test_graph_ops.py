"""The graph maps real coupling structures: removing zeroed channels never changes the output.

The property tests build random architectures from blocks that couple channels in every way the
graph knows (residual adds, concatenation, depthwise / grouped / multiplier convolutions, SE,
channel shuffle, chunk and split, flatten into a linear layer), zero a random subset of every
prunable group, prune exactly those channels, and require the same output (atol 1e-5).

Normalization over channels (GroupNorm, LayerNorm) is different: removing a channel changes the
statistics even when it is zero. There the reference is the unpruned model with each norm
replaced, through a forward hook, by the same norm computed over the kept channels only: the
pruned model must match it, which checks that the group structure survives surgery.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgeprune.errors import GraphError, PruneError
from edgeprune.prune.graph import HANDLERS, Group, build_groups, register_handler
from edgeprune.prune.structural import ChannelConfig, prune_channels
from edgeprune.prune.surgery import apply_structural
from tests.prune import check_zero_removal, randomize_norms


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


# -- random architectures ---------------------------------------------------------------------------


class Block(nn.Module):
    """One coupling structure on a stream of ``ch`` channels (``ch`` divisible by 4)."""

    def __init__(self, kind: str, ch: int, groups: int, norm_groups: int = 1) -> None:
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
        elif kind == "multiplier":  # depthwise with two filters per channel, then back to ch
            self.body = nn.Sequential(
                nn.Conv2d(ch, 2 * ch, 3, padding=1, groups=ch),
                nn.BatchNorm2d(2 * ch),
                nn.ReLU(),
                nn.Conv2d(2 * ch, ch, 1),
            )
        elif kind == "grouped":  # ResNeXt-style: 1x1, grouped 3x3, 1x1, residual
            mid = 2 * ch
            self.body = nn.Sequential(
                nn.Conv2d(ch, mid, 1),
                nn.BatchNorm2d(mid),
                nn.ReLU(),
                nn.Conv2d(mid, mid, 3, padding=1, groups=groups),
                nn.BatchNorm2d(mid),
                nn.ReLU(),
                nn.Conv2d(mid, ch, 1, groups=groups),
                nn.BatchNorm2d(ch),
            )
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
        elif kind in ("shuffle", "shuffle-module"):
            self.body = nn.Sequential(nn.Conv2d(ch, ch, 1, groups=groups), nn.BatchNorm2d(ch), nn.ReLU())
            self.shuffle = nn.ChannelShuffle(groups)
            self.groups = groups
        elif kind in ("chunk", "split"):  # ShuffleNet v2 unit: half passes, half is transformed
            half = ch // 2
            self.branch = nn.Sequential(
                nn.Conv2d(half, half, 1),
                nn.BatchNorm2d(half),
                nn.ReLU(),
                nn.Conv2d(half, half, 3, padding=1, groups=half),
                nn.BatchNorm2d(half),
            )
        elif kind == "groupnorm":
            self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(norm_groups, ch), nn.ReLU())
        elif kind == "layernorm":  # ConvNeXt-style block: channels-last LayerNorm, MLP, layer scale
            self.dw = nn.Conv2d(ch, ch, 3, padding=1, groups=ch)
            self.norm = nn.LayerNorm(ch)
            self.fc1 = nn.Linear(ch, 2 * ch)
            self.fc2 = nn.Linear(2 * ch, ch)
            self.scale = nn.Parameter(torch.rand(ch, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("residual", "grouped"):
            return torch.relu(self.body(x) + x)
        if self.kind == "se":
            return x * self.body(x)
        if self.kind == "concat":
            return self.post(torch.cat([self.a(x), self.b(x)], dim=1))
        if self.kind == "shuffle":
            return channel_shuffle(self.body(x), self.groups)
        if self.kind == "shuffle-module":
            return self.shuffle(self.body(x))
        if self.kind == "chunk":
            a, b = x.chunk(2, dim=1)
            return channel_shuffle(torch.cat([a, self.branch(b)], dim=1), 2)
        if self.kind == "split":
            a, b = torch.split(x, x.size(1) // 2, dim=1)
            return torch.cat([self.branch(a), b], dim=1)
        if self.kind == "layernorm":
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(F.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
            return x + self.scale * y
        return self.body(x)


class RandomNet(nn.Module):
    def __init__(self, kinds: list[str], ch: int, groups: int, flatten: bool, norm_groups: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(k, ch, groups, norm_groups) for k in kinds])
        self.flatten = flatten
        self.pool = nn.AdaptiveAvgPool2d(2 if flatten else 1)
        self.fc = nn.Linear(ch * (4 if flatten else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


EXACT = [
    "conv",
    "residual",
    "depthwise",
    "multiplier",
    "grouped",
    "se",
    "concat",
    "shuffle",
    "shuffle-module",
    "chunk",
    "split",
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(EXACT), min_size=1, max_size=5),
    ch=st.sampled_from([8, 12, 16]),
    groups=st.sampled_from([2, 4]),
    flatten=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_zeroed_channels_removed_random_architectures(
    kinds: list[str], ch: int, groups: int, flatten: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    check_zero_removal(randomize_norms(RandomNet(kinds, ch, groups, flatten), seed), (3, 8, 8), seed)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(EXACT + ["groupnorm", "layernorm", "layernorm"]), min_size=1, max_size=4),
    ch=st.sampled_from([8, 12, 16]),
    groups=st.sampled_from([2, 4]),
    norm_groups=st.sampled_from([1, 2, 4, 0]),
    seed=st.integers(0, 10_000),
)
def test_normalization_keeps_its_groups(kinds: list[str], ch: int, groups: int, norm_groups: int, seed: int) -> None:
    torch.manual_seed(seed)
    net = RandomNet(kinds, ch, groups, False, norm_groups or ch)  # 0: one channel per group
    pruned = check_zero_removal(randomize_norms(net, seed), (3, 8, 8), seed)
    for m in pruned.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
        if isinstance(m, nn.Conv2d):
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0


# -- specific structures -----------------------------------------------------------------------------


def group_of(groups: list[Group], module: str, kind: str) -> Group:
    return next(g for g in groups if any(m.module == module and m.kind == kind for m in g.members))


class FlattenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.c = nn.Conv2d(10, 5, 1)
        self.fc = nn.Linear(5 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.fc(F.adaptive_avg_pool2d(y, 2).view(y.size(0), -1))


def test_concat_maps_indices_and_flatten_expands_channels() -> None:
    groups = build_groups(FlattenNet(), torch.zeros(2, 3, 8, 8))
    a, b, c = group_of(groups, "a", "out"), group_of(groups, "b", "out"), group_of(groups, "c", "out")
    assert [p.index for ch in a.channels for p in ch if p.module == "c" and p.kind == "in"] == [0, 1, 2, 3]
    assert [p.index for ch in b.channels for p in ch if p.module == "c" and p.kind == "in"] == list(range(4, 10))
    fc_places = [p for ch in c.channels for p in ch if p.module == "fc"]
    assert [(p.index, p.expand) for p in fc_places] == [(4 * i, 4) for i in range(5)]


class ConstSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv(x), [3, 5], dim=1)
        return self.head(a) + b.sum(1, keepdim=True)


def test_split_with_constant_sizes_is_fixed_with_reason() -> None:
    groups = build_groups(ConstSplit(), torch.zeros(2, 3, 4, 4))
    assert "splits channels at sizes written in the code" in (group_of(groups, "conv", "out").fixed or "")


class Tiny(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), inner, nn.Conv2d(8, 8, 3, padding=1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class Cumulative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def test_unknown_op_names_op_path_and_both_fixes() -> None:
    with pytest.raises(GraphError) as info:
        build_groups(Tiny(Cumulative()), torch.zeros(2, 3, 8, 8))
    message = str(info.value)
    assert "cumsum" in message and "blocks.1" in message
    assert "ignored layers" in message and "register_handler" in message


def test_ignoring_the_block_gets_past_the_unknown_op_and_leaves_it_alone() -> None:
    model = Tiny(Cumulative()).eval()
    result = prune_channels(model, (3, 8, 8), ChannelConfig(sparsity=0.5, ignore=frozenset({"blocks.1"})))
    # The block's input and output channels stay (the cumsum runs over them); the stem is pruned.
    assert result.model.blocks[0].out_channels == 8 and result.model.blocks[2].in_channels == 8
    assert result.model.stem[0].out_channels == 4
    assert result.model(torch.zeros(2, 3, 8, 8)).shape == (2, 4)


def test_graph_error_leaves_the_model_untouched() -> None:
    model = Tiny(Cumulative()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(GraphError):
        prune_channels(model, (3, 8, 8), ChannelConfig(sparsity=0.5))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Scaled(nn.Module):
    """A custom leaf: multiplies each channel by a learned scale."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.cumsum(self.scale, 0).view(1, -1, 1, 1)


def test_registered_module_handler_is_a_leaf_and_is_called() -> None:
    calls = []

    def keep_layout(builder, node):  # type: ignore[no-untyped-def]
        calls.append(node.target)
        return builder.opaque(node, "custom scale")

    register_handler(Scaled, keep_layout)
    try:
        groups = build_groups(Tiny(Scaled(8)), torch.zeros(2, 3, 8, 8))
    finally:
        HANDLERS.pop(Scaled)
    assert calls == ["blocks.1"]
    assert group_of(groups, "blocks.0", "out").fixed == "custom scale"


class SizedByInput(nn.Module):
    """MaxViT's pattern: ``reshape(B, N, D)`` with D read from another tensor's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.qkv = nn.Linear(8, 12)
        self.merge = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).flatten(2).transpose(1, 2)  # B, N, 8
        b, n, d = x.shape
        q = self.qkv(x)[..., :8].reshape(b, n, 2, 4)  # heads written in the code
        out = q.reshape(b, n, d)  # its width comes from x
        return self.merge(out) + x


def test_reshape_sized_by_another_tensor_fixes_it() -> None:
    groups = build_groups(SizedByInput(), torch.zeros(2, 3, 4, 4))
    assert "is sized by it" in (group_of(groups, "conv", "out").fixed or "")


class MiniViT(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 5, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(x[:, 0])


def test_transformer_keeps_its_attention_width_and_prunes_the_mlp() -> None:
    model = MiniViT().eval()
    groups = build_groups(model, torch.zeros(2, 3, 8, 8))
    stream = group_of(groups, "proj", "out")
    assert "MultiheadAttention" in (stream.fixed or "")
    assert {("cls", "param"), ("pos", "param")} <= {(m.module, m.kind) for m in stream.members}
    assert group_of(groups, "mlp.0", "out").fixed is None
    result = prune_channels(model, (3, 8, 8), ChannelConfig(sparsity=0.5))
    assert result.model.mlp[0].out_features == 32 and result.model.mlp[2].in_features == 32
    assert result.model(torch.zeros(2, 3, 8, 8)).shape == (2, 3)


def test_shared_module_keeps_one_set_of_channels() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.body = nn.Conv2d(8, 8, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return self.fc(self.body(torch.relu(self.body(x))).mean((2, 3)))

    model = randomize_norms(Shared(), 0)
    pruned = check_zero_removal(model, (3, 4, 4), 0)
    assert pruned.body.in_channels == pruned.body.out_channels


def test_plan_that_breaks_conv_groups_is_refused_before_any_change() -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 1, groups=2))
    with pytest.raises(PruneError, match="differ between its 2 groups"):
        apply_structural(model, [{"module": "0", "type": "Conv2d", "out_keep": [0, 1, 2, 3, 4]}])
    assert model[0].out_channels == 8 and model[0].weight.shape[0] == 8


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


def test_untraceable_block_is_explained_and_can_be_ignored() -> None:
    with pytest.raises(GraphError, match="torch.fx cannot trace.*ignored layers"):
        build_groups(Tiny(DataDependent()), torch.zeros(2, 3, 8, 8))
    result = prune_channels(
        Tiny(DataDependent()).eval(), (3, 8, 8), ChannelConfig(sparsity=0.5, ignore=frozenset({"blocks.1"}))
    )
    assert result.model.stem[0].out_channels == 4
