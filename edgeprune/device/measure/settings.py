"""The measurement settings, defined once: the CLI, the agent's HTTP API and the client all use these types.

:class:`MeasureConfig` is the timing rule; :class:`BenchOptions` the rest of a bench run (runner,
threads, power sampling). numpy-free, so the agent validates a job without loading the measuring
code. Every limit is checked when a value is built, with a message that names the field and its
limits; the agent's API turns the same check into a 422.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from edgeprune.errors import UsageError
from edgeprune.vocab import RUNNERS

# (lowest, highest, lowest allowed itself) per field: what a user can ask for and still get a result.
LIMITS: dict[str, tuple[float, float, bool]] = {
    "warmup_s": (0.0, 600.0, True),
    "min_iterations": (1, 10_000_000, True),
    "min_duration_s": (0.0, 3600.0, False),
    "chunk": (1, 100_000, True),
    "max_duration_s": (0.0, 3600.0, False),
}


@dataclass(frozen=True)
class MeasureConfig:
    """How long and how often to time.

    Attributes:
        warmup_s: seconds of untimed iterations before timing (trtexec uses 0.2 s); 0 to 600.
        min_iterations: at least this many timed iterations per runner and batch size; 1 to 10M.
        min_duration_s: and at least this many seconds of timed work per runner; above 0, to 3600.
        chunk: iterations per turn when interleaving runners; 1 to 100,000.
        max_duration_s: a hard cap per runner so a very slow model cannot hang a run; above 0, to 3600.

    Raises:
        UsageError: a value outside its limits (the message names the field and the limits).
    """

    warmup_s: float = 0.2
    min_iterations: int = 50
    min_duration_s: float = 1.0
    chunk: int = 10
    max_duration_s: float = 60.0

    def __post_init__(self) -> None:
        _check_limits(self, LIMITS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasureConfig:
        """Build from a mapping, refusing keys that are not settings."""
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise UsageError(f"unknown measurement settings {unknown}; known: {list(FIELDS)}")
        return cls(**data)


FIELDS = tuple(f.name for f in fields(MeasureConfig))

BENCH_LIMITS: dict[str, tuple[float, float, bool]] = {
    "intra_op_threads": (0, 1024, True),
    "idle_s": (0.0, 600.0, True),
    "energy_s": (0.0, 600.0, False),
}


@dataclass(frozen=True)
class BenchOptions:
    """How a bench run measures, beyond the timing rule: the same type locally and in an agent's job.

    Attributes:
        runner: one of :data:`edgeprune.vocab.RUNNERS` (``ort``, ``ort-cuda``, ``trt``).
        intra_op_threads: ONNX Runtime threads; 0 is one per physical core; 0 to 1024.
        power: sample power when the machine has a sensor.
        idle_s: seconds of idle sampling for the baseline subtracted from loaded power; 0 to 600.
        energy_s: seconds each bundle runs alone per batch size while power is sampled; above 0, to 600.

    Raises:
        UsageError: a value outside its limits, or an unknown runner.
    """

    runner: str = "ort"
    intra_op_threads: int = 0
    power: bool = True
    idle_s: float = 10.0
    energy_s: float = 5.0

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise UsageError(f"unknown runner '{self.runner}': choose one of {', '.join(RUNNERS)}")
        if not isinstance(self.power, bool):
            raise UsageError(f"power must be true or false, got {self.power!r}")
        _check_limits(self, BENCH_LIMITS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchOptions:
        """Build from a mapping, refusing keys that are not options."""
        unknown = sorted(set(data) - set(BENCH_FIELDS))
        if unknown:
            raise UsageError(f"unknown bench options {unknown}; known: {list(BENCH_FIELDS)}")
        return cls(**data)


BENCH_FIELDS = tuple(f.name for f in fields(BenchOptions))


def _check_limits(settings: object, limits: dict[str, tuple[float, float, bool]]) -> None:
    """Refuse a field outside its (lowest, highest, lowest allowed itself) limits, naming both."""
    for name, (low, high, inclusive) in limits.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{name} must be a number, got {value!r}")
        if isinstance(low, int) and not isinstance(value, int):
            raise UsageError(f"{name} must be a whole number, got {value!r}")
        above = value >= low if inclusive else value > low
        if not (above and value <= high):
            lowest = f"at least {low}" if inclusive else f"more than {low}"
            raise UsageError(f"{name} must be {lowest} and at most {high:g}, got {value}")
