"""Shared fixtures: the trained digits baseline is built once per session (about 30 s)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Trained:
    model: object
    data: object
    accuracy: float
    seconds: float


@pytest.fixture(scope="session")
def digits_data():
    from edgeprune.models.digits import load_digits_data

    return load_digits_data()


@pytest.fixture(scope="session")
def trained_digits(digits_data) -> Trained:
    import time

    import torch

    from edgeprune.models.digits import digits_resnet
    from edgeprune.train import TrainConfig, evaluate, train

    torch.manual_seed(0)
    model = digits_resnet()
    start = time.perf_counter()
    train(model, (digits_data.x_train, digits_data.y_train), TrainConfig())
    seconds = time.perf_counter() - start
    return Trained(model.eval(), digits_data, evaluate(model, (digits_data.x_test, digits_data.y_test)), seconds)
