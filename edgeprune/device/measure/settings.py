"""The measurement settings, defined once: the CLI, the agent's HTTP API and the client all use this type.

numpy-free, so the agent validates a job without loading the measuring code. Every limit is
checked when a value is built, with a message a user can act on; the agent's API turns the same
check into a 422.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from edgeprune.errors import UsageError

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
        for name, (low, high, inclusive) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{name} must be a number, got {value!r}")
            if isinstance(low, int) and not isinstance(value, int):
                raise UsageError(f"{name} must be a whole number, got {value!r}")
            above = value >= low if inclusive else value > low
            if not (above and value <= high):
                lowest = f"at least {low}" if inclusive else f"more than {low}"
                raise UsageError(f"{name} must be {lowest} and at most {high:g}, got {value}")

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
