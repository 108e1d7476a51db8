"""A task: what a model is trained and judged on. Train and validation batches, a loss, a metric.

Every data-aware step of the product (fine-tuning, evaluation, Taylor scores, LASSO calibration,
regularized training, gradual schedules, sensitivity scans, INT8 calibration) takes a
:class:`Task`, so the same code serves the built-in digits, Fashion-MNIST, an image folder, an
``.npz`` or the user's own datasets. Batches always come through a ``DataLoader`` over a
``Dataset`` that reads samples on demand; the file-backed sources map their arrays from disk.

The metric is computed per batch and averaged with batch sizes as weights, which is exact for
top-1 accuracy and for any metric that is a mean over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from edgeprune.errors import UsageError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], float]
Batch = tuple[torch.Tensor, torch.Tensor]


def top1(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of samples whose highest logit is the label."""
    return float((output.argmax(1) == target).float().mean())


@dataclass
class Task:
    """Train and validation data with the loss to train on and the metric to report.

    Attributes:
        name: the data spec it came from (recorded in pruned folders and manifests).
        train: a ``Dataset`` of (input, target) pairs, or a ``DataLoader`` used as it is.
        val: the same for held-out data; ``None`` when there is none (accuracy is then not measured).
        loss: ``loss(output, target)``, cross-entropy by default.
        metric: ``metric(output, target)`` averaged over a batch, top-1 by default.
        metric_name: how the metric is shown (``top-1``).
        preprocessing: what was done to the raw data (normalization, resizing), for the record.
    """

    name: str
    train: Dataset[Any] | DataLoader[Any]
    val: Dataset[Any] | DataLoader[Any] | None = None
    loss: Loss = F.cross_entropy
    metric: Metric = top1
    metric_name: str = "top-1"
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def has_val(self) -> bool:
        return self.val is not None

    def batches(
        self, split: str = "train", batch_size: int = 64, shuffle: bool = False, seed: int = 0
    ) -> Iterable[Batch]:
        """Batches of one split; a loader the user gave is returned unchanged (its own batch size)."""
        source = self._split(split)
        if isinstance(source, DataLoader):
            return source
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(source, batch_size=batch_size, shuffle=shuffle, generator=generator if shuffle else None)

    def sample(self, count: int, split: str = "train", seed: int = 0) -> Batch:
        """``count`` samples of a split, chosen by a seeded permutation and kept in file order.

        Used where a method needs a small in-memory set (LASSO calibration, Taylor scores, INT8
        calibration, reference inputs), so that the choice is the same on every run.
        """
        source = self._split(split)
        dataset = source.dataset if isinstance(source, DataLoader) else source
        size = len(dataset)  # type: ignore[arg-type]
        if size == 0:
            raise UsageError(f"data '{self.name}': the {split} split is empty")
        if count >= size:
            index = np.arange(size)
        else:
            index = np.sort(np.random.default_rng(seed).permutation(size)[:count])
        pairs = [dataset[int(i)] for i in index]
        return torch.stack([_tensor(p[0]) for p in pairs]), torch.stack([_tensor(p[1]) for p in pairs])

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one input, read from the first training sample."""
        x, _ = self.sample(1)
        return tuple(int(d) for d in x.shape[1:])

    def check_shape(self, input_shape: tuple[int, ...]) -> None:
        """Raise a one-line error when the data's samples do not have the model's input shape."""
        shape = self.sample_shape()
        if shape != tuple(input_shape):
            raise UsageError(
                f"data '{self.name}' has samples of shape {list(shape)}, the model takes {list(input_shape)}: "
                "give data that fits the model (or a model that fits the data)"
            )

    def _split(self, split: str) -> Dataset[Any] | DataLoader[Any]:
        if split == "train":
            return self.train
        if split == "val":
            if self.val is None:
                raise UsageError(f"data '{self.name}' has no validation split")
            return self.val
        raise ValueError(f"unknown split {split!r}")


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def tensor_task(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    name: str = "tensors",
    **options: Any,
) -> Task:
    """A task over tensors already in memory (small sets, tests, a user's own arrays)."""
    val = TensorDataset(x_val, y_val) if x_val is not None and y_val is not None else None
    return Task(name, TensorDataset(x, y), val, **options)


def as_task(data: Task | tuple[torch.Tensor, ...]) -> Task:
    """A :class:`Task` as it is, or ``(x, y)`` / ``(x, y, x_val, y_val)`` tensors wrapped as one."""
    if isinstance(data, Task):
        return data
    if isinstance(data, tuple) and len(data) in (2, 4) and all(isinstance(t, torch.Tensor) for t in data):
        if len(data) == 2:
            return tensor_task(data[0], data[1])
        return tensor_task(data[0], data[1], data[2], data[3])
    raise UsageError("data must be a Task or a tuple of tensors (x, y) or (x, y, x_val, y_val)")


def iterate(batches: Iterable[Any]) -> Iterator[Batch]:
    """(input, target) pairs from any loader whose items are pairs (lists from a default collate too)."""
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise UsageError("data batches must be (input, target) pairs")
        yield _tensor(batch[0]), _tensor(batch[1])
