"""Jetson operating state: power mode, clock locking, temperatures, throttling.

A latency or energy number from a Jetson means little without the state it was taken in: the
nvpmodel mode caps clocks and cores, ``jetson_clocks`` pins them at their maximum, and heat
throttles them. This module reads those facts from the tools' text output (``nvpmodel -q``,
``jetson_clocks --show``) and, because those tools need root or may be absent, from files under a
root path: ``/var/lib/nvpmodel/status``, ``/etc/nvpmodel.conf``, cpufreq, devfreq, thermal zones
and cooling devices. Every function takes text or a root ``Path``, so tests use recorded output
and fake sysfs trees.

Units: clock frequencies in Hz throughout (``jetson_clocks --show`` and cpufreq print CPU
frequencies in kHz; they are converted), temperatures in degrees Celsius (sysfs gives millidegrees).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OFFLINE_TEMP_C = -256.0
"""Jetson sensors of powered-off blocks (CV clusters, the GPU when rail-gated) read -256 C."""

GPU_DEVFREQ_HINTS = ("gpu", "ga10b", "gv11b", "gp10b", "gb10b")
"""Substrings of the devfreq device name of a Jetson's integrated GPU (e.g. ``17000000.ga10b``)."""

_FAN_COOLING_HINTS = ("fan",)


# --------------------------------------------------------------------------------------------
# nvpmodel


@dataclass(frozen=True)
class NvpModel:
    """The active nvpmodel power mode.

    Attributes:
        name: mode name, e.g. ``MAXN``, ``15W``, ``MODE_15W_DESKTOP``.
        mode_id: the numeric id nvpmodel uses (``nvpmodel -m <id>``).
        fan_mode: fan profile where printed (``quiet``, ``cool``), else None.
        errors: ``NVPM ERROR`` lines; a non-root query prints them and is still valid.
        source: where the facts came from (``nvpmodel -q`` or the state files).
    """

    name: str | None
    mode_id: int | None
    fan_mode: str | None = None
    errors: tuple[str, ...] = ()
    source: str = "nvpmodel -q"

    @property
    def permission_denied(self) -> bool:
        """True when nvpmodel could not open some of its files (errno 13: it was not run as root)."""
        return any(line.rstrip().endswith(": 13") for line in self.errors)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "id": self.mode_id,
            "fan_mode": self.fan_mode,
            "source": self.source,
            "errors": len(self.errors),
        }


def parse_nvpmodel(text: str) -> NvpModel:
    """Parse ``nvpmodel -q`` output, root or not.

    The output is ``NV Power Mode: <name>`` followed by the id on its own line, optionally preceded
    by ``NV Fan Mode:<mode>`` and followed by ``NVPM ERROR`` lines when not run as root.
    """
    name: str | None = None
    mode_id: int | None = None
    fan: str | None = None
    errors: list[str] = []
    expect_id = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("NVPM ERROR"):
            errors.append(line)
        elif line.startswith("NV Power Mode:"):
            name = line.split(":", 1)[1].strip() or None
            expect_id = True
            continue
        elif line.startswith("NV Fan Mode:"):
            fan = line.split(":", 1)[1].strip() or None
        elif expect_id and line.isdigit():
            mode_id = int(line)
        expect_id = False
    return NvpModel(name=name, mode_id=mode_id, fan_mode=fan, errors=tuple(errors))


def parse_nvpmodel_status(text: str) -> tuple[int | None, str | None]:
    """Parse ``/var/lib/nvpmodel/status`` (``pmode:0002`` and optionally ``fmode:quiet``).

    Returns:
        The active mode id and fan mode, each None when absent.
    """
    mode = re.search(r"pmode:(\d+)", text)
    fan = re.search(r"fmode:(\S+)", text)
    return (int(mode.group(1)) if mode else None, fan.group(1) if fan else None)


def parse_nvpmodel_conf(text: str) -> tuple[dict[int, str], int | None]:
    """Parse the mode table of ``/etc/nvpmodel.conf``.

    Returns:
        ``{id: name}`` from the ``< POWER_MODEL ID=<id> NAME=<name> >`` lines, and the default id
        from ``< PM_CONFIG DEFAULT=<id> >`` (None when absent).
    """
    modes = {int(m.group(1)): m.group(2) for m in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", text)}
    default = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", text)
    return modes, int(default.group(1)) if default else None


def nvpmodel_from_root(root: Path = Path("/")) -> NvpModel | None:
    """The active power mode from nvpmodel's own state files, without running it or being root.

    Returns:
        The mode, or None when ``var/lib/nvpmodel/status`` is absent or has no ``pmode``.
    """
    status = _read(root / "var/lib/nvpmodel/status")
    if status is None:
        return None
    mode_id, fan = parse_nvpmodel_status(status)
    if mode_id is None:
        return None
    conf = _read(root / "etc/nvpmodel.conf")
    modes = parse_nvpmodel_conf(conf)[0] if conf else {}
    return NvpModel(
        name=modes.get(mode_id), mode_id=mode_id, fan_mode=fan, source="/var/lib/nvpmodel/status + /etc/nvpmodel.conf"
    )


# --------------------------------------------------------------------------------------------
# clocks


@dataclass(frozen=True)
class ClockDomain:
    """One clock: a CPU core, the GPU, EMC, a DLA or PVA engine. Frequencies in Hz.

    Attributes:
        name: ``cpu0``, ``GPU``, ``EMC``, ``DLA0_CORE``, ...
        online: False for an offline CPU core; None when not stated.
        governor: the frequency governor (CPU cores only).
        min_hz, max_hz, current_hz: the current floor, ceiling and frequency.
        extra: every other ``key=value`` printed for this clock (``FreqOverride``, idle states).
    """

    name: str
    online: bool | None = None
    governor: str | None = None
    min_hz: int | None = None
    max_hz: int | None = None
    current_hz: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def at_max(self) -> bool | None:
        """Whether it runs at its ceiling; None when either value is unknown."""
        if self.current_hz is None or self.max_hz is None:
            return None
        return self.current_hz >= self.max_hz


@dataclass(frozen=True)
class JetsonClocks:
    """Clock state as ``jetson_clocks --show`` prints it, or as read from sysfs.

    Attributes:
        cpus: one entry per CPU core.
        gpu, emc: the GPU and memory clocks, None when not printed or unreadable.
        engines: DLA/PVA clocks (``DLA0_CORE`` ...).
        soc_family, machine: the header line (``tegra234``, ``Jetson AGX Orin``).
        online_cpus: the ``Online CPUs`` range as printed (``0-11``).
        fan: ``key=value`` pairs of the fan line (``control=active``, ``speed=255``).
        power_mode: the trailing ``NV Power Mode`` line, when printed.
        source: ``jetson_clocks --show`` or ``sysfs``.
        unparsed: lines that matched nothing.
    """

    cpus: tuple[ClockDomain, ...] = ()
    gpu: ClockDomain | None = None
    emc: ClockDomain | None = None
    engines: dict[str, ClockDomain] = field(default_factory=dict)
    soc_family: str | None = None
    machine: str | None = None
    online_cpus: str | None = None
    fan: dict[str, str] = field(default_factory=dict)
    power_mode: str | None = None
    source: str = "jetson_clocks --show"
    unparsed: tuple[str, ...] = ()

    def below_max(self) -> list[str]:
        """Names of the online CPU, GPU and EMC clocks that run below their ceiling."""
        domains = [c for c in self.cpus if c.online is not False] + [d for d in (self.gpu, self.emc) if d]
        return [d.name for d in domains if d.at_max is False]

    @property
    def locked(self) -> bool | None:
        """Whether clocks are locked at their maximum, as ``jetson_clocks`` leaves them.

        True when every online CPU, the GPU and EMC (those known) run at their ceiling; None when
        no clock is known. This is what a latency comparison needs: DVFS left running makes the
        first iterations and idle-heavy workloads slower.
        """
        domains = [c for c in self.cpus if c.online is not False] + [d for d in (self.gpu, self.emc) if d]
        known = [d.at_max for d in domains if d.at_max is not None]
        if not known:
            return None
        return all(known)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary for a result record."""

        def dom(d: ClockDomain | None) -> dict[str, object] | None:
            if d is None:
                return None
            return {"min_hz": d.min_hz, "max_hz": d.max_hz, "current_hz": d.current_hz}

        online = [c for c in self.cpus if c.online is not False]
        return {
            "locked": self.locked,
            "below_max": self.below_max(),
            "source": self.source,
            "cpu_governors": sorted({c.governor for c in self.cpus if c.governor}),
            "cpus_online": len(online),
            "cpus_offline": len(self.cpus) - len(online),
            "cpu_max_hz": max((c.max_hz for c in online if c.max_hz is not None), default=None),
            "cpu_current_hz": [c.current_hz for c in online],
            "gpu": dom(self.gpu),
            "emc": dom(self.emc),
            "fan": dict(self.fan),
            "power_mode": self.power_mode,
        }


_KV_RE = re.compile(r"([A-Za-z_][\w]*)=(\S+)")


def _int(value: str | None, scale: int = 1) -> int | None:
    if value is None:
        return None
    try:
        return int(value) * scale
    except ValueError:
        return None


def _domain(name: str, body: str, scale: int = 1) -> ClockDomain:
    idle = ""
    if "IdleStates:" in body:
        body, idle = body.split("IdleStates:", 1)
    kv = dict(_KV_RE.findall(body))
    online = kv.pop("Online", None)
    governor = kv.pop("Governor", None) or kv.pop("Gonvernor", None)  # NVIDIA's typo on L4T 28
    extra = {k: v for k, v in kv.items() if k not in ("MinFreq", "MaxFreq", "CurrentFreq")}
    extra.update({f"idle_{k}": v for k, v in _KV_RE.findall(idle)})
    return ClockDomain(
        name=name,
        online=None if online is None else online == "1",
        governor=governor,
        min_hz=_int(kv.get("MinFreq"), scale),
        max_hz=_int(kv.get("MaxFreq"), scale),
        current_hz=_int(kv.get("CurrentFreq"), scale),
        extra=extra,
    )


def parse_jetson_clocks(text: str) -> JetsonClocks:
    """Parse ``jetson_clocks --show`` (also the L4T 28 ``jetson_clocks.sh --show``).

    CPU frequencies are printed in kHz and converted to Hz; GPU, EMC and engine clocks are
    already in Hz. Partial output (a truncated paste) parses to what it contains.
    """
    cpus: list[ClockDomain] = []
    engines: dict[str, ClockDomain] = {}
    fields: dict[str, Any] = {}
    unparsed: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := re.match(r"SOC family:(\S+)\s+Machine:(.*)$", line):
            fields["soc_family"], fields["machine"] = m.group(1), m.group(2).strip()
        elif m := re.match(r"Online CPUs:\s*(\S+)", line):
            fields["online_cpus"] = m.group(1)
        elif m := re.match(r"(cpu\d+):\s*(.*)$", line):
            cpus.append(_domain(m.group(1), m.group(2), scale=1000))
        elif m := re.match(r"GPU\s+(.*=.*)$", line):
            fields["gpu"] = _domain("GPU", m.group(1))
        elif m := re.match(r"EMC\s+(.*=.*)$", line):
            fields["emc"] = _domain("EMC", m.group(1))
        elif m := re.match(r"(?:FAN|Fan):?\s+(.*)$", line):
            fields["fan"] = dict(_KV_RE.findall(m.group(1)))
        elif m := re.match(r"NV Power Mode:\s*(.*)$", line):
            fields["power_mode"] = m.group(1).strip() or None
        elif m := re.match(r"([A-Z][A-Z0-9_]*):\s+(.*=.*)$", line):
            engines[m.group(1)] = _domain(m.group(1), m.group(2))
        elif line.startswith("CPU Cluster Switching:"):
            continue
        else:
            unparsed.append(line)
    cpus.sort(key=lambda c: int(c.name[3:]))
    return JetsonClocks(cpus=tuple(cpus), engines=engines, unparsed=tuple(unparsed), **fields)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _natural(path: Path) -> tuple[str, int]:
    m = re.search(r"(\d+)$", path.name)
    return (re.sub(r"\d+$", "", path.name), int(m.group(1)) if m else -1)


def read_clocks(root: Path = Path("/")) -> JetsonClocks | None:
    """The clock state from sysfs, readable without root (unlike ``jetson_clocks --show``).

    CPU cores come from cpufreq (``scaling_min/max/cur_freq``, kHz), the GPU from its devfreq node
    (Hz). EMC is only in debugfs, which needs root: it is read from
    ``sys/kernel/debug/bpmp/debug/clk/emc`` when readable and left None otherwise.

    Returns:
        The clocks, or None when no cpufreq directory exists under ``root``.
    """
    cpu_dirs = sorted((p for p in (root / "sys/devices/system/cpu").glob("cpu[0-9]*") if p.is_dir()), key=_natural)
    cpus = []
    for cpu in cpu_dirs:
        online_text = _read(cpu / "online")
        online = True if online_text is None else online_text == "1"  # cpu0 often has no 'online'
        freq = cpu / "cpufreq"
        if not freq.is_dir() and online:
            continue
        cpus.append(
            ClockDomain(
                name=cpu.name,
                online=online,
                governor=_read(freq / "scaling_governor"),
                min_hz=_scaled(_read_int(freq / "scaling_min_freq"), 1000),
                max_hz=_scaled(_read_int(freq / "scaling_max_freq"), 1000),
                current_hz=_scaled(_read_int(freq / "scaling_cur_freq"), 1000),
            )
        )
    gpu = None
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        if any(hint in dev.name for hint in GPU_DEVFREQ_HINTS):
            gpu = ClockDomain(
                name="GPU",
                governor=_read(dev / "governor"),
                min_hz=_read_int(dev / "min_freq"),
                max_hz=_read_int(dev / "max_freq"),
                current_hz=_read_int(dev / "cur_freq"),
                extra={"devfreq": dev.name},
            )
            break
    emc_dir = root / "sys/kernel/debug/bpmp/debug/clk/emc"
    emc = None
    rate = _read_int(emc_dir / "rate")
    if rate is not None:
        emc = ClockDomain(
            name="EMC", min_hz=_read_int(emc_dir / "min_rate"), max_hz=_read_int(emc_dir / "max_rate"), current_hz=rate
        )
    if not cpus and gpu is None:
        return None
    return JetsonClocks(cpus=tuple(cpus), gpu=gpu, emc=emc, source="sysfs")


def _scaled(value: int | None, scale: int) -> int | None:
    return None if value is None else value * scale


# --------------------------------------------------------------------------------------------
# thermal


@dataclass(frozen=True)
class ThermalZone:
    """One ``/sys/class/thermal/thermal_zoneN``.

    Attributes:
        zone: the directory name (``thermal_zone3``).
        type: the sensor name (``cpu-thermal``, ``tj-thermal``, ``x86_pkg_temp``).
        temp_c: current temperature; None when unreadable or the sensor is offline (-256 C).
        passive_trip_c: the lowest ``passive`` trip point: above it the kernel throttles clocks.
        critical_trip_c: the ``critical`` trip point (shutdown), when present.
    """

    zone: str
    type: str
    temp_c: float | None
    passive_trip_c: float | None = None
    critical_trip_c: float | None = None

    @property
    def over_passive_trip(self) -> bool:
        """True when the zone is at or above its passive trip point: it is being throttled."""
        if self.temp_c is None or self.passive_trip_c is None:
            return False
        return self.temp_c >= self.passive_trip_c


def read_thermal_zones(root: Path = Path("/")) -> list[ThermalZone]:
    """Every thermal zone under ``<root>/sys/class/thermal`` with its temperature and trip points.

    sysfs gives millidegrees Celsius; values are converted to degrees. Zones whose ``temp`` cannot
    be read (some return EINVAL or EAGAIN while their block sleeps) have ``temp_c=None``.
    """
    zones = []
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=_natural):
        kind = _read(zone / "type") or zone.name
        milli = _read_int(zone / "temp")
        temp = None if milli is None or milli / 1000.0 <= OFFLINE_TEMP_C else milli / 1000.0
        passive: list[float] = []
        critical: list[float] = []
        for trip_type in zone.glob("trip_point_*_type"):
            kind_of_trip = _read(trip_type)
            value = _read_int(trip_type.with_name(trip_type.name.replace("_type", "_temp")))
            if value is None:
                continue
            if kind_of_trip == "passive":
                passive.append(value / 1000.0)
            elif kind_of_trip == "critical":
                critical.append(value / 1000.0)
        zones.append(
            ThermalZone(
                zone=zone.name,
                type=kind,
                temp_c=temp,
                passive_trip_c=min(passive) if passive else None,
                critical_trip_c=min(critical) if critical else None,
            )
        )
    return zones


def temperatures_c(zones: Sequence[ThermalZone]) -> dict[str, float]:
    """``{type: degrees}`` for zones with a reading; a repeated type gets its zone name appended."""
    temps: dict[str, float] = {}
    for z in zones:
        if z.temp_c is None:
            continue
        key = z.type if z.type not in temps else f"{z.type} ({z.zone})"
        temps[key] = z.temp_c
    return temps


@dataclass(frozen=True)
class CoolingDevice:
    """One ``/sys/class/thermal/cooling_deviceN``: a fan, or a clock limiter when not a fan."""

    name: str
    type: str
    cur_state: int | None
    max_state: int | None

    @property
    def is_fan(self) -> bool:
        """Fans cool without slowing anything down; every other cooling device throttles."""
        return any(hint in self.type.lower() for hint in _FAN_COOLING_HINTS)


def read_cooling_devices(root: Path = Path("/")) -> list[CoolingDevice]:
    """Every cooling device with its current and maximum state."""
    return [
        CoolingDevice(
            name=dev.name,
            type=_read(dev / "type") or dev.name,
            cur_state=_read_int(dev / "cur_state"),
            max_state=_read_int(dev / "max_state"),
        )
        for dev in sorted((root / "sys/class/thermal").glob("cooling_device*"), key=_natural)
    ]


@dataclass(frozen=True)
class ThrottleState:
    """What can be read about thermal throttling right now.

    Attributes:
        throttled: True when a zone is over its passive trip or a non-fan cooling device is
            engaged; False when those were readable and show none; None when nothing was readable.
        reasons: one human-readable line per finding.
        cpus_capped: CPU cores whose ``scaling_max_freq`` is below ``cpuinfo_max_freq``. This is a
            hint only: nvpmodel caps clocks the same way, so it is not counted as throttling.
    """

    throttled: bool | None
    reasons: tuple[str, ...] = ()
    cpus_capped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"throttled": self.throttled, "reasons": list(self.reasons), "cpus_capped": list(self.cpus_capped)}


def read_throttling(root: Path = Path("/"), zones: Sequence[ThermalZone] | None = None) -> ThrottleState:
    """Throttling hints from thermal zones, cooling devices and cpufreq limits under ``root``.

    Args:
        root: filesystem root (a fake tree in tests).
        zones: already-read thermal zones, to avoid reading them twice.
    """
    zones = list(zones) if zones is not None else read_thermal_zones(root)
    devices = read_cooling_devices(root)
    reasons: list[str] = []
    for z in zones:
        if z.over_passive_trip:
            reasons.append(f"{z.type} at {z.temp_c:.1f} C is over its passive trip point {z.passive_trip_c:.1f} C")
    for dev in devices:
        if not dev.is_fan and dev.cur_state:
            reasons.append(f"cooling device {dev.type} engaged at state {dev.cur_state}/{dev.max_state}")
    capped = []
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*"), key=_natural):
        limit = _read_int(cpu / "cpufreq/scaling_max_freq")
        hw = _read_int(cpu / "cpufreq/cpuinfo_max_freq")
        if limit is not None and hw is not None and limit < hw:
            capped.append(cpu.name)
    readable = any(z.temp_c is not None for z in zones) or any(d.cur_state is not None for d in devices)
    return ThrottleState(
        throttled=bool(reasons) if readable else None, reasons=tuple(reasons), cpus_capped=tuple(capped)
    )


# --------------------------------------------------------------------------------------------
# running the tools


def run_tool(args: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """Run a read-only query tool (``nvpmodel -q``) and return stdout and stderr together.

    nvpmodel prints its ``NVPM ERROR`` lines on either stream depending on the release, so both are
    kept. Returns None when the tool is missing, hangs, or cannot be run.
    """
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or "") + (done.stderr or "")
