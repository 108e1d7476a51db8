"""The embedded default: a small ResNet that trains on the digits set (:mod:`edgeprune.data.digits`) in a minute.

``digits-resnet`` is deliberately small but structurally honest: BatchNorm after every conv,
residual adds (which couple channels across layers) and two downsampling shortcuts (1x1 conv +
BN), so channel pruning must respect coupled groups to produce a valid model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data.digits import INPUT_SHAPE, NUM_CLASSES, DigitsData, load_digits_data

__all__ = ["INPUT_SHAPE", "NUM_CLASSES", "DigitsData", "DigitsResNet", "digits_resnet", "load_digits_data"]


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Stem, three stages (16, 32, 64 channels; two downsamplings), global pool, linear head.

    ``stem_stride`` 2 halves the resolution in the stem, for larger inputs (``fashion-resnet``).
    """

    def __init__(
        self, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = NUM_CLASSES, stem_stride: int = 1
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.layer1 = BasicBlock(w1, w1)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def digits_resnet() -> DigitsResNet:
    """Factory for the built-in ``digits-resnet``."""
    return DigitsResNet()
