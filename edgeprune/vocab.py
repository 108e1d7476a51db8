"""The product's vocabulary, once: pattern, precision, runner, criterion, selector, regularizer, ...

Each is a ``str`` enum, so a member compares equal to its name (``Pattern.NM == "nm"``), prints
as it (``f"{Pattern.NM}"`` is ``nm``) and serializes as it; the tuples beside them are what the
library validates against and what ``--help`` lists. Import-light (no numpy, no torch): the
device side reads it too.
"""

from __future__ import annotations

from enum import Enum


class Vocab(str, Enum):
    """A word of the vocabulary: a ``str`` whose ``str()`` and ``format()`` are its value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The words, in declaration order."""
        return tuple(str(member.value) for member in cls)

    @classmethod
    def listing(cls) -> str:
        """The words as ``--help`` shows them: ``a, b or c``."""
        words = cls.values()
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class Pattern(Vocab):
    """What the zeros look like: removed channels, or a mask of one of five shapes."""

    CHANNEL = "channel"
    UNSTRUCTURED = "unstructured"
    NM = "nm"
    VECTOR = "vector"
    KERNEL = "kernel"
    BLOCK = "block"
    BANK = "bank"


class Precision(Vocab):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Runner(Vocab):
    """Inference runtimes a bundle can be measured on."""

    ORT = "ort"
    ORT_CUDA = "ort-cuda"
    TRT = "trt"


class Criterion(Vocab):
    """Built-in channel importance criteria (more can be registered in :mod:`edgeprune.prune.criteria`)."""

    L1 = "l1"
    L2 = "l2"
    BN_SCALE = "bn-scale"
    FPGM = "fpgm"
    TAYLOR = "taylor"
    RANDOM = "random"


class Selector(Vocab):
    """Data-aware channel selection followed by a least-squares refit (He et al. 2017)."""

    LASSO = "lasso"
    OMP = "omp"
    L1_2 = "l1/2"
    MAGNITUDE = "magnitude"


class Regularizer(Vocab):
    L1 = "l1"
    L2 = "l2"
    L1_2 = "l1/2"
    GROUP_LASSO = "group-lasso"
    BN_L1 = "bn-l1"


class Schedule(Vocab):
    ONESHOT = "oneshot"
    GRADUAL = "gradual"


class CalibMethod(Vocab):
    """How INT8 activation ranges are chosen from calibration data."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


PATTERNS = Pattern.values()
MASK_PATTERNS = tuple(p for p in PATTERNS if p != Pattern.CHANNEL)
"""Patterns that keep every weight's place and zero some through a mask."""
NM_NAMES = (Pattern.NM.value, "2:4", "n:m")
"""Names under which a record may carry the N:M (2:4) pattern."""
PRECISIONS = Precision.values()
RUNNERS = Runner.values()
CRITERIA = Criterion.values()
DATA_CRITERIA = (Criterion.TAYLOR.value,)
"""Criteria that score channels from gradients on data."""
SELECTORS = Selector.values()
REGULARIZERS = Regularizer.values()
SCHEDULES = Schedule.values()
CALIB_METHODS = CalibMethod.values()
