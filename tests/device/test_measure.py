"""Latency statistics and the interleaved measurement loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.device.measure.timing import MeasureConfig, bootstrap_ci, measure_interleaved, summarize
from edgeprune.device.runners.base import Runner, TensorSpec


def test_summary_of_known_samples() -> None:
    stats = summarize(list(range(1, 101)), batch_size=4)
    assert stats.iterations == 100
    assert stats.p50_ms == 50.5
    assert abs(stats.p90_ms - 90.1) < 1e-9
    assert stats.min_ms == 1 and stats.max_ms == 100
    assert stats.unstable  # CoV of 1..100 is far above 2.5 %
    assert abs(stats.throughput_per_s - 4 * 1000 / 50.5) < 1e-9
    lo, hi = stats.p50_ci95_ms
    assert lo <= 50.5 <= hi


def test_constant_samples_are_stable() -> None:
    stats = summarize([2.0] * 30, batch_size=1)
    assert stats.cov == 0.0 and not stats.unstable
    assert stats.p50_ci95_ms == (2.0, 2.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=5, max_size=200))
def test_bootstrap_interval_brackets_the_median(samples: list[float]) -> None:
    arr = np.asarray(samples)
    lo, hi = bootstrap_ci(arr)
    assert arr.min() <= lo <= hi <= arr.max()


class Sleeper(Runner):
    """A real runner whose inference is a busy wait of known length."""

    def __init__(self, name: str, ms: float, log: list[str]) -> None:
        super().__init__(name)
        self.ms, self.log = ms, log

    def _activate_impl(self) -> None:
        pass

    def _deactivate_impl(self) -> None:
        pass

    def _input_specs_impl(self) -> list[TensorSpec]:
        return [TensorSpec("x", (None,), "float32")]

    def _infer_impl(self, feeds):  # type: ignore[no-untyped-def]
        import time

        self.log.append(self.name)
        end = time.perf_counter() + self.ms / 1000
        while time.perf_counter() < end:
            pass
        return {"y": feeds["x"]}


def test_interleaving_alternates_and_meets_the_stopping_rule() -> None:
    log: list[str] = []
    runners = {"a": Sleeper("a", 0.2, log), "b": Sleeper("b", 0.6, log)}
    for r in runners.values():
        r.activate()
    feeds = {k: {"x": np.zeros(1, np.float32)} for k in runners}
    config = MeasureConfig(warmup_s=0.01, min_iterations=20, min_duration_s=0.02, chunk=5)
    samples = measure_interleaved(runners, feeds, config)
    assert len(samples["a"]) >= 20 and len(samples["b"]) >= 20
    assert sum(samples["b"]) / 1000 >= 0.02
    # Medians reflect the busy-wait lengths: b is about 3x a.
    ratio = np.median(samples["b"]) / np.median(samples["a"])
    assert 2.0 < ratio < 4.5
    timed = [n for n in log if n in "ab"]
    switches = sum(1 for x, y in zip(timed, timed[1:]) if x != y)
    assert switches >= 3  # not one block after the other


def test_inputs_are_checked_for_every_new_signature() -> None:
    import pytest

    from edgeprune.errors import RunnerError

    runner = Sleeper("s", 0.0, [])
    runner.activate()
    assert runner.infer({"x": np.zeros(3, np.float32)})["y"].shape == (3,)
    # A signature seen before skips the check; a new one is checked again, every time.
    for _ in range(2):
        with pytest.raises(RunnerError, match="is float64, the model expects float32"):
            runner.infer({"x": np.zeros(3, np.float64)})
        with pytest.raises(RunnerError, match="rank 2"):
            runner.infer({"x": np.zeros((3, 1), np.float32)})
    runner.deactivate()
    with pytest.raises(RunnerError, match="activate"):
        runner.infer({"x": np.zeros(3, np.float32)})
