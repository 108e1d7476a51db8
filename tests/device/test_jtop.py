"""jtop readings: recorded ``print(jetson.power)`` / ``print(jetson.stats)`` output and a stand-in client.

Fixtures: tests/fixtures/device/jtop (sources in tests/fixtures/device/SOURCES.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from edgeprune.device.sensors.jtop import (
    JtopSource,
    parse_printed_dict,
    parse_stats_csv,
    power_from_jtop,
    power_from_stats,
    state_from_stats,
)
from edgeprune.device.sensors.source import PowerSource
from edgeprune.errors import MissingDependencyError, SensorError, SensorUnavailable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "device" / "jtop"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "jtop"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class StandInJtop:
    """The part of ``jtop.jtop`` a power source uses: ``power``, ``interval``, ``close()``."""

    def __init__(self, power: dict[str, Any], interval: float = 0.25) -> None:
        self.power = power
        self.interval = interval
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_recorded_power_dict_gives_instantaneous_rails_and_named_total() -> None:
    power = parse_printed_dict(fixture("orin-nano-4gb-power.txt"))
    reading = power_from_jtop(power)
    assert reading.rails_mw == {"VDD_CPU_GPU_CV": 1064, "VDD_SOC": 1540, "VDD_IN": 5133}
    assert (reading.total_mw, reading.total_rail, reading.jtop_sum_mw) == (5133, "VDD_IN", None)
    assert reading.power_mw()["total"] == 5133
    # the recorded 'avg' values (806, 1524, 4800) are jtop's smoothing and must never appear
    assert not {806.0, 1524.0, 4800.0} & set(reading.power_mw().values())


def test_power_dict_without_named_total_and_offline_rail() -> None:
    power = {
        "rail": {
            "VDD_GPU_SOC": {"power": 2340, "avg": 1, "online": True},
            "VDD_CPU_CV": {"power": 390, "avg": 2, "online": True},
            "CV": {"power": 9, "avg": 9, "online": False},
        },
        "tot": {"power": 2730, "avg": 3},
    }
    reading = power_from_jtop(power)
    assert reading.rails_mw == {"VDD_GPU_SOC": 2340, "VDD_CPU_CV": 390}
    assert reading.total_mw is None and reading.jtop_sum_mw == 2730
    assert "total" not in reading.power_mw()
    assert power_from_jtop({}).power_mw() == {}


def test_recorded_jtop4_stats() -> None:
    stats = parse_printed_dict(fixture("orin-nano-4gb-stats.txt"))
    assert stats["time"] == "datetime.datetime(2025, 4, 16, 23, 6, 5, 398586)"
    assert stats["CPU2"] == 39 and stats["GPU"] == 4.8
    power = power_from_stats(stats)
    assert power.rails_mw == {"VDD_CPU_GPU_CV": 1064, "VDD_SOC": 1540}
    assert power.jtop_sum_mw == 5133 and power.total_mw is None
    state = state_from_stats(stats)
    assert state["nvpmodel"] == "25W" and state["jetson_clocks"] is False
    assert state["temperatures_c"]["cpu"] == 46.062 and state["temperatures_c"]["tj"] == 47.906
    assert state["offline_sensors"] == ["cv0", "cv1", "cv2"]


def test_recorded_jtop2_csv_stats() -> None:
    stats = parse_stats_csv(fixture("agx-xavier-stats.txt"))
    assert "<key>" not in stats
    assert stats["power cur"] == 4859 and stats["power avg"] == 4899
    assert power_from_stats(stats).jtop_sum_mw == 4859
    state = state_from_stats(stats)
    assert state["nvpmodel"] == "MAXN" and state["jetson_clocks"] is False
    assert state["temperatures_c"]["AO"] == 44.5 and state["temperatures_c"]["Tdiode"] == 49.25


def test_printed_dict_rejects_other_text() -> None:
    with pytest.raises(SensorError):
        parse_printed_dict("__import__('os')")
    with pytest.raises(SensorError):
        parse_printed_dict("[1, 2]")


def test_source_over_a_client() -> None:
    client = StandInJtop(parse_printed_dict(fixture("orin-nano-4gb-power.txt")), interval=0.25)
    source = JtopSource(client)
    assert isinstance(source, PowerSource)
    assert source.rate_hz == 4.0
    assert source.read_mw() == {"VDD_CPU_GPU_CV": 1064, "VDD_SOC": 1540, "VDD_IN": 5133, "total": 5133}
    assert source.total_rails() == ["VDD_IN"]
    assert sorted(source.rails()) == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"]
    source.close()
    assert client.closed is False  # a client passed in belongs to the caller


def test_source_without_rails_is_unavailable() -> None:
    with pytest.raises(SensorUnavailable, match="no power rails"):
        JtopSource(StandInJtop({})).read_mw()


@pytest.mark.skipif(importlib.util.find_spec("jtop") is not None, reason="jetson-stats is installed here")
def test_connect_without_jetson_stats_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"edgeprune\[jetson\]"):
        JtopSource().read_mw()


def test_in_repo_copies_match_the_shared_set() -> None:
    if not SHARED.is_dir():
        pytest.skip("the shared fixture set (../shared/fixtures beside the repository) is not present")
    for path in sorted(FIXTURES.glob("*.txt")):
        assert path.read_bytes() == (SHARED / path.name).read_bytes(), path.name
