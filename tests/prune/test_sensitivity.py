"""Sensitivity scan: one row per layer and sparsity, the model restored, a table and a plot."""

from __future__ import annotations

import torch

from edgeprune.prune.sensitivity import layer_sensitivity, plot_sensitivity, sensitivity_markdown
from tests.prune import (
    TINY_SHAPE,
    Tiny,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


def _agreement(reference: torch.Tensor, x: torch.Tensor):  # accuracy against the unpruned predictions
    def evaluate(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float((model(x).argmax(1) == reference).float().mean())

    return evaluate


def test_mask_scan_covers_every_layer_and_restores_the_model(tmp_path) -> None:
    model = randomized(Tiny())
    x = torch.randn(64, *TINY_SHAPE)
    reference = model(x).argmax(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = layer_sensitivity(model, TINY_SHAPE, _agreement(reference, x), sparsities=(0.5, 0.99))
    assert {(r["layer"], r["sparsity"]) for r in rows} == {
        (p, s) for p in ("conv1", "conv2", "conv3", "fc") for s in (0.5, 0.99)
    }
    assert all(r["baseline"] == 1.0 and r["drop"] == 1.0 - r["accuracy"] for r in rows)
    assert any(r["drop"] > 0 for r in rows if r["sparsity"] == 0.99)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    table = sensitivity_markdown(rows)
    assert table.splitlines()[0] == "| layer | 50% | 99% |" and "| conv2 |" in table
    image = plot_sensitivity(rows, tmp_path / "s.png")
    assert image.stat().st_size > 1000


def test_channel_scan_prunes_each_group_alone() -> None:
    model = randomized(Tiny())
    x = torch.randn(32, *TINY_SHAPE)
    rows = layer_sensitivity(model, TINY_SHAPE, _agreement(model(x).argmax(1), x), pattern="channel", sparsities=(0.5,))
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3"]
