"""Energy integration, reports, the sampling thread, idle baselines, NVML and source detection."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeprune.device.measure.energy import PowerSampler, energy_report, integrate_mj, measure_idle, no_power
from edgeprune.device.sensors.nvml import NvmlSource
from edgeprune.device.sensors.rapl import RaplSource
from edgeprune.device.sensors.source import DEFAULT_INTERVAL_S, PowerSource, detect_sources
from edgeprune.device.sensors.tegrastats import TegrastatsSource
from edgeprune.errors import MissingDependencyError, SensorError, SensorUnavailable, UsageError


class ConstantSource:
    """A power source that reports fixed rails and counts how often it is read."""

    name = "constant"
    scope = "test rails"

    def __init__(
        self,
        rails_mw: dict[str, float],
        rate_hz: float = 1000.0,
        total: str | None = None,
        fail_after: int | None = None,
    ) -> None:
        self.rails_mw = rails_mw
        self.rate_hz = rate_hz
        self.total = total
        self.fail_after = fail_after
        self.reads = 0

    def rails(self) -> list[str]:
        return list(self.rails_mw)

    def total_rails(self) -> list[str]:
        return [self.total] if self.total else []

    def read_mw(self) -> dict[str, float]:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise SensorError("rail monitor went away")
        power = dict(self.rails_mw)
        if self.total:
            power["total"] = power[self.total]
        return power

    def close(self) -> None:
        pass


class EmptySource(ConstantSource):
    def read_mw(self) -> dict[str, float]:
        return {}


def constant_samples(power_mw: float, t_end: float, step: float = 0.1, rail: str = "VDD_IN") -> list[Any]:
    n = round(t_end / step)
    return [(i * step, {rail: power_mw, "total": power_mw}) for i in range(n + 1)]


# -- integration ----------------------------------------------------------------------------------


def test_integrate_known_curves() -> None:
    assert integrate_mj([0.0, 2.0], [1000.0, 1000.0]) == 2000.0
    assert integrate_mj([0.0, 0.5, 1.0], [0.0, 500.0, 1000.0]) == 500.0  # linear ramp
    assert integrate_mj([0.0, 0.1, 1.0], [100.0, 100.0, 100.0]) == pytest.approx(100.0)
    assert integrate_mj([1.0], [5.0]) == 0.0 and integrate_mj([], []) == 0.0
    with pytest.raises(UsageError):
        integrate_mj([0.0, 1.0], [1.0])
    with pytest.raises(UsageError, match="backwards"):
        integrate_mj([0.0, 2.0, 1.0], [1.0, 1.0, 1.0])


sorted_times = st.lists(
    st.floats(min_value=0.0, max_value=1e4, allow_nan=False), min_size=2, max_size=50, unique=True
).map(sorted)


@given(sorted_times, st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_constant_power_integrates_to_power_times_duration(times: list[float], power_mw: float) -> None:
    expected = power_mw * (times[-1] - times[0])
    assert integrate_mj(times, [power_mw] * len(times)) == pytest.approx(expected, rel=1e-9, abs=1e-6)


@given(sorted_times, st.floats(min_value=-100.0, max_value=100.0), st.floats(min_value=0.0, max_value=1e4))
def test_linear_power_is_integrated_exactly(times: list[float], slope: float, offset: float) -> None:
    power = [offset + slope * t for t in times]
    t0, t1 = times[0], times[-1]
    expected = offset * (t1 - t0) + slope * (t1**2 - t0**2) / 2
    assert integrate_mj(times, power) == pytest.approx(expected, rel=1e-7, abs=1e-3)


@given(sorted_times.filter(lambda t: len(t) >= 3), st.data())
def test_integral_is_additive(times: list[float], data: st.DataObject) -> None:
    power = data.draw(st.lists(st.floats(0, 1e5), min_size=len(times), max_size=len(times)))
    k = data.draw(st.integers(1, len(times) - 2))
    whole = integrate_mj(times, power)
    parts = integrate_mj(times[: k + 1], power[: k + 1]) + integrate_mj(times[k:], power[k:])
    assert whole == pytest.approx(parts, rel=1e-9, abs=1e-6)


# -- reports --------------------------------------------------------------------------------------


def test_report_gross_and_net() -> None:
    samples = constant_samples(2000.0, 2.0)
    report = energy_report(
        samples, (0.5, 1.5), inferences=100, idle_mw=500.0, total_rails=["VDD_IN"], source="test", stated_rate_hz=10.0
    )
    assert report["reason"] is None
    assert report["rails_counted"] == ["VDD_IN"]
    assert report["window_s"] == pytest.approx(1.0)
    assert report["mean_power_mw"] == pytest.approx(2000.0)
    assert report["energy_mj"] == pytest.approx(2000.0)
    assert report["energy_mj_per_inference"] == pytest.approx(20.0)
    assert report["energy_mj_net"] == pytest.approx(1500.0)
    assert report["energy_mj_per_inference_net"] == pytest.approx(15.0)
    assert report["inferences_per_j"] == pytest.approx(50.0)
    assert report["n_samples"] == 11 and report["sample_rate_hz"] == pytest.approx(10.0)
    assert report["rails_mean_mw"] == {"VDD_IN": pytest.approx(2000.0)}
    assert report["net_reason"] is None


def test_window_edges_are_interpolated() -> None:
    samples = [(i / 10, {"total": 1000.0 * i / 10}) for i in range(11)]  # P = 1000 t
    report = energy_report(samples, (0.05, 0.95), inferences=1)
    assert report["energy_mj"] == pytest.approx(500.0 * (0.95**2 - 0.05**2))
    whole = energy_report(samples)
    assert whole["energy_mj"] == pytest.approx(500.0) and whole["window_s"] == pytest.approx(1.0)
    assert whole["net_reason"] == "no idle baseline was measured" and whole["energy_mj_net"] is None


def test_rails_are_summed_when_there_is_no_total() -> None:
    rails = {"VDD_GPU_SOC": 2000.0, "VDD_CPU_CV": 800.0, "VIN_SYS_5V0": 3000.0}
    samples = [(t, rails) for t in (0, 0.5, 1.0)]
    report = energy_report(samples)
    assert report["rails_counted"] == ["VDD_CPU_CV", "VDD_GPU_SOC", "VIN_SYS_5V0"]
    assert report["rail_selection"] == "sum of all rails"
    assert report["mean_power_mw"] == pytest.approx(5800.0)
    assert "not included" in report["note"]
    one = energy_report(samples, rail="VDD_GPU_SOC")
    assert one["rails_counted"] == ["VDD_GPU_SOC"] and one["mean_power_mw"] == pytest.approx(2000.0)


def test_null_with_reason_instead_of_a_guess() -> None:
    samples = constant_samples(1000.0, 1.0)
    short = energy_report(samples, (0.42, 0.49), inferences=3, stated_rate_hz=10.0)
    assert short["energy_mj_per_inference"] is None and short["mean_power_mw"] is None
    assert short["reason"] == "window shorter than two samples at 10 Hz; run longer"
    uncovered = energy_report(samples, (0.5, 3.0))
    assert uncovered["energy_mj_per_inference"] is None and "start the sampler before" in uncovered["reason"]
    assert energy_report([])["reason"] == "no power samples were collected"
    single = energy_report(samples[:1], stated_rate_hz=10.0)
    assert single["energy_mj_per_inference"] is None and "run longer" in single["reason"]
    assert no_power("no power sensor on this machine") == {
        "energy_mj_per_inference": None,
        "energy_mj_per_inference_net": None,
        "mean_power_mw": None,
        "reason": "no power sensor on this machine",
    }
    with pytest.raises(UsageError):
        energy_report(samples, inferences=0)
    with pytest.raises(UsageError):
        energy_report(samples, (0.9, 0.1))
    doubled = [(0.5, {"total": 1.0}), (0.5, {"total": 2.0}), (1.0, {"total": 1.0})]
    assert energy_report(doubled, (0.5, 0.5))["reason"] == "the window has zero duration"


def test_negative_net_energy_is_flagged() -> None:
    report = energy_report(constant_samples(1000.0, 1.0), idle_mw=1500.0)
    assert report["energy_mj_net"] == pytest.approx(-500.0)
    assert "another power or clock state" in report["net_reason"]


# -- the sampler ----------------------------------------------------------------------------------


def test_sampler_rate_timestamps_and_cpu_cost() -> None:
    source = ConstantSource({"VDD_IN": 3000.0}, total="VDD_IN")
    sampler = PowerSampler(source)
    assert sampler.interval_s == DEFAULT_INTERVAL_S and sampler.stated_rate_hz == 10.0
    cpu0 = time.process_time()
    with sampler:
        t0 = time.monotonic()
        time.sleep(1.0)
        t1 = time.monotonic()
    cpu_s = time.process_time() - cpu0
    samples = sampler.samples
    times = [t for t, _ in samples]
    assert times == sorted(times)
    assert times[0] <= t0 and times[-1] >= t1
    assert 8 <= len(samples) <= 15, len(samples)
    inner = times[1:-1]  # the first and last readings come from start() and stop(), off the grid
    gaps = [b - a for a, b in zip(inner, inner[1:], strict=False)]
    assert statistics.median(gaps) == pytest.approx(0.1, abs=0.03)
    assert cpu_s < 0.05, f"sampler used {cpu_s:.3f} s of CPU in 1 s"
    report = sampler.report((t0, t1), inferences=50, idle_mw=1000.0)
    assert report["source"] == "constant" and report["stated_rate_hz"] == 10.0
    assert report["rails_counted"] == ["VDD_IN"]
    assert report["energy_mj"] == pytest.approx(3000.0 * (t1 - t0))
    assert report["energy_mj_per_inference_net"] == pytest.approx(2000.0 * (t1 - t0) / 50)


def test_sampler_follows_a_slower_sensor_rate() -> None:
    assert PowerSampler(ConstantSource({"a": 1.0}, rate_hz=2.0)).interval_s == 0.5
    assert PowerSampler(ConstantSource({"a": 1.0}), interval_s=0.02).interval_s == 0.02
    with pytest.raises(UsageError):
        PowerSampler(ConstantSource({"a": 1.0}), interval_s=0)


def test_sampler_records_a_failing_sensor_without_crashing() -> None:
    source = ConstantSource({"total": 1.0}, fail_after=3)
    sampler = PowerSampler(source, interval_s=0.01)
    with sampler:
        time.sleep(0.1)
    assert sampler.failure == "constant: rail monitor went away"
    assert len(sampler.samples) == 3
    report = sampler.report()
    assert report["energy_mj_per_inference"] is None and report["reason"] == sampler.failure
    broken = PowerSampler(ConstantSource({"total": 1.0}, fail_after=0)).start()
    broken.stop()
    assert broken.report()["reason"] == "constant: rail monitor went away"


def test_sampler_with_a_source_that_never_reads() -> None:
    sampler = PowerSampler(EmptySource({}), interval_s=0.01)
    with sampler:
        time.sleep(0.05)
    report = sampler.report()
    assert report["energy_mj_per_inference"] is None
    assert "returned no power readings" in report["reason"]


def test_sampler_cannot_start_twice() -> None:
    sampler = PowerSampler(ConstantSource({"a": 1.0}), interval_s=0.05).start()
    try:
        with pytest.raises(UsageError, match="already running"):
            sampler.start()
    finally:
        sampler.stop()


def test_idle_baseline() -> None:
    idle = measure_idle(ConstantSource({"POM_5V_IN": 700.0}, total="POM_5V_IN"), duration_s=0.25, interval_s=0.05)
    assert idle.mean_power_mw == pytest.approx(700.0)
    assert idle.rails_counted == ["POM_5V_IN"] and idle.n_samples >= 3 and idle.reason is None
    assert idle.to_dict()["mean_power_mw"] == pytest.approx(700.0)
    empty = measure_idle(EmptySource({}), duration_s=0.05, interval_s=0.01)
    assert empty.mean_power_mw is None and empty.reason


# -- NVML -----------------------------------------------------------------------------------------


class FakeNvml:
    """Stands in for the ``pynvml`` module: one GPU drawing 150 W, optional energy counter."""

    class NVMLError(Exception):
        pass

    def __init__(self, count: int = 1, energy: bool = True, power_fails: bool = False) -> None:
        self.count, self.energy, self.power_fails = count, energy, power_fails
        self.initialised = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        if self.power_fails:
            raise self.NVMLError("Not Supported")
        return 150_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.energy:
            raise self.NVMLError("Not Supported")
        return 123_456_789


def test_nvml_source() -> None:
    fake = FakeNvml()
    source = NvmlSource(0, nvml=fake)
    assert isinstance(source, PowerSource)
    assert source.read_mw() == {"gpu0": 150_000.0, "total": 150_000.0}
    assert source.device_name == "NVIDIA H100 80GB HBM3"
    assert source.total_rails() == ["gpu0"] and source.name == "nvml:gpu0"
    assert source.read_energy_mj() == 123_456_789.0
    source.close()
    assert fake.initialised is False
    assert NvmlSource(0, nvml=FakeNvml(energy=False)).read_energy_mj() is None


def test_nvml_unavailable_cases() -> None:
    with pytest.raises(SensorUnavailable, match="no GPU 1"):
        NvmlSource(1, nvml=FakeNvml(count=1)).open()
    with pytest.raises(SensorUnavailable, match="Not Supported"):
        NvmlSource(0, nvml=FakeNvml(power_fails=True)).open()


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is not None, reason="nvidia-ml-py is installed here")
def test_nvml_missing_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"edgeprune\[nvml\]"):
        NvmlSource().open()


# -- detection ------------------------------------------------------------------------------------


def test_detect_on_a_machine_without_sensors(tmp_path: Path) -> None:
    sources, reasons = detect_sources(tmp_path)
    assert sources == []
    assert [r.split(":")[0] for r in reasons] == ["jtop", "tegrastats", "nvml", "rapl"]
    assert "no intel-rapl zones" in reasons[3]


def test_detect_finds_tegrastats_and_rapl_without_starting_anything(tmp_path: Path) -> None:
    exe = tmp_path / "usr/bin/tegrastats"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 1\n")
    zone = tmp_path / "sys/class/powercap/intel-rapl:0"
    zone.mkdir(parents=True)
    for name, value in (("name", "package-0"), ("energy_uj", "5"), ("max_energy_range_uj", "100")):
        (zone / name).write_text(value + "\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/jtop.sock").write_text("")
    sources, reasons = detect_sources(tmp_path, interval_s=0.1)
    kinds = [type(s) for s in sources]
    assert TegrastatsSource in kinds and RaplSource in kinds
    tegrastats = next(s for s in sources if isinstance(s, TegrastatsSource))
    assert tegrastats.rate_hz == 10.0 and tegrastats._process is None
    if importlib.util.find_spec("jtop") is None:
        assert any(r.startswith("jtop: the service is running but the client is not") for r in reasons)
    for source in sources:
        source.close()


def test_power_modules_import_without_torch_or_vendor_libraries() -> None:
    code = (
        "import sys, edgeprune.device.measure.energy, edgeprune.device.provenance\n"
        "import edgeprune.device.sensors.jetson, edgeprune.device.sensors.jtop\n"
        "bad = {'torch', 'jtop', 'pynvml'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
