"""Shared pieces of the packager tests: a tiny CNN that trains in about a second, and its data.

``tiny_net`` is also a ``package.module:factory`` spec for the CLI (``tests.export:tiny_net``): it
declares ``input_shape`` as such factories must. The task is separable on purpose (which quadrant
of an 8x8 image holds a bright blob), so the trained net's logits are well apart and INT8 agreement
with FP32 is a real check rather than a coin toss between tied classes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 8, 8)
CLASSES = 4


class TinyNet(nn.Module):
    """Conv(1->8) BN ReLU, Conv(8->8) ReLU, global pool, Linear(8->4): 2:4-able where TensorRT allows."""

    input_shape = INPUT_SHAPE

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_net() -> TinyNet:
    """Factory with fixed initial weights."""
    torch.manual_seed(0)
    return TinyNet()


def tiny_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy 8x8 images with a 3x3 blob in quadrant ``label``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = 0.3 * rng.standard_normal((n, *INPUT_SHAPE)).astype(np.float32)
    for i, label in enumerate(labels):
        top, left = 4 * (label // 2), 4 * (label % 2)
        x[i, 0, top : top + 3, left : left + 3] += 2.0
    return x, labels.astype(np.int64)


@lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    model = tiny_net()
    x, y = tiny_data(512, seed=1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: one thread beats contended ones on a shared CPU
    try:
        for step in range(60):
            idx = slice((step * 64) % 512, (step * 64) % 512 + 64)
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_tiny() -> TinyNet:
    """A TinyNet trained to (near) 100% on the blob task; cached per test session."""
    model = tiny_net()
    model.load_state_dict(_trained_state())
    return model.eval()
