"""``fashion-resnet``: the second built-in task, a small ResNet for Fashion-MNIST that is not saturated.

Digits is solved (99%+) by almost anything, so it cannot show what a pruning method costs.
Fashion-MNIST (28x28 grey, 10 classes; ``--data fashion-mnist``) leaves room between methods.
The network is digits-resnet's shape with wider stages and a stride-2 stem, so that training it
to over 92% fits in a few minutes on two CPU cores (BENCHMARKS.md).
"""

from __future__ import annotations

from edgeprune.models.digits import DigitsResNet

INPUT_SHAPE = (1, 28, 28)
WIDTHS = (32, 64, 128)


def fashion_resnet() -> DigitsResNet:
    """Factory for the built-in ``fashion-resnet``."""
    return DigitsResNet(WIDTHS, num_classes=10, stem_stride=2)
