"""Alignment lint: misaligned channels, 2:4 layers TensorRT will run dense, layers too small to matter."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.analysis.lint import lint_model
from edgeprune.models.digits import INPUT_SHAPE, DigitsResNet


def codes(warnings: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(w["code"], w["layer"]) for w in warnings}


def test_unaligned_channel_widths() -> None:
    warnings = lint_model(DigitsResNet((11, 23, 46)), INPUT_SHAPE)
    found = codes(warnings)
    assert ("align8", "stem.0") in found  # 11 outputs
    assert ("align8", "layer3.conv2") in found
    message = next(w["message"] for w in warnings if w["layer"] == "stem.0")
    assert "11 output" in message and "1 input" not in message  # the image's 1 channel is not linted
    assert ("align8", "fc") in found  # 46 inputs; its 10 outputs (the classes) are not linted
    assert "10 output" not in next(w["message"] for w in warnings if w["layer"] == "fc")
    assert not any(w["code"] == "align8" for w in lint_model(DigitsResNet((16, 32, 64)), INPUT_SHAPE))


def test_int8_wants_multiples_of_32() -> None:
    found = codes(lint_model(DigitsResNet((16, 32, 64)), INPUT_SHAPE, precision="int8"))
    assert ("align32", "layer1.conv1") in found
    assert ("align32", "layer3.conv2") not in found


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(6, 256, 1)
        self.grouped = nn.Conv2d(256, 256, 3, padding=1, groups=32)
        self.wide = nn.Conv2d(256, 256, 3, padding=1)
        self.narrow = nn.Conv2d(256, 64, 1)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.narrow(self.wide(self.grouped(self.first(x))))
        return self.head(x.mean((2, 3)))


def test_2_4_rules() -> None:
    found = codes(lint_model(Mixed(), (6, 16, 16), pattern="2:4"))
    assert ("nm-ineligible", "first") in found
    assert ("nm-grouped", "grouped") in found
    assert ("nm-small", "narrow") in found
    assert not any(code.startswith("nm-") and code != "nm-dense" for code, layer in found if layer == "wide")
    assert ("nm-dense", "wide") in found  # dense weights do not follow 2:4
    assert not any(code.startswith("nm-") for code, _ in codes(lint_model(Mixed(), (6, 16, 16))))


def test_small_layers() -> None:
    found = codes(lint_model(DigitsResNet(), INPUT_SHAPE))
    assert ("small-layer", "fc") in found
    assert ("small-layer", "layer1.conv1") not in found


def test_warning_shape() -> None:
    for warning in lint_model(DigitsResNet((11, 23, 46)), INPUT_SHAPE, pattern="nm"):
        assert set(warning) == {"code", "layer", "message"}
