"""The built-in digits set: scikit-learn's 1,797 8x8 grey images, upsampled to 32x32.

The set ships inside scikit-learn, so the demo needs no download. Images are upsampled so that
the network has real spatial work to prune, normalized with training statistics only, and split
once, stratified, with a fixed seed, so every run and every test sees the same train and test
images. 1,797 small images are kept in memory: this set is the one exception, being smaller than
one batch of most others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.data.task import Task, tensor_task

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


def digits_task() -> Task:
    """The digits set as a task (cross-entropy, top-1; validation is the held-out test split)."""
    data = load_digits_data()
    return tensor_task(
        data.x_train,
        data.y_train,
        data.x_test,
        data.y_test,
        name="digits",
        preprocessing={"note": "8x8 digits upsampled to 32x32, normalized with training mean and std"},
    )
