"""The three theoretical speedups: MAC ratio, kernel-aware (Amdahl over time shares), roofline."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgeprune.analysis.cost import model_cost
from edgeprune.analysis.devices import get_device
from edgeprune.analysis.speedup import amdahl, normalize_pattern, theoretical_figures
from edgeprune.errors import UsageError
from edgeprune.models.digits import INPUT_SHAPE, DigitsResNet
from edgeprune.prune.patterns import make_masks


class Wide(nn.Module):
    """Layers wide enough (>= 256 channels) for TensorRT to pick 2:4 kernels, plus a big GEMM."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(256, 256, 3, padding=1, bias=False)
        self.fc = nn.Linear(256 * 7 * 7, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def masked(model: nn.Module, pattern: str, sparsity: float = 0.5) -> nn.Module:
    masks, _ = make_masks(model, pattern, sparsity)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name in masks:
                module.weight.mul_(masks[name])
    return model


@pytest.fixture(scope="module")
def wide() -> tuple:
    torch.manual_seed(0)
    dense = Wide().eval()
    base = model_cost(dense, (256, 7, 7))
    sparse = masked(Wide().eval(), "nm")
    return base, model_cost(sparse, (256, 7, 7))


@pytest.fixture(scope="module")
def digits() -> tuple:
    torch.manual_seed(0)
    base = model_cost(DigitsResNet((16, 32, 64)), INPUT_SHAPE)
    channel = model_cost(DigitsResNet((8, 16, 32)), INPUT_SHAPE)
    unstructured = model_cost(masked(DigitsResNet((16, 32, 64)), "unstructured"), INPUT_SHAPE)
    nm = model_cost(masked(DigitsResNet((16, 32, 64)), "nm"), INPUT_SHAPE)
    return base, channel, unstructured, nm


def test_amdahl() -> None:
    assert amdahl([(0.5, 2.0), (0.5, 1.0)]) == pytest.approx(1 / 0.75)
    assert amdahl([(0.5, 2.0)], other_share=0.5) == pytest.approx(1 / 0.75)
    assert amdahl([(0.5, float("inf")), (0.5, 1.0)]) == pytest.approx(2.0)
    assert amdahl([]) == 1.0


def test_unstructured_counts_nowhere(digits) -> None:
    base, _, unstructured, _ = digits
    for device in ("host-cpu", "jetson-agx-orin", "jetson-nano"):
        figures = theoretical_figures(base, unstructured, "unstructured", device)
        assert figures["mac_ratio"] == pytest.approx(2.0, rel=0.02)
        assert figures["kernel_aware"] == pytest.approx(1.0)
        assert figures["roofline"] == pytest.approx(1.0)
        assert all("zeros are multiplied" in row["reason"] for row in figures["layers"])


def test_channel_pruning_counts_everywhere(digits) -> None:
    base, channel, _, _ = digits
    for device in ("host-cpu", "jetson-orin-nx", "jetson-tx2"):
        figures = theoretical_figures(base, channel, "channel", device)
        assert figures["mac_ratio"] == pytest.approx(base.macs / channel.macs)
        assert 3.5 < figures["kernel_aware"] <= figures["mac_ratio"] + 1e-9
        # Memory traffic shrinks less than MACs (activations only halve), so the roofline is lower.
        assert 1.0 < figures["roofline"] <= figures["mac_ratio"] + 1e-9
        assert {row["kernel"] for row in figures["layers"]} == {"smaller dense kernel"}


def test_2_4_only_on_wide_layers_of_ampere(wide, digits) -> None:
    base, sparse = wide
    orin = theoretical_figures(base, sparse, "2:4", "jetson-agx-orin")
    assert orin["mac_ratio"] == pytest.approx(2.0)
    rows = {row["name"]: row for row in orin["layers"]}
    assert rows["conv"]["kernel"] == "2:4 sparse kernel" and rows["conv"]["kernel_aware"] == pytest.approx(2.0)
    assert orin["kernel_aware"] == pytest.approx(2.0)  # both layers are wide enough: at most 2x
    # Volta, Pascal and the CPU have no sparse tensor cores: 1.0x.
    for device in ("jetson-agx-xavier", "jetson-tx2", "host-cpu"):
        figures = theoretical_figures(base, sparse, "nm", device)
        assert figures["kernel_aware"] == pytest.approx(1.0) and figures["roofline"] == pytest.approx(1.0)
    # Digits layers have fewer than 256 channels: TensorRT would keep them dense.
    dbase, _, _, dnm = digits
    small = theoretical_figures(dbase, dnm, "nm", "jetson-agx-orin")
    assert small["kernel_aware"] == pytest.approx(1.0)
    assert any("fewer than 256 channels" in row["reason"] for row in small["layers"])
    # The threshold is a stated assumption and can be lowered.
    low = theoretical_figures(dbase, dnm, "nm", "jetson-agx-orin", min_sparse_channels=8)
    assert low["kernel_aware"] > 1.2


def test_roofline_of_a_memory_bound_gemm_under_2_4(wide) -> None:
    """At batch 1 the big Linear is memory-bound: 2:4 only saves compressed-weight bytes.

    fp16 2:4 storage is half the values plus 2 bits per kept value: 0.5 + 0.5 x 2/16 = 0.5625 of
    dense (NVIDIA: -44%), so the layer's roofline speedup is about 1 / 0.5625 = 1.78x, not 2x.
    """
    base, sparse = wide
    figures = theoretical_figures(base, sparse, "nm", "jetson-agx-orin", precision="fp16")
    fc = next(row for row in figures["layers"] if row["name"] == "fc")
    assert fc["bound"] == "memory"
    assert fc["roofline"] == pytest.approx(1 / 0.5625, rel=0.02)


def test_measured_time_shares_drive_amdahl(digits) -> None:
    base, channel, _, _ = digits
    shares = {layer.name: 0.8 / len(base.layers) for layer in base.layers}  # 20% in other ops
    figures = theoretical_figures(base, channel, "channel", "host-cpu", time_shares=shares)
    per_layer = [(shares[row["name"]], row["kernel_aware"]) for row in figures["layers"]]
    assert figures["kernel_aware"] == pytest.approx(amdahl(per_layer, other_share=0.2))
    assert figures["time_shares_from"] == "measured profile"


def test_figures_are_labelled_and_json_ready(digits) -> None:
    base, channel, _, _ = digits
    figures = theoretical_figures(base, channel, "channel", "jetson-orin-nano", batch_size=8)
    assert set(figures["labels"]) == {"mac_ratio", "kernel_aware", "roofline"}
    assert all("estimate" in label for label in figures["labels"].values())
    assert figures["device"] == "jetson-orin-nano" and figures["precision"] == "fp16"
    assert figures["assumptions"]
    json.dumps(figures, allow_nan=False)


def test_precision_without_a_peak_is_an_assumption(digits) -> None:
    base, channel, _, _ = digits
    figures = theoretical_figures(base, channel, "channel", "jetson-nano", precision="int8")
    assert any("no int8 peak" in text for text in figures["assumptions"])


def test_bad_names() -> None:
    assert normalize_pattern("2:4") == "nm"
    with pytest.raises(UsageError, match="unknown sparsity pattern"):
        normalize_pattern("diagonal")
    with pytest.raises(UsageError, match="unknown device"):
        get_device("jetson-thor-9000")
