"""Gradual channel pruning: steps compose into one replayable plan; the withdraw rule holds."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from edgeprune.cli.main import app
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet
from edgeprune.models.spec import load_model
from edgeprune.prune.api import PruneRequest, prune_model
from edgeprune.prune.plan import compose_structural
from edgeprune.prune.structural import ChannelConfig, prune_channels
from edgeprune.prune.surgery import pruned_copy

runner = CliRunner()


def _randomized() -> torch.nn.Module:
    torch.manual_seed(0)
    model = digits_resnet().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so slicing is visible
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.trains
def test_two_steps_compose_into_one_plan_with_the_same_model() -> None:
    model = _randomized()
    first = prune_channels(model, INPUT_SHAPE, ChannelConfig(sparsity=0.25))
    second = prune_channels(first.model, INPUT_SHAPE, ChannelConfig(sparsity=0.3, criterion="l2"))
    composed = pruned_copy(model, compose_structural(first.plan, second.plan))
    x = torch.randn(4, *INPUT_SHAPE)
    torch.testing.assert_close(composed(x), second.model(x), atol=1e-5, rtol=1e-5)
    widths = [m.out_channels for m in composed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [m.out_channels for m in second.model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.trains
def test_gradual_channels_from_the_command_line(tmp_path) -> None:
    out = tmp_path / "g"
    result = runner.invoke(
        app,
        [
            "prune",
            "digits-resnet",
            "--pattern",
            "channel",
            "--sparsity",
            "0.5",
            "--schedule",
            "gradual",
            "--steps",
            "3",
            "--step-epochs",
            "0",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "step 3: sparsity 50.0%" in result.output
    meta = json.loads((out / "model.json").read_text())
    schedule = meta["summary"]["schedule"]
    assert meta["accuracy"] == schedule["history"][-1]["accuracy"] is not None
    assert [round(s, 3) for s in schedule["steps"]] == [0.352, 0.481, 0.5]
    assert 0.45 <= schedule["final_channel_sparsity"] <= 0.55
    loaded = load_model(str(out)).model  # the composed plan replays on a fresh model
    assert loaded(torch.randn(2, *INPUT_SHAPE)).shape == (2, 10)
    assert loaded.layer3.conv1.out_channels < 64


@pytest.mark.trains
def test_a_step_that_costs_too_much_accuracy_is_withdrawn(trained_digits) -> None:
    model, d = trained_digits.model, trained_digits.data
    data = (d.x_train[:64], d.y_train[:64], d.x_test, d.y_test)
    # No fine-tuning: cutting 35% of every group's channels costs far more than one point.
    request = PruneRequest("channel", sparsity=0.5, schedule="gradual", steps=2, step_epochs=0, tolerance=0.01)
    pruned, plan, summary = prune_model(model, INPUT_SHAPE, request, data)
    schedule = summary["schedule"]
    assert schedule["reference_accuracy"] >= 0.97
    assert schedule["withdrawn"] and "step 1 withdrawn" in schedule["withdrawn"]
    assert plan.structural == [] and not schedule["history"][0]["accepted"]
    x = d.x_test[:8]
    torch.testing.assert_close(pruned(x), model(x))  # the unpruned model is what comes back
