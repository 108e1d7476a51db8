"""The embedded default: scikit-learn's digits set and a small ResNet that trains on it in a minute.

The digits set (1,797 8x8 grey images) ships inside scikit-learn, so the demo needs no download.
Images are upsampled to 32x32 so that the network has real spatial work to prune, and split once,
stratified, with a fixed seed, so every run and every test sees the same train and test images.

``digits-resnet`` is deliberately small but structurally honest: BatchNorm after every conv,
residual adds (which couple channels across layers) and two downsampling shortcuts (1x1 conv +
BN), so channel pruning must respect coupled groups to produce a valid model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 32
NUM_CLASSES = 10
INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsData:
    """Train and test tensors, normalized; labels as int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_data() -> DigitsData:
    """Load, upsample, normalize and split the digits set (deterministic)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    # Normalize with training statistics only, so the test set stays unseen.
    mean = images[idx_train].mean()
    std = images[idx_train].std()
    images = (images - mean) / std
    return DigitsData(images[idx_train], labels[idx_train], images[idx_test], labels[idx_test])


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
    """Stem, three stages (16, 32, 64 channels; two downsamplings), global pool, linear head."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
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
