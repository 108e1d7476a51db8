"""RAPL energy counters read from fake powercap sysfs trees, wraparound and permissions included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeprune.device.sensors import rapl
from edgeprune.device.sensors.rapl import RaplSource, energy_delta_uj, find_zones
from edgeprune.device.sensors.source import PowerSource
from edgeprune.errors import SensorUnavailable

MAX_RANGE_UJ = 262_143_328_850  # a typical package max_energy_range_uj


class FakeClock:
    """A monotonic clock the test moves by hand; ``sleep`` records instead of sleeping."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def zone(root: Path, directory: str, name: str, energy_uj: int, max_range_uj: int = MAX_RANGE_UJ) -> Path:
    path = root / "sys/class/powercap" / directory
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return path


def set_energy(root: Path, directory: str, energy_uj: int) -> None:
    (root / "sys/class/powercap" / directory / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    zone(tmp_path, "intel-rapl:0:2", "dram", 100_000, max_range_uj=65_532_610_987)
    zone(tmp_path, "intel-rapl:1", "psys", 9_000_000)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 7)  # another view of package-0: ignored
    return tmp_path


def test_zones_are_labelled_and_nested(tree: Path) -> None:
    zones = find_zones(tree)
    assert [z.label for z in zones] == ["package-0", "package-0/core", "package-0/dram", "psys"]
    assert [z.top_level for z in zones] == [True, False, False, True]
    assert zones[2].max_energy_range_uj == 65_532_610_987


def test_power_from_counter_deltas(tree: Path) -> None:
    clock = FakeClock()
    source = RaplSource(tree, clock=clock, sleep=clock.sleep)
    assert isinstance(source, PowerSource)
    assert source.total_rails() == ["package-0"]
    assert source.rails() == ["package-0", "package-0/core", "package-0/dram", "psys"]
    clock.now += 0.5
    set_energy(tree, "intel-rapl:0", 6_000_000)  # 5 J in 0.5 s = 10 W
    set_energy(tree, "intel-rapl:0:0", 3_000_000)  # 2.5 J in 0.5 s = 5 W
    set_energy(tree, "intel-rapl:1", 19_000_000)  # 10 J in 0.5 s = 20 W
    power = source.read_mw()
    assert power == {
        "package-0": 10_000.0,
        "package-0/core": 5_000.0,
        "package-0/dram": 0.0,
        "psys": 20_000.0,
        "total": 10_000.0,
    }
    assert clock.slept == []


def test_counter_wraparound(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", MAX_RANGE_UJ - 1_000_000)
    clock = FakeClock()
    source = RaplSource(tmp_path, clock=clock, sleep=clock.sleep)
    clock.now += 1.0
    set_energy(tmp_path, "intel-rapl:0", 4_000_000)  # wrapped: 1 J before the wrap + 4 J after
    assert source.read_mw() == {"package-0": 5_000.0, "total": 5_000.0}
    assert source.read_energy_uj() == {"package-0": 4_000_000}


def test_short_intervals_wait_for_the_counter_resolution(tree: Path) -> None:
    clock = FakeClock()
    source = RaplSource(tree, clock=clock, sleep=clock.sleep)
    clock.now += 0.004
    source.read_mw()
    assert clock.slept == [pytest.approx(rapl.MIN_DELTA_S - 0.004)]
    clock.now -= 1.0  # a clock that does not advance gives no reading rather than a division by ~0
    assert source.read_mw() == {}


def test_psys_only_machine_uses_psys_as_total(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "psys", 0)
    clock = FakeClock()
    source = RaplSource(tmp_path, clock=clock, sleep=clock.sleep)
    clock.now += 2.0
    set_energy(tmp_path, "intel-rapl:0", 30_000_000)
    assert source.total_rails() == ["psys"]
    assert source.read_mw()["total"] == 15_000.0


def test_no_rapl_zones(tmp_path: Path) -> None:
    with pytest.raises(SensorUnavailable, match="no intel-rapl zones"):
        RaplSource(tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read a 000 file")
def test_unreadable_counter_says_root_only(tree: Path) -> None:
    (tree / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0o000)
    with pytest.raises(SensorUnavailable, match="readable by root only"):
        RaplSource(tree)


def test_permission_error_says_root_only_even_when_running_as_root(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = rapl._read_text

    def denied(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(rapl, "_read_text", denied)
    with pytest.raises(SensorUnavailable, match="CVE-2020-8694"):
        RaplSource(tree)


def test_energy_delta_examples() -> None:
    assert energy_delta_uj(10, 25, 100) == 15
    assert energy_delta_uj(90, 5, 100) == 15
    assert energy_delta_uj(7, 7, 100) == 0


@given(st.integers(min_value=1, max_value=10**12), st.data())
def test_energy_delta_is_the_forward_distance_modulo_the_range(max_range: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(min_value=0, max_value=max_range - 1))
    new = data.draw(st.integers(min_value=0, max_value=max_range - 1))
    delta = energy_delta_uj(old, new, max_range)
    assert 0 <= delta < max_range
    assert delta == (new - old) % max_range
