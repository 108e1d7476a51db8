"""MAC and parameter counts against published figures and hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.analysis.cost import model_cost, theoretical_speedup
from edgeprune.models.digits import digits_resnet


def test_hand_counted_conv_and_linear() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    cost = model_cost(model, (3, 8, 8))
    conv, fc = cost.layers
    assert conv.macs == 8 * 4 * 4 * 3 * 9
    assert fc.macs == 128 * 5
    assert cost.params == (8 * 27 + 8) + (128 * 5 + 5)


def test_digits_resnet_counts() -> None:
    cost = model_cost(digits_resnet(), (1, 32, 32))
    assert cost.params == 77_754
    assert cost.macs == 12_206_720


@pytest.mark.parametrize("name,gmacs,mparams", [("resnet18", 1.814, 11.69), ("resnet50", 4.089, 25.56)])
def test_torchvision_against_published(name: str, gmacs: float, mparams: float) -> None:
    import torchvision

    cost = model_cost(torchvision.models.get_model(name, weights=None), (3, 224, 224))
    assert abs(cost.macs / 1e9 - gmacs) / gmacs < 0.01
    assert abs(cost.params / 1e6 - mparams) / mparams < 0.01


def test_effective_macs_follow_density() -> None:
    model = digits_resnet()
    dense = model_cost(model, (1, 32, 32))
    with torch.no_grad():
        model.layer1.conv1.weight.zero_()
    sparse = model_cost(model, (1, 32, 32))
    conv = next(layer for layer in sparse.layers if layer.name == "layer1.conv1")
    assert conv.density == 0.0 and conv.effective_macs == 0.0
    assert sparse.macs == dense.macs
    assert theoretical_speedup(dense, sparse) == pytest.approx(dense.macs / (dense.macs - conv.macs))
