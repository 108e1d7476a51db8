"""``edgeprune prune --pattern channel``: how much to cut (parameters, global ranking, per-layer
overrides) and the data-aware Taylor criterion, from the command line."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from edgeprune.analysis.cost import model_cost
from edgeprune.cli.main import app
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet
from edgeprune.models.spec import load_model

runner = CliRunner()


def _prune(tmp_path, *args: str):
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "digits-resnet", "--pattern", "channel", "--out", str(out), *args])
    return result, out


def test_target_params_with_global_ranking(tmp_path) -> None:
    torch.manual_seed(0)
    result, out = _prune(tmp_path, "--target-params", "0.5", "--global", "--max-sparsity", "0.8")
    assert result.exit_code == 0, result.output
    dense = model_cost(digits_resnet(), INPUT_SHAPE).params
    pruned = load_model(str(out)).model
    kept = sum(p.numel() for p in pruned.parameters()) / dense
    assert 0.4 <= kept <= 0.55
    dense_widths = [m.out_channels for m in digits_resnet().modules() if isinstance(m, torch.nn.Conv2d)]
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    # Global ranking cuts groups unevenly, but never more than --max-sparsity of one.
    assert len({round(w / d, 2) for w, d in zip(widths, dense_widths)}) > 1
    assert all(w >= 0.2 * d for w, d in zip(widths, dense_widths))


def test_layer_sparsity_touches_only_the_named_layers(tmp_path) -> None:
    result, out = _prune(tmp_path, "--layer-sparsity", "layer3.conv1=0.5")
    assert result.exit_code == 0, result.output
    model = load_model(str(out)).model
    assert model.layer3.conv1.out_channels == 32  # 64 halved
    assert model.layer1.conv1.out_channels == 16 and model.layer2.conv1.out_channels == 32


def test_taylor_criterion_uses_training_images(tmp_path) -> None:
    result, out = _prune(tmp_path, "--sparsity", "0.3", "--criterion", "taylor", "--calib-samples", "128")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["summary"]["criterion"] == "taylor"
    assert load_model(str(out)).model.layer1.conv1.out_channels < 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sparsity", "0.3", "--target-macs", "0.5"], "give one of --sparsity, --target-macs, --target-params"),
        (["--layer-sparsity", "layer1"], "PATH=FRACTION"),
        (["--layer-sparsity", "layer1=1.5"], "between 0 and 1"),
        (["--target-params", "0"], "between 0 and 1"),
    ],
)
def test_bad_amounts_are_one_line_errors(tmp_path, args: list[str], message: str) -> None:
    result, out = _prune(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_channel_only_options_refused_for_masks(tmp_path) -> None:
    out = tmp_path / "m"
    result = runner.invoke(
        app, ["prune", "digits-resnet", "--pattern", "unstructured", "--sparsity", "0.5", "--global", "--out", str(out)]
    )
    assert result.exit_code == 2 and "--global applies to the channel pattern only" in result.output
    assert not out.exists()


def test_taylor_without_data_asks_for_it_and_data_of_the_wrong_shape_is_refused(tmp_path) -> None:
    out = tmp_path / "t"
    result = runner.invoke(
        app,
        [
            "prune",
            "torchvision:resnet18",
            "--pattern",
            "channel",
            "--sparsity",
            "0.3",
            "--criterion",
            "taylor",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2 and "needs data: give --data" in result.output
    assert not out.exists()
    args = ["prune", "torchvision:resnet18", "--sparsity", "0.3", "--data", "digits", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "shape [1, 32, 32], the model takes [3, 224, 224]" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
