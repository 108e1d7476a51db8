"""The tegrastats parser against real recorded lines from every board and L4T format we have.

Fixtures: tests/fixtures/device/tegrastats (copies of the project's shared fixture set; sources and
boards in tests/fixtures/device/SOURCES.md).
"""

from __future__ import annotations

import os
import stat
import time
from datetime import datetime
from pathlib import Path

import pytest

from edgeprune.device.measure.energy import PowerSampler
from edgeprune.device.sensors.tegrastats import (
    TegrastatsSample,
    TegrastatsSource,
    parse_line,
    parse_lines,
)
from edgeprune.errors import SensorError, SensorUnavailable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "device" / "tegrastats"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "tegrastats"
FILES = sorted(p.name for p in FIXTURES.glob("*.txt"))
NO_RAILS = {
    "agx-xavier-32gb-l4t32.6.1-no-rails.txt",
    "nano-jp4.x-no-rails.txt",
    "tx2-4gb-jp4.6-no-rails.txt",
    "tx1-l4t28.1.txt",
}


def lines(name: str) -> list[TegrastatsSample]:
    return parse_lines((FIXTURES / name).read_text())


def test_every_fixture_file_is_copied() -> None:
    assert len(FILES) == 23


@pytest.mark.parametrize("name", FILES)
def test_every_line_of_every_file_parses_completely(name: str) -> None:
    samples = lines(name)
    assert samples, name
    for sample in samples:
        assert sample.unparsed == (), f"{name}: unrecognised tokens {sample.unparsed}"
        assert sample.ram_used_mb is not None and sample.ram_total_mb is not None
        assert 0 < sample.ram_used_mb < sample.ram_total_mb
        assert sample.cpus
        assert all(c.online is False or c.load_pct is not None for c in sample.cpus)
        assert bool(sample.rails) == (name not in NO_RAILS)
        assert all(rail.cur_mw >= 0 and rail.avg_mw >= 0 for rail in sample.rails.values())
        assert "NC" not in sample.rails


def test_line_counts_match_sources() -> None:
    counts = {name: len(lines(name)) for name in FILES}
    assert counts["nano-jp4.x-sudo.txt"] == 8
    assert counts["tx2-l4t28.2.txt"] == 6
    assert counts["xavier-nx-jp5.x.txt"] == 8
    assert counts["agx-orin-64gb-jp6.x.txt"] == 5


def test_nano_jp4_sudo_idle_and_gpu_load() -> None:
    first, *_, gpu_line, _, last = lines("nano-jp4.x-sudo.txt")
    assert (first.ram_used_mb, first.ram_total_mb) == (936, 3964)
    assert (first.lfb_blocks, first.lfb_block_kb) == (366, 4096)
    assert (first.swap_used_mb, first.swap_total_mb, first.swap_cached_mb) == (0, 4096, 0)
    assert (first.iram_used_kb, first.iram_total_kb) == (0, 252)
    assert [(c.load_pct, c.freq_mhz) for c in first.cpus] == [(10, 102), (3, 102), (0, 102), (0, 102)]
    assert first.emc is not None and (first.emc.load_pct, first.emc.freq_mhz) == (0, 204)
    assert first.temperatures_c["CPU"] == 27.5
    assert first.rails["POM_5V_IN"].cur_mw == 920
    assert first.total_rail == "POM_5V_IN"
    assert first.power_mw() == {"POM_5V_IN": 920, "POM_5V_GPU": 0, "POM_5V_CPU": 119, "total": 920}
    assert gpu_line.gr3d is not None and (gpu_line.gr3d.load_pct, gpu_line.gr3d.freq_mhz) == (99, 921)
    assert (gpu_line.rails["POM_5V_GPU"].cur_mw, gpu_line.rails["POM_5V_GPU"].avg_mw) == (2949, 182)
    assert gpu_line.rails["POM_5V_IN"].cur_mw == 5143
    assert last.cpus[3].freq_mhz == 307
    assert last.temperatures_c["PLL"] == 25.5


def test_nano_jp461_and_no_rails() -> None:
    (nano,) = lines("nano-jp4.6.1.txt")
    assert (nano.rails["POM_5V_CPU"].cur_mw, nano.rails["POM_5V_CPU"].avg_mw) == (366, 406)
    assert nano.engines["APE"].freq_mhz == 25
    (bare,) = lines("nano-jp4.x-no-rails.txt")
    assert [c.online for c in bare.cpus] == [True, True, False, False]
    assert bare.rails == {} and bare.power_mw() == {} and bare.total_rail is None
    assert bare.temperatures_c["thermal"] == 41.75
    assert bare.gr3d is not None and bare.gr3d.freq_mhz is None and bare.gr3d.load_pct == 0


def test_tx1_l4t28_1_old_cpu_format() -> None:
    first, second = lines("tx1-l4t28.1.txt")
    assert [c.load_pct for c in second.cpus] == [17, 11, 65, 0]
    assert {c.freq_mhz for c in second.cpus} == {1734}
    assert {c.freq_mhz for c in first.cpus} == {408}
    assert second.emc is not None and (second.emc.load_pct, second.emc.freq_mhz) == (1, 1600)
    assert second.gr3d is not None and (second.gr3d.load_pct, second.gr3d.freq_mhz) == (39, 76)
    assert second.engines["APE"].freq_mhz == 25
    assert (second.swap_used_mb, second.swap_cached_mb) == (873, 281)
    assert second.temperatures_c == {} and second.rails == {}


def test_tx2_formats() -> None:
    l282 = lines("tx2-l4t28.2.txt")
    assert (l282[0].rails["VDD_IN"].cur_mw, l282[0].mts_fg_pct, l282[0].mts_bg_pct) == (1931, 1, 8)
    assert (l282[3].rails["VDD_CPU"].cur_mw, l282[3].rails["VDD_CPU"].avg_mw) == (1847, 1000)
    assert (l282[3].cpus[2].load_pct, l282[3].cpus[2].freq_mhz) == (100, 2027)
    assert l282[5].power_mw()["total"] == 5432
    nosudo = lines("tx2-l4t28.x-nosudo.txt")
    assert nosudo[0].swap_total_mb is None and nosudo[0].emc is None
    assert (nosudo[4].rails["VDD_WIFI"].cur_mw, nosudo[4].rails["VDD_WIFI"].avg_mw) == (172, 9)
    sudo = lines("tx2-jp4.x-sudo.txt")
    assert sudo[0].gr3d is not None and sudo[0].gr3d.load_pct is None and sudo[0].gr3d.freqs_mhz == (0,)
    assert [c.online for c in sudo[0].cpus] == [True, False, False, True, True, True]
    assert sudo[0].rails["VDD_SYS_CPU"].cur_mw == 1156
    (jp4,) = lines("tx2-jp4.x-nosudo.txt")
    assert jp4.swap_used_mb is None
    assert (jp4.rails["VDD_4V0_WIFI"].cur_mw, jp4.rails["VDD_4V0_WIFI"].avg_mw) == (633, 527)
    assert jp4.total_rail == "VDD_IN" and jp4.power_mw()["total"] == 3140
    (swap,) = lines("tx2-jp4.x-swap.txt")
    assert (swap.swap_used_mb, swap.swap_total_mb, swap.swap_cached_mb) == (1626, 12122, 181)
    assert (swap.mts_fg_pct, swap.mts_bg_pct) == (1, 1)
    four_gb = lines("tx2-4gb-jp4.6-no-rails.txt")
    assert len(four_gb) == 6 and all(s.rails == {} for s in four_gb)
    assert four_gb[0].temperatures_c["BCPU"] == 50.5


def test_xavier_formats() -> None:
    (nx4,) = lines("xavier-nx-jp4.x.txt")
    assert (nx4.rails["VDD_CPU_GPU_CV"].cur_mw, nx4.rails["VDD_CPU_GPU_CV"].avg_mw) == (2706, 2119)
    assert nx4.gr3d is not None and nx4.gr3d.freq_mhz == 1109
    (nx512,) = lines("xavier-nx-jp5.1.2.txt")
    assert nx512.timestamp == datetime(2024, 7, 9, 13, 31, 31)
    assert nx512.gr3d is not None and nx512.gr3d.freqs_mhz == (114,)
    assert nx512.engines["VIC_FREQ"].freq_mhz == 115
    assert (nx512.rails["VDD_IN"].cur_mw, nx512.rails["VDD_IN"].avg_mw) == (2763, 2846)
    nx5 = lines("xavier-nx-jp5.x.txt")
    assert (nx5[3].lfb_blocks, nx5[3].lfb_block_kb) == (33, 2048)
    assert (nx5[4].lfb_blocks, nx5[4].lfb_block_kb) == (2, 128)
    assert nx5[7].rails["VDD_IN"].cur_mw == 13353
    assert nx5[7].gr3d is not None and (nx5[7].gr3d.load_pct, nx5[7].gr3d.freq_mhz) == (99, None)
    (agx,) = lines("agx-xavier-jp4.2.txt")
    assert agx.rails["GPU"].cur_mw == 463 and agx.rails["SYS5V"].cur_mw == 3306
    assert agx.total_rail is None and "total" not in agx.power_mw()
    assert (agx.swap_used_mb, agx.swap_cached_mb) == (898, 23)
    first, _ = lines("agx-xavier-32gb-l4t32.6.1-no-rails.txt")
    assert first.gr3d is not None and first.gr3d.load_pct == 39
    assert sum(c.online for c in first.cpus) == 4 and len(first.cpus) == 8


def test_agx_orin_formats() -> None:
    (jp51,) = lines("agx-orin-jp5.1.txt")
    assert jp51.offline_sensors == ("CV0", "CV1", "GPU", "CV2")
    assert jp51.temperatures_c["CPU"] == 42.593 and "GPU" not in jp51.temperatures_c
    assert jp51.rails["VDDQ_VDD2_1V8AO"].cur_mw == 301
    assert set(jp51.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert jp51.engines["GR3D2_FREQ"].freq_mhz == 0
    assert jp51.total_rail is None
    jp6 = lines("agx-orin-64gb-jp6.x.txt")
    assert (jp6[0].ram_used_mb, jp6[0].ram_total_mb) == (17953, 62841)
    assert jp6[0].gr3d is not None and (jp6[0].gr3d.load_pct, jp6[0].gr3d.freqs_mhz) == (39, (305, 0))
    assert jp6[0].engines["NVENC"].online is False
    assert jp6[0].rails["VDD_GPU_SOC"].cur_mw == 2798
    assert [c.online for c in jp6[0].cpus].count(False) == 4
    assert jp6[4].timestamp is not None and jp6[3].timestamp is not None
    assert (jp6[4].timestamp - jp6[3].timestamp).total_seconds() == 2
    (b,) = lines("agx-orin-64gb-jp6.x-b.txt")
    assert (b.swap_used_mb, b.swap_total_mb) == (19, 31400)
    assert b.temperatures_c["tj"] == 44.343
    (jp72,) = lines("agx-orin-jp7.2.txt")
    assert jp72.swap_total_mb is None
    assert (jp72.lfb_blocks, jp72.lfb_block_kb) == (1, 2048)
    assert jp72.gr3d is not None and (jp72.gr3d.load_pct, jp72.gr3d.freqs_mhz) == (12, (1300, 1300))
    gpu_soc = jp72.rails["VDD_GPU_SOC"]
    assert (gpu_soc.cur_mw, gpu_soc.avg_mw, gpu_soc.extra_mw) == (5139, 5139, 5139)
    assert jp72.temperatures_c["cpu"] == 52.968 and jp72.temperature_extra_c["cpu"] == 52.968


def test_orin_nx_nano_and_thor() -> None:
    (nx,) = lines("orin-nx-8gb-jp6.x.txt")
    assert (nx.lfb_blocks, nx.lfb_block_kb) == (5, 1024)
    assert (nx.engines["NVENC"].load_pct, nx.engines["NVENC"].freq_mhz) == (1, 115)
    assert nx.engines["NVDEC"].load_pct == 40
    assert (nx.rails["VDD_IN"].cur_mw, nx.rails["VDD_IN"].avg_mw) == (17946, 15710)
    assert (nx.cpus[5].load_pct, nx.cpus[5].freq_mhz) == (93, 247)
    (nano,) = lines("orin-nano-8gb-jp6.x.txt")
    assert nano.emc is None
    assert nano.power_mw()["total"] == 4744 and nano.total_rail == "VDD_IN"
    (thor,) = lines("thor-jp7.2.txt")
    vin = thor.rails["VIN"]
    assert (vin.cur_mw, vin.avg_mw, vin.extra_mw) == (87426, 43713, 87426)
    assert thor.total_rail == "VIN" and thor.power_mw()["total"] == 87426
    assert thor.gr3d is None and len(thor.cpus) == 14
    assert thor.temperatures_c["soc345"] == 63.281
    (r384,) = lines("thor-r38.4.txt")
    assert r384.gr3d is not None and (r384.gr3d.load_pct, r384.gr3d.freqs_mhz) == (None, (314, 314, 314))
    assert r384.engines["NVENC0_FREQ"].freq_mhz == 314 and r384.engines["OFA_FREQ"].freq_mhz == 315
    assert r384.engines["APE"].freq_mhz == 300 and r384.swap_total_mb is None
    assert r384.power_mw()["total"] == 19780


def test_unknown_tokens_are_kept_and_duplicate_rails_kept_apart() -> None:
    sample = parse_line("RAM 1/2MB CPU [1%@100] FOO_BAR baz VDD_X 5/5 VDD_X 7/7 NC 0mW/0mW")
    assert sample.unparsed == ("FOO_BAR", "baz")
    assert sample.rails["VDD_X"].cur_mw == 5 and sample.rails["VDD_X#2"].cur_mw == 7
    assert "NC" not in sample.rails
    assert parse_lines("\n\n") == []


# -- the source ------------------------------------------------------------------------------------


def test_source_reads_the_newest_fed_line() -> None:
    text = (FIXTURES / "xavier-nx-jp5.x.txt").read_text().splitlines()
    source = TegrastatsSource(interval_ms=1000)
    assert source.rate_hz == 1.0
    assert source.read_mw() == {}
    for line in text:
        source.feed(line)
    assert source.read_mw() == {"VDD_IN": 13353, "VDD_CPU_GPU_CV": 7340, "VDD_SOC": 1944, "total": 13353}
    assert source.total_rails() == ["VDD_IN"]
    assert source.rails() == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert source.lines_read == 8


def test_source_without_rails_says_why() -> None:
    source = TegrastatsSource()
    source.feed((FIXTURES / "nano-jp4.x-no-rails.txt").read_text())
    with pytest.raises(SensorUnavailable, match="no power rails"):
        source.read_mw()


def test_source_following_a_stream_that_ends_reports_stale_data() -> None:
    stream = iter((FIXTURES / "tx2-l4t28.2.txt").read_text().splitlines(keepends=True))
    source = TegrastatsSource(stream, interval_ms=100)
    with pytest.raises(SensorError, match="stopped printing"):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            source.read_mw()  # may succeed while the reader thread is still mid-stream
            time.sleep(0.01)
    assert source.latest is not None and source.latest.rails["VDD_IN"].cur_mw == 5432
    source.close()


def test_source_following_an_empty_stream_fails_clearly() -> None:
    source = TegrastatsSource(iter([]), interval_ms=10, first_line_timeout_s=0.2)
    with pytest.raises(SensorError):
        source.read_mw()


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as a stand-in for tegrastats")
def test_source_runs_a_command_and_a_sampler_integrates_it(tmp_path: Path) -> None:
    line = (FIXTURES / "orin-nano-8gb-jp6.x.txt").read_text().strip()
    fake = tmp_path / "tegrastats"
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{line}'; sleep 0.02; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    source = TegrastatsSource.from_command(str(fake), interval_ms=20)
    try:
        assert source.read_mw()["total"] == 4744
        sampler = PowerSampler(source, interval_s=0.02)
        with sampler:
            t0 = time.monotonic()
            time.sleep(0.3)
            t1 = time.monotonic()
        report = sampler.report((t0, t1), inferences=10)
        assert report["reason"] is None
        assert report["rails_counted"] == ["VDD_IN"]
        assert report["mean_power_mw"] == pytest.approx(4744)
        assert report["energy_mj_per_inference"] == pytest.approx(4744 * (t1 - t0) / 10)
    finally:
        source.close()
    assert source._process is None


def test_missing_command_is_unavailable(tmp_path: Path) -> None:
    source = TegrastatsSource.from_command(str(tmp_path / "no-such-tegrastats"))
    with pytest.raises(SensorUnavailable, match="cannot start"):
        source.read_mw()


# -- the project's shared fixture set, when this checkout sits beside it -----------------------------


def _shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("the shared fixture set (../shared/fixtures beside the repository) is not present")
    return SHARED


def test_in_repo_copies_match_the_shared_set() -> None:
    shared = _shared()
    for name in FILES:
        assert (FIXTURES / name).read_bytes() == (shared / name).read_bytes(), name


def test_every_shared_tegrastats_file_parses() -> None:
    for path in sorted(_shared().glob("*.txt")):
        for sample in parse_lines(path.read_text()):
            assert sample.unparsed == (), path.name
            assert sample.ram_total_mb
