"""A user's own model and data, as ``package.module:factory`` specs for the CLI tests.

``small_cnn`` is MobileNet-like (a depthwise-separable block) and declares no ``input_shape``, as
most users' models do not; the CLI gets ``--input-shape 1,8,8``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """conv-bn-relu, depthwise 3x3 + pointwise 1x1 (bn, relu), pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn_dw = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 32, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu(self.bn_dw(self.dw(x)))
        x = F.relu(self.bn_pw(self.pw(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN()


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy 8x8 images with a bright 3x3 blob in the quadrant given by the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    x = 0.3 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    for i, label in enumerate(labels):
        top, left = 4 * (label // 2), 4 * (label % 2)
        x[i, 0, top : top + 3, left : left + 3] += 2.0
    return x, labels.astype(np.int64)


def write_blobs(path: Path, train: int = 256, val: int = 128) -> Path:
    x, y = blobs(train, 1)
    xv, yv = blobs(val, 2)
    np.savez(path, x_train=x, y_train=y, x_val=xv, y_val=yv)
    return path
