"""Real torchvision architectures prune, run, shrink, export, and compute exactly what they should.

A representative subset of the zoo (the full zoo is ``benchmarks/zoo_coverage.py``), at 32 px:
the graph is shape-agnostic, so small inputs test the same couplings fast. Each model is checked
two ways: ``prune_channels`` at 30% gives a runnable, smaller model with the same output shape,
and, more strictly, zeroing a random subset of every prunable group and removing exactly those
channels leaves the output unchanged: a wrong coupling anywhere would show up as a difference.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.models.spec import build_source
from edgeprune.prune.structural import ChannelConfig, prune_channels
from tests.prune import check_zero_removal

SUBSET = [
    "resnet18",
    "mobilenet_v3_small",
    "densenet121",
    "shufflenet_v2_x0_5",
    "regnet_x_400mf",
    "efficientnet_b0",
    "squeezenet1_0",
    "googlenet",
    "resnext50_32x4d",
    "convnext_tiny",
]
EXPORTED = {"resnet18", "shufflenet_v2_x0_5", "mobilenet_v3_small", "convnext_tiny"}
SHAPE = (3, 32, 32)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One thread: on a shared two-core machine, two threads per process make forwards 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBSET)
def test_zoo_model_prunes_runs_and_exports(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model, _ = build_source(f"torchvision:{name}")
    model = randomize_bn(model)
    result = prune_channels(model, SHAPE, ChannelConfig(sparsity=0.3))
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert result.model.eval()(x).shape == model(x).shape
    assert result.macs_after < 0.85 * result.macs_before
    assert result.params_after < result.params_before
    if name in EXPORTED:
        from edgeprune.export.onnx_export import check_parity, export_onnx

        path = export_onnx(result.model, SHAPE, tmp_path / "m.onnx")
        inputs = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
        parity, _ = check_parity(result.model, path, inputs)
        assert parity.passed, parity


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SUBSET if n != "convnext_tiny"])  # LayerNorm: not exact
def test_zoo_model_zeroed_channels_removed_exactly(name: str) -> None:
    torch.manual_seed(0)
    model, _ = build_source(f"torchvision:{name}")
    check_zero_removal(randomize_bn(model), SHAPE, seed=0)
