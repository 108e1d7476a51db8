"""Energy per inference, measured by sampling a power sensor and integrating.

The method (the one MLPerf Power and careful Jetson studies use, scaled to what a board offers):

1. A :class:`PowerSampler` thread reads one :class:`PowerSource` at a stated interval: 10 Hz, or
   the sensor's own rate when that is slower (tegrastats prints once per ``--interval``). Every
   reading carries a ``time.monotonic`` timestamp, the midpoint of the read.
2. :func:`integrate_mj` integrates power over time with the trapezoid rule (mW x s = mJ).
3. :func:`energy_report` integrates over exactly the timed window (linear interpolation at its
   edges), divides by the inferences run in it, and subtracts an idle baseline (mean power measured
   with nothing running, :func:`measure_idle`) to give net energy beside gross.
4. Anything that prevents a real number (no sensor, too few samples, a sensor that failed) gives
   ``null`` and the reason, never an estimate.

Which rails count: a source's ``"total"`` key when the board has a module-input rail (VDD_IN,
POM_5V_IN, VIN), otherwise the sum of all rails it reports. Either way the report names them: on
AGX Orin and AGX Xavier no rail sees the whole module, and on every Jetson the carrier board is
outside the on-module sensors.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeprune.device.sensors.source import DEFAULT_INTERVAL_S, TOTAL, PowerSource, Sample
from edgeprune.errors import UsageError

# --------------------------------------------------------------------------------------------
# integration and reports


def integrate_mj(times_s: Sequence[float], power_mw: Sequence[float]) -> float:
    """Energy in mJ under a power curve, by the trapezoid rule (mW x s = mJ).

    Args:
        times_s: sample times, non-decreasing, in seconds.
        power_mw: power at those times, in mW.

    Returns:
        The integral; 0.0 for fewer than two samples (no duration).

    Raises:
        UsageError: the sequences differ in length or the times go backwards.
    """
    if len(times_s) != len(power_mw):
        raise UsageError(f"{len(times_s)} times but {len(power_mw)} power values")
    parts = []
    for i in range(1, len(times_s)):
        dt = times_s[i] - times_s[i - 1]
        if dt < 0:
            raise UsageError(f"sample times go backwards at index {i}: {times_s[i - 1]} then {times_s[i]}")
        parts.append(0.5 * (power_mw[i] + power_mw[i - 1]) * dt)
    return math.fsum(parts)


def no_power(reason: str, **extra: Any) -> dict[str, Any]:
    """The power section of a result when there is no real measurement: ``null`` and the reason."""
    return {
        "energy_mj_per_inference": None,
        "energy_mj_per_inference_net": None,
        "mean_power_mw": None,
        "reason": reason,
        **extra,
    }


def _series(samples: Sequence[Sample], rail: str | None) -> tuple[list[float], list[float], list[str], str]:
    """Pick the power series to integrate; returns times, values, rails counted, selection kind."""
    if rail is not None:
        pts = [(t, float(r[rail])) for t, r in samples if rail in r]
        return [t for t, _ in pts], [v for _, v in pts], [rail], "rail"
    if samples and all(TOTAL in r for _, r in samples):
        return [t for t, _ in samples], [float(r[TOTAL]) for _, r in samples], [], TOTAL
    names = sorted({k for _, r in samples for k in r if k != TOTAL})
    complete = [(t, r) for t, r in samples if all(k in r for k in names)]
    return ([t for t, _ in complete], [math.fsum(float(r[k]) for k in names) for _, r in complete], names, "sum")


def _interp(t: float, t0: float, v0: float, t1: float, v1: float) -> float:
    return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _window_integral(times: list[float], values: list[float], start: float, end: float) -> float:
    """Integral of the piecewise-linear curve through the samples, over [start, end] exactly."""
    pts_t: list[float] = []
    pts_v: list[float] = []
    for i, t in enumerate(times):
        if start <= t <= end:
            if not pts_t and t > start and i > 0:
                pts_t.append(start)
                pts_v.append(_interp(start, times[i - 1], values[i - 1], t, values[i]))
            pts_t.append(t)
            pts_v.append(values[i])
        elif t > end:
            if pts_t and pts_t[-1] < end:
                pts_t.append(end)
                pts_v.append(_interp(end, times[i - 1], values[i - 1], t, values[i]))
            break
    return integrate_mj(pts_t, pts_v)


def _rate_text(rate_hz: float | None) -> str:
    return f"{rate_hz:.3g} Hz" if rate_hz else "an unknown rate"


def energy_report(
    samples: Sequence[Sample],
    window: tuple[float, float] | None = None,
    inferences: int = 1,
    idle_mw: float | None = None,
    *,
    rail: str | None = None,
    total_rails: Sequence[str] = (),
    source: str | None = None,
    scope: str | None = None,
    stated_rate_hz: float | None = None,
) -> dict[str, Any]:
    """Energy per inference over a timed window, gross and net of the idle baseline.

    Args:
        samples: timestamped readings ``(t_s, {rail: mW})`` from a :class:`PowerSampler`.
        window: ``(t0, t1)`` in the same monotonic clock: the steady-state part of the run in
            which ``inferences`` ran. None for the span of the samples.
        inferences: inferences completed in the window (samples, not batches, if that is what
            the caller counts; the report divides by this number as given).
        idle_mw: mean idle power of the same rails at the same settings (:func:`measure_idle`);
            None to report gross energy only.
        rail: integrate this one rail instead of the total.
        total_rails: the rail(s) behind ``"total"``, to name them in ``rails_counted``.
        source: the source's name, recorded as is.
        scope: the source's statement of what its power covers.
        stated_rate_hz: the sampler's stated rate, quoted in the too-few-samples reason.

    Returns:
        A JSON-ready dict. On success: ``mean_power_mw``, ``energy_mj`` and
        ``energy_mj_per_inference`` (gross), ``energy_mj_net`` and ``energy_mj_per_inference_net``
        (None with ``net_reason`` when there is no baseline), ``rails_counted``, ``rails_mean_mw``,
        ``sample_rate_hz`` (achieved in the window), ``n_samples``, ``window_s``. Otherwise
        ``energy_mj_per_inference`` is None and ``reason`` says why.

    Raises:
        UsageError: ``inferences`` is not positive or the window ends before it starts.
    """
    if inferences < 1:
        raise UsageError(f"inferences must be at least 1, got {inferences}")
    info: dict[str, Any] = {"source": source, "scope": scope, "stated_rate_hz": stated_rate_hz}
    ordered = sorted(samples, key=lambda s: s[0])
    if not ordered:
        return no_power("no power samples were collected", n_samples=0, **info)
    times, values, counted, kind = _series(ordered, rail)
    if kind == TOTAL:
        counted = list(total_rails) or [TOTAL]
    if len(times) < 2:
        return no_power(
            f"fewer than two usable power samples at {_rate_text(stated_rate_hz)}; run longer",
            n_samples=len(times),
            **info,
        )
    t0, t1 = window if window is not None else (times[0], times[-1])
    if t1 < t0:
        raise UsageError(f"window ends before it starts: ({t0}, {t1})")
    inside = [t for t in times if t0 <= t <= t1]
    if len(inside) < 2:
        rate = stated_rate_hz or (len(times) - 1) / (times[-1] - times[0] or math.inf)
        return no_power(
            f"window shorter than two samples at {_rate_text(rate)}; run longer", n_samples=len(inside), **info
        )
    tolerance = 1e-9
    if times[0] > t0 + tolerance or times[-1] < t1 - tolerance:
        return no_power(
            f"power samples cover [{times[0]:.3f}, {times[-1]:.3f}] s but the window is "
            f"[{t0:.3f}, {t1:.3f}] s; start the sampler before the timed work and stop it after",
            n_samples=len(inside),
            **info,
        )
    window_s = t1 - t0
    if window_s <= 0:
        return no_power("the window has zero duration", n_samples=len(inside), **info)
    energy_mj = _window_integral(times, values, t0, t1)
    mean_mw = energy_mj / window_s
    rails_mean: dict[str, float] = {}
    for name in sorted({k for _, r in ordered for k in r if k != TOTAL}):
        rt, rv, _, _ = _series(ordered, name)
        covered = bool(rt) and rt[0] <= t0 + tolerance and rt[-1] >= t1 - tolerance
        if covered and len([t for t in rt if t0 <= t <= t1]) >= 2:
            rails_mean[name] = _window_integral(rt, rv, t0, t1) / window_s
    report: dict[str, Any] = {
        **info,
        "rails_counted": counted,
        "rail_selection": {"rail": "one rail", TOTAL: "total input rail", "sum": "sum of all rails"}[kind],
        "method": "trapezoid over timestamped samples, linear interpolation at the window edges",
        "n_samples": len(inside),
        "sample_rate_hz": (len(inside) - 1) / (inside[-1] - inside[0]) if inside[-1] > inside[0] else None,
        "window_s": window_s,
        "inferences": inferences,
        "mean_power_mw": mean_mw,
        "energy_mj": energy_mj,
        "energy_mj_per_inference": energy_mj / inferences,
        "inferences_per_j": inferences / (energy_mj / 1000.0) if energy_mj > 0 else None,
        "rails_mean_mw": rails_mean,
        "idle_power_mw": idle_mw,
        "energy_mj_net": None,
        "energy_mj_per_inference_net": None,
        "net_reason": "no idle baseline was measured" if idle_mw is None else None,
        "reason": None,
    }
    if kind == "sum":
        report["note"] = (
            "no rail measures the whole module input here: the listed rails are summed, and "
            "power outside them is not included"
        )
    if idle_mw is not None:
        net = energy_mj - idle_mw * window_s
        report["energy_mj_net"] = net
        report["energy_mj_per_inference_net"] = net / inferences
        if net < 0:
            report["net_reason"] = (
                "net energy is negative: the idle baseline exceeds the loaded power, so "
                "the baseline was probably taken in another power or clock state"
            )
    return report


# --------------------------------------------------------------------------------------------
# sampling


class PowerSampler:
    """Reads a power source on a background thread at a fixed interval, with timestamps.

    The interval is 0.1 s (10 Hz) unless the source is slower, in which case it is the source's
    own period. :meth:`start` takes the first reading on the calling thread and :meth:`stop` the
    last one after the thread has ended, so any window timed between the two calls is covered at
    both edges. The thread sleeps between readings (``Event.wait``), so its cost is the readings
    themselves: well under 1% of a core for the file and socket reads used here.

    A source error ends sampling and is kept in :attr:`failure`; :meth:`report` then returns
    ``null`` with that reason rather than an energy from partial data.

    Use as a context manager::

        with PowerSampler(source) as sampler:
            t0 = time.monotonic(); run(); t1 = time.monotonic()
        power = sampler.report((t0, t1), inferences=n, idle_mw=idle.mean_power_mw)
    """

    def __init__(self, source: PowerSource, interval_s: float | None = None) -> None:
        """Create a sampler.

        Args:
            source: what to read.
            interval_s: seconds between readings; None for 10 Hz or the source's own rate if slower.

        Raises:
            UsageError: a non-positive interval.
        """
        if interval_s is None:
            rate = source.rate_hz
            interval_s = max(DEFAULT_INTERVAL_S, 1.0 / rate) if rate > 0 else DEFAULT_INTERVAL_S
        if interval_s <= 0:
            raise UsageError(f"sampling interval must be positive, got {interval_s} s")
        self.source = source
        self.interval_s = float(interval_s)
        self.failure: str | None = None
        self.empty_reads = 0
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stated_rate_hz(self) -> float:
        """The rate this sampler aims for."""
        return 1.0 / self.interval_s

    @property
    def samples(self) -> list[Sample]:
        """A copy of the readings so far, oldest first."""
        with self._lock:
            return list(self._samples)

    def _take(self) -> bool:
        """One reading; False when the source failed (sampling should end)."""
        before = time.monotonic()
        try:
            reading = self.source.read_mw()
        except Exception as exc:  # any sensor failure ends sampling with its reason, never a crash
            self.failure = f"{self.source.name}: {exc}"
            return False
        after = time.monotonic()
        if not reading:
            self.empty_reads += 1
            return True
        with self._lock:
            self._samples.append((0.5 * (before + after), dict(reading)))
        return True

    def _run(self, first_t: float) -> None:
        next_t = first_t + self.interval_s
        while not self._stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if not self._take():
                break
            next_t += self.interval_s
            now = time.monotonic()
            if next_t <= now:  # a slow read: skip the missed slots instead of reading in a burst
                next_t = now + self.interval_s

    def start(self) -> PowerSampler:
        """Take a first reading now and start the sampling thread.

        Raises:
            UsageError: the sampler is already running.
        """
        if self._thread is not None:
            raise UsageError("this power sampler is already running; stop it first")
        self._stop.clear()
        first_t = time.monotonic()
        if not self._take():
            return self
        self._thread = threading.Thread(
            target=self._run, args=(first_t,), name=f"power-{self.source.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take a last reading, so a window ending now is covered."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is None:
            return
        thread.join()
        if self.failure is None:
            self._take()

    def __enter__(self) -> PowerSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def report(
        self,
        window: tuple[float, float] | None = None,
        inferences: int = 1,
        idle_mw: float | None = None,
        *,
        rail: str | None = None,
    ) -> dict[str, Any]:
        """:func:`energy_report` over this sampler's readings, with the source's facts filled in."""
        info: dict[str, Any] = {
            "source": self.source.name,
            "scope": self.source.scope,
            "stated_rate_hz": self.stated_rate_hz,
        }
        if self.failure is not None:
            return no_power(self.failure, n_samples=len(self._samples), **info)
        samples = self.samples
        if not samples and self.empty_reads:
            return no_power(
                f"{self.source.name} returned no power readings ({self.empty_reads} empty reads)", n_samples=0, **info
            )
        total_rails: list[str] = []
        try:
            total_rails = self.source.total_rails()
        except Exception:  # the rail names are a label only; the energy does not depend on them
            total_rails = []
        return energy_report(samples, window, inferences, idle_mw, rail=rail, total_rails=total_rails, **info)


@dataclass(frozen=True)
class IdleBaseline:
    """Mean power with nothing running, to subtract from loaded power.

    Attributes:
        mean_power_mw: the mean over the measured span, None when it could not be measured.
        duration_s: how long was sampled.
        n_samples: readings taken.
        rails_counted: the rails the mean covers (must match the loaded measurement's).
        reason: why ``mean_power_mw`` is None.
    """

    mean_power_mw: float | None
    duration_s: float
    n_samples: int
    rails_counted: list[str] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "mean_power_mw": self.mean_power_mw,
            "duration_s": self.duration_s,
            "n_samples": self.n_samples,
            "rails_counted": list(self.rails_counted),
            "reason": self.reason,
        }


def measure_idle(source: PowerSource, duration_s: float = 30.0, interval_s: float | None = None) -> IdleBaseline:
    """Sample ``source`` for ``duration_s`` with nothing else running and return its mean power.

    Take it at the same nvpmodel mode and clock settings as the measurement it will be
    subtracted from (30-60 s on a Jetson; shorter baselines carry more noise).
    """
    sampler = PowerSampler(source, interval_s)
    with sampler:
        t0 = time.monotonic()
        time.sleep(duration_s)
        t1 = time.monotonic()
    report = sampler.report((t0, t1))
    return IdleBaseline(
        mean_power_mw=report.get("mean_power_mw"),
        duration_s=t1 - t0,
        n_samples=int(report.get("n_samples") or 0),
        rails_counted=list(report.get("rails_counted") or []),
        reason=report.get("reason"),
    )
