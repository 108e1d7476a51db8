"""Latency measurement: warm-up by time, per-iteration samples, robust statistics, interleaving.

The method follows trtexec's defaults where they make sense on a CPU: a time-based warm-up whose
iterations are discarded, then at least ``min_iterations`` *and* at least ``min_duration_s`` of
timed iterations. Every sample is kept so results can be recomputed offline. The coefficient of
variation is flagged above 2.5% (trtexec's threshold for "unstable"), and the p50 carries a
bootstrap 95% confidence interval.

Comparisons are only fair when both sides see the same machine state, so :func:`measure_interleaved`
alternates between runners in short chunks instead of timing one after the other: slow drift of a
shared, noisy machine then lands on every runner alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeprune.device.measure.settings import MeasureConfig
from edgeprune.device.runners.base import Runner

__all__ = ["LatencyStats", "MeasureConfig", "measure_interleaved", "summarize"]

COV_UNSTABLE = 0.025


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-iteration latency samples for one runner at one batch size."""

    batch_size: int
    iterations: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cov: float
    unstable: bool
    p50_ci95_ms: tuple[float, float]
    throughput_per_s: float
    samples_ms: list[float] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, samples included."""
        data = asdict(self)
        data["p50_ci95_ms"] = list(self.p50_ci95_ms)
        return data


def bootstrap_ci(
    samples: np.ndarray,
    stat: Callable[[np.ndarray], float] = np.median,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a statistic (default: the median).

    A fixed seed keeps the same samples giving the same interval, so results are reproducible.
    """
    if samples.size == 0:
        raise ValueError("no samples")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, samples.size, size=(n_resamples, samples.size))
    stats = np.apply_along_axis(stat, 1, samples[idx])
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))


def summarize(samples_ms: list[float] | np.ndarray, batch_size: int) -> LatencyStats:
    """Turn raw per-iteration samples into :class:`LatencyStats`.

    Raises:
        ValueError: if there are no samples.
    """
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no latency samples to summarize")
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    cov = std / mean if mean > 0 else 0.0
    p50 = float(np.percentile(arr, 50))
    return LatencyStats(
        batch_size=batch_size,
        iterations=int(arr.size),
        duration_s=float(arr.sum() / 1000.0),
        p50_ms=p50,
        p90_ms=float(np.percentile(arr, 90)),
        p95_ms=float(np.percentile(arr, 95)),
        p99_ms=float(np.percentile(arr, 99)),
        mean_ms=mean,
        std_ms=std,
        min_ms=float(arr.min()),
        max_ms=float(arr.max()),
        cov=cov,
        unstable=cov > COV_UNSTABLE,
        p50_ci95_ms=bootstrap_ci(arr),
        throughput_per_s=batch_size * 1000.0 / p50 if p50 > 0 else 0.0,
        samples_ms=[float(x) for x in arr],
    )


def _time_calls(runner: Runner, feeds: Mapping[str, np.ndarray], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        runner.infer(feeds)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def warm_up(runner: Runner, feeds: Mapping[str, np.ndarray], seconds: float) -> int:
    """Run untimed iterations for ``seconds`` (at least one); returns how many ran."""
    deadline = time.perf_counter() + seconds
    count = 0
    while True:
        runner.infer(feeds)
        count += 1
        if time.perf_counter() >= deadline:
            return count


def measure_interleaved(
    runners: Mapping[str, Runner],
    feeds: Mapping[str, Mapping[str, np.ndarray]],
    config: MeasureConfig,
    on_progress: Callable[[float], None] | None = None,
) -> dict[str, list[float]]:
    """Time several active runners in alternating chunks until each meets the stopping rule.

    Args:
        runners: label -> active runner.
        feeds: label -> that runner's inputs.
        config: warm-up and stopping rule.
        on_progress: called with the fraction done (0..1) after every round.

    Returns:
        label -> per-iteration latency samples in milliseconds.
    """
    labels = list(runners)
    for label in labels:
        warm_up(runners[label], feeds[label], config.warmup_s)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    spent_s = dict.fromkeys(labels, 0.0)
    round_no = 0
    while True:
        pending = [
            label
            for label in labels
            if spent_s[label] < config.max_duration_s
            and (len(samples[label]) < config.min_iterations or spent_s[label] < config.min_duration_s)
        ]
        if not pending:
            break
        # Reverse the order every round so no runner always follows the same neighbour.
        order = pending if round_no % 2 == 0 else pending[::-1]
        for label in order:
            chunk = _time_calls(runners[label], feeds[label], config.chunk)
            samples[label].extend(chunk)
            spent_s[label] += sum(chunk) / 1000.0
        round_no += 1
        if on_progress is not None:
            done = min(
                min(len(samples[lb]) / config.min_iterations, spent_s[lb] / config.min_duration_s, 1.0) for lb in labels
            )
            on_progress(done)
    return samples


def measure(
    runner: Runner, feeds: Mapping[str, np.ndarray], batch_size: int, config: MeasureConfig | None = None
) -> LatencyStats:
    """Time one active runner alone and summarize it."""
    samples = measure_interleaved({"only": runner}, {"only": feeds}, config or MeasureConfig())
    return summarize(samples["only"], batch_size)
