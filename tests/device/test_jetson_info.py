"""Jetson state readers: nvpmodel and jetson_clocks output (real recordings), sysfs trees (fake).

Fixtures: tests/fixtures/device/jetson (sources in tests/fixtures/device/SOURCES.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeprune.device import provenance
from edgeprune.device.sensors.jetson import (
    nvpmodel_from_root,
    parse_jetson_clocks,
    parse_nvpmodel,
    parse_nvpmodel_conf,
    parse_nvpmodel_status,
    read_clocks,
    read_cooling_devices,
    read_thermal_zones,
    read_throttling,
    run_tool,
    temperatures_c,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "device" / "jetson"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "jetson"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- nvpmodel -q ----------------------------------------------------------------------------------


def test_nvpmodel_root_query() -> None:
    mode = parse_nvpmodel(fixture("nvpmodel-q-nano.txt"))
    assert (mode.name, mode.mode_id, mode.fan_mode) == ("5W", 1, None)
    assert mode.errors == () and not mode.permission_denied


def test_nvpmodel_non_root_query_still_gives_the_mode() -> None:
    mode = parse_nvpmodel(fixture("nvpmodel-q-nano-nonroot.txt"))
    assert (mode.name, mode.mode_id) == ("5W", 1)
    assert len(mode.errors) == 2 and mode.permission_denied


def test_nvpmodel_agx_xavier_with_fan_mode() -> None:
    mode = parse_nvpmodel(fixture("nvpmodel-q-agx-xavier-nonroot.txt"))
    assert (mode.name, mode.mode_id, mode.fan_mode) == ("MODE_15W_DESKTOP", 7, "quiet")
    assert len(mode.errors) == 14 and mode.permission_denied
    assert mode.to_dict() == {
        "name": "MODE_15W_DESKTOP",
        "id": 7,
        "fan_mode": "quiet",
        "source": "nvpmodel -q",
        "errors": 14,
    }


def test_nvpmodel_state_files(tmp_path: Path) -> None:
    assert parse_nvpmodel_status("pmode:0002 fmode:quiet\n") == (2, "quiet")
    assert parse_nvpmodel_status("pmode:0000") == (0, None)
    conf = (
        "< PM_CONFIG DEFAULT=1 >\n< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n"
        "< POWER_MODEL ID=1 NAME=25W >\n< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n"
    )
    assert parse_nvpmodel_conf(conf) == ({0: "15W", 1: "25W", 2: "MAXN_SUPER"}, 1)
    assert nvpmodel_from_root(tmp_path) is None
    write(tmp_path, "var/lib/nvpmodel/status", "pmode:0002\n")
    mode = nvpmodel_from_root(tmp_path)
    assert mode is not None and (mode.name, mode.mode_id) == (None, 2)
    write(tmp_path, "etc/nvpmodel.conf", conf)
    mode = nvpmodel_from_root(tmp_path)
    assert mode is not None and (mode.name, mode.mode_id) == ("MAXN_SUPER", 2)


# -- jetson_clocks --show -------------------------------------------------------------------------


def test_jetson_clocks_agx_orin_not_locked() -> None:
    clocks = parse_jetson_clocks(fixture("jetson_clocks-show-agx-orin.txt"))
    assert (clocks.soc_family, clocks.machine, clocks.online_cpus) == ("tegra234", "Jetson AGX Orin", "0-11")
    assert [c.name for c in clocks.cpus] == [f"cpu{i}" for i in range(12)]
    cpu10 = clocks.cpus[10]
    assert (cpu10.online, cpu10.governor) == (True, "schedutil")
    assert (cpu10.min_hz, cpu10.max_hz, cpu10.current_hz) == (729_600_000, 2_201_600_000, 1_113_600_000)
    assert cpu10.extra == {"idle_WFI": "1", "idle_c7": "1"}
    assert clocks.gpu is not None
    gpu = clocks.gpu
    assert (gpu.min_hz, gpu.max_hz, gpu.current_hz) == (306_000_000, 1_300_500_000, 306_000_000)
    assert clocks.emc is not None and clocks.emc.current_hz == 2_133_000_000
    assert clocks.emc.extra["FreqOverride"] == "0"
    assert clocks.engines["DLA0_CORE"].max_hz == 1_600_000_000
    assert clocks.engines["PVA0_AXI"].current_hz == 832_000_000
    assert clocks.fan == {"control": "active", "hwmon2_pwm1": "55"}
    assert clocks.power_mode == "MAXN"
    assert clocks.unparsed == ()
    assert clocks.locked is False
    assert clocks.below_max() == ["cpu3", "cpu6", "cpu7", "cpu9", "cpu10", "cpu11", "GPU", "EMC"]
    summary = clocks.to_dict()
    assert summary["locked"] is False and summary["cpus_online"] == 12
    assert summary["cpu_max_hz"] == 2_201_600_000 and summary["cpu_governors"] == ["schedutil"]


def test_jetson_clocks_tx1_locked_old_format() -> None:
    clocks = parse_jetson_clocks(fixture("jetson_clocks-show-tx1.txt"))
    assert (clocks.soc_family, clocks.machine) == ("tegra210", "jetson_tx1")
    assert [c.governor for c in clocks.cpus] == ["interactive"] * 4  # printed as "Gonvernor"
    assert clocks.cpus[0].current_hz == 1_734_000_000 and clocks.cpus[0].online is None
    assert clocks.gpu is not None and clocks.gpu.current_hz == 998_400_000
    assert clocks.emc is not None and clocks.emc.min_hz == 12_750_000
    assert clocks.emc.extra["FreqOverride"] == "1"
    assert clocks.fan == {"speed": "255"}
    assert clocks.locked is True and clocks.below_max() == []
    assert clocks.unparsed == ()


def test_jetson_clocks_partial_paste() -> None:
    clocks = parse_jetson_clocks(fixture("jetson_clocks-show-orin-nx-partial.txt"))
    assert clocks.machine == "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
    assert len(clocks.cpus) == 7 and clocks.gpu is None and clocks.emc is None
    assert clocks.cpus[5].at_max is True and clocks.cpus[0].at_max is False
    assert clocks.locked is False
    assert parse_jetson_clocks("").locked is None


# -- sysfs ----------------------------------------------------------------------------------------


def fake_cpu(root: Path, n: int, cur: int, lo: int, hi: int, hw: int | None = None, online: str | None = None) -> None:
    base = f"sys/devices/system/cpu/cpu{n}"
    if online is not None:
        write(root, f"{base}/online", online + "\n")
    if online == "0":
        return
    for name, value in (
        ("scaling_cur_freq", cur),
        ("scaling_min_freq", lo),
        ("scaling_max_freq", hi),
        ("cpuinfo_max_freq", hw or hi),
    ):
        write(root, f"{base}/cpufreq/{name}", f"{value}\n")
    write(root, f"{base}/cpufreq/scaling_governor", "schedutil\n")


def test_clocks_from_sysfs(tmp_path: Path) -> None:
    assert read_clocks(tmp_path) is None
    fake_cpu(tmp_path, 0, 1984000, 1984000, 1984000)
    fake_cpu(tmp_path, 1, 1984000, 1984000, 1984000, online="1")
    fake_cpu(tmp_path, 2, 0, 0, 0, online="0")
    fake_cpu(tmp_path, 10, 1984000, 1984000, 1984000, online="1")
    clocks = read_clocks(tmp_path)
    assert clocks is not None and clocks.source == "sysfs"
    assert [c.name for c in clocks.cpus] == ["cpu0", "cpu1", "cpu2", "cpu10"]
    assert clocks.cpus[2].online is False and clocks.cpus[0].current_hz == 1_984_000_000
    assert clocks.locked is True
    gpu = "sys/class/devfreq/17000000.ga10b"
    write(tmp_path, f"{gpu}/cur_freq", "306000000\n")
    write(tmp_path, f"{gpu}/min_freq", "306000000\n")
    write(tmp_path, f"{gpu}/max_freq", "918000000\n")
    write(tmp_path, "sys/class/devfreq/other.device/cur_freq", "1\n")
    clocks = read_clocks(tmp_path)
    assert clocks is not None and clocks.gpu is not None
    assert clocks.gpu.extra == {"devfreq": "17000000.ga10b"} and clocks.gpu.max_hz == 918_000_000
    assert clocks.locked is False and clocks.below_max() == ["GPU"]


def test_thermal_zones_and_throttling(tmp_path: Path) -> None:
    zones = [("cpu-thermal", "45500"), ("cv0-thermal", "-256000"), ("cpu-thermal", "47000"), ("tj-thermal", "95250")]
    for i, (kind, temp) in enumerate(zones):
        write(tmp_path, f"sys/class/thermal/thermal_zone{i}/type", kind + "\n")
        write(tmp_path, f"sys/class/thermal/thermal_zone{i}/temp", temp + "\n")
    write(tmp_path, "sys/class/thermal/thermal_zone3/trip_point_0_type", "passive\n")
    write(tmp_path, "sys/class/thermal/thermal_zone3/trip_point_0_temp", "95000\n")
    write(tmp_path, "sys/class/thermal/thermal_zone3/trip_point_1_type", "critical\n")
    write(tmp_path, "sys/class/thermal/thermal_zone3/trip_point_1_temp", "104500\n")
    write(tmp_path, "sys/class/thermal/thermal_zone4/type", "unreadable-thermal\n")
    read = read_thermal_zones(tmp_path)
    assert [z.zone for z in read] == [f"thermal_zone{i}" for i in range(5)]
    assert read[0].temp_c == 45.5 and read[1].temp_c is None and read[4].temp_c is None
    assert (read[3].passive_trip_c, read[3].critical_trip_c) == (95.0, 104.5)
    assert read[3].over_passive_trip and not read[0].over_passive_trip
    assert temperatures_c(read) == {"cpu-thermal": 45.5, "cpu-thermal (thermal_zone2)": 47.0, "tj-thermal": 95.25}

    write(tmp_path, "sys/class/thermal/cooling_device0/type", "pwm-fan\n")
    write(tmp_path, "sys/class/thermal/cooling_device0/cur_state", "3\n")
    write(tmp_path, "sys/class/thermal/cooling_device0/max_state", "10\n")
    devices = read_cooling_devices(tmp_path)
    assert devices[0].is_fan and devices[0].cur_state == 3
    state = read_throttling(tmp_path)
    assert state.throttled is True
    assert state.reasons == ("tj-thermal at 95.2 C is over its passive trip point 95.0 C",)


def test_cooling_device_and_capped_cpus(tmp_path: Path) -> None:
    assert read_throttling(tmp_path).throttled is None  # nothing readable: unknown, not "no"
    write(tmp_path, "sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "51000\n")
    write(tmp_path, "sys/class/thermal/cooling_device1/type", "Processor\n")
    write(tmp_path, "sys/class/thermal/cooling_device1/cur_state", "0\n")
    write(tmp_path, "sys/class/thermal/cooling_device1/max_state", "3\n")
    fake_cpu(tmp_path, 0, 1_000_000, 400_000, 1_500_000, hw=2_000_000)
    state = read_throttling(tmp_path)
    assert state.throttled is False and state.cpus_capped == ("cpu0",)
    write(tmp_path, "sys/class/thermal/cooling_device1/cur_state", "2\n")
    state = read_throttling(tmp_path)
    assert state.throttled is True
    assert state.reasons == ("cooling device Processor engaged at state 2/3",)
    assert state.to_dict()["cpus_capped"] == ["cpu0"]


# -- provenance ------------------------------------------------------------------------------------


def test_jetson_provenance_from_a_fake_tree(tmp_path: Path) -> None:
    assert provenance.jetson(tmp_path) is None
    write(
        tmp_path,
        "etc/nv_tegra_release",
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n",
    )
    board = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    write(tmp_path, "proc/device-tree/model", board + "\x00")
    write(tmp_path, "var/lib/nvpmodel/status", "pmode:0001\n")
    write(tmp_path, "etc/nvpmodel.conf", "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=25W >\n")
    fake_cpu(tmp_path, 0, 1_344_000, 729_600, 1_344_000)
    info = provenance.jetson(tmp_path)
    assert info is not None
    assert info["board"] == board
    assert (info["l4t"], info["jetpack"]) == ("36.4.3", "6.2")
    assert info["jetpack_source"] == "inferred from L4T 36.4.3"
    assert info["nvpmodel"]["name"] == "25W" and info["nvpmodel"]["id"] == 1
    assert info["jetson_clocks"]["locked"] is True

    write(
        tmp_path,
        "var/lib/dpkg/status",
        "Package: nvidia-l4t-core\nVersion: 36.4.3-20250107174145\n\n"
        "Package: nvidia-jetpack\nStatus: install ok installed\nVersion: 6.2+b77\n\n",
    )
    assert provenance.jetpack_version(tmp_path) == ("6.2", "dpkg nvidia-jetpack")


def test_l4t_versions_and_collect(tmp_path: Path) -> None:
    write(tmp_path, "etc/nv_tegra_release", "# R32 (release), REVISION: 6.1, GCID: 27863751\n")
    assert provenance.l4t_version(tmp_path) == "32.6.1"
    assert provenance.jetpack_version(tmp_path) == ("4.6", "inferred from L4T 32.6.1")
    write(tmp_path, "etc/nv_tegra_release", "# R99 (release), REVISION: 1.0\n")
    assert provenance.jetpack_version(tmp_path) == (None, None)
    record = provenance.collect(tmp_path)
    assert record["jetson"]["l4t"] == "99.1.0"
    assert record["thermal"] == {
        "temperatures_c": {},
        "throttling": {"throttled": None, "reasons": [], "cpus_capped": []},
    }


def test_run_tool() -> None:
    assert run_tool(["/nonexistent/nvpmodel", "-q"]) is None
    text = run_tool([sys.executable, "-c", "print('NV Power Mode: MAXN'); print(0)"])
    assert text is not None and parse_nvpmodel(text).name == "MAXN"


def test_in_repo_copies_match_the_shared_set() -> None:
    if not SHARED.is_dir():
        pytest.skip("the shared fixture set (../shared/fixtures beside the repository) is not present")
    for path in sorted(FIXTURES.glob("*.txt")):
        assert path.read_bytes() == (SHARED / path.name).read_bytes(), path.name
