"""CPU package power on x86 from the RAPL energy counters in the powercap sysfs tree.

Each zone ``<root>/sys/class/powercap/intel-rapl:<n>[:<m>]`` has ``name`` (``package-0``,
``core``, ``uncore``, ``dram``, ``psys``), ``energy_uj`` (a running counter in microjoules) and
``max_energy_range_uj`` (where the counter wraps back to zero). Power is the counter's difference
over the time between two readings. AMD Zen CPUs register under the same ``intel-rapl`` type on
recent kernels.

Since Linux 5.10 (the PLATYPUS side channel, CVE-2020-8694) ``energy_uj`` is readable by root
only; an unreadable counter raises :class:`SensorUnavailable` with that explanation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import SensorError, SensorUnavailable

RAPL_RATE_HZ = 1000.0
"""RAPL counters update about every millisecond; a sampler polls them at its own slower rate."""

MIN_DELTA_S = 0.01
"""Shortest interval a power value is computed over: the counter's resolution (tens of uJ) makes
shorter differences mostly noise, so a reading waits until this much time has passed."""


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone.

    Attributes:
        label: ``package-0`` for a top-level zone, ``package-0/core`` for a subzone.
        path: the zone directory.
        max_energy_range_uj: the counter's range; it wraps to 0 past this value.
        top_level: True for ``intel-rapl:<n>``, False for ``intel-rapl:<n>:<m>``.
    """

    label: str
    path: Path
    max_energy_range_uj: int
    top_level: bool


def energy_delta_uj(old_uj: int, new_uj: int, max_range_uj: int) -> int:
    """Energy between two counter readings, across one wraparound if the counter wrapped.

    Args:
        old_uj: the earlier reading.
        new_uj: the later reading.
        max_range_uj: ``max_energy_range_uj`` of the zone.
    """
    if new_uj >= old_uj:
        return new_uj - old_uj
    return new_uj + max_range_uj - old_uj


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def find_zones(root: Path = Path("/")) -> list[RaplZone]:
    """Every ``intel-rapl`` zone under ``root``, parents before their subzones.

    ``/sys/class/powercap`` lists zones and subzones side by side; ``intel-rapl-mmio`` zones (a
    second view of the same package counter) are ignored so energy is not counted twice.

    Raises:
        SensorUnavailable: no zones, or a zone's ``name`` or range cannot be read.
    """
    base = root / "sys/class/powercap"
    dirs = sorted(
        (p for p in base.glob("intel-rapl:*") if p.is_dir()),
        key=lambda p: [int(x) for x in p.name.split(":")[1:] if x.isdigit()],
    )
    if not dirs:
        raise SensorUnavailable(
            f"no intel-rapl zones under {base}: not an x86 machine with RAPL, or the intel_rapl "
            "driver is not loaded (modprobe intel_rapl_common)"
        )
    labels: dict[str, str] = {}
    zones = []
    for path in dirs:
        parts = path.name.split(":")
        try:
            name = _read_text(path / "name")
            max_range = int(_read_text(path / "max_energy_range_uj"))
        except (OSError, ValueError) as exc:
            raise SensorUnavailable(f"cannot read RAPL zone {path}: {exc}") from exc
        parent = ":".join(parts[:-1])
        label = f"{labels[parent]}/{name}" if len(parts) > 2 and parent in labels else name
        labels[path.name] = label
        zones.append(RaplZone(label=label, path=path, max_energy_range_uj=max_range, top_level=len(parts) == 2))
    return zones


class RaplSource:
    """CPU package power from RAPL energy counters.

    ``read_mw`` gives each zone's mean power since the previous reading (the counters are
    energies, so nothing between readings is lost). ``"total"`` is the sum of the top-level
    ``package-*`` zones, or ``psys`` alone when there is no package zone; DRAM subzones and the
    rest of the platform are not in it.
    """

    name = "rapl"
    scope = "CPU package energy counters (RAPL); DRAM subzones, GPU and the rest of the platform not included"
    rate_hz = RAPL_RATE_HZ

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Find the zones and take a first counter reading.

        Args:
            root: filesystem root (a fake tree in tests).
            clock: monotonic clock in seconds; injectable for tests.
            sleep: used to wait out :data:`MIN_DELTA_S`; injectable for tests.

        Raises:
            SensorUnavailable: no RAPL zones, or the counters are not readable (root only).
        """
        self.root = root
        self._clock = clock
        self._sleep = sleep
        self.zones = find_zones(root)
        packages = [z.label for z in self.zones if z.top_level and z.label.startswith("package")]
        if packages:
            self._total = packages
        else:
            self._total = [z.label for z in self.zones if z.top_level and z.label == "psys"]
        self._last_uj = self.read_energy_uj()
        self._last_t = clock()

    def read_energy_uj(self) -> dict[str, int]:
        """The raw counters in microjoules, per zone label.

        Raises:
            SensorUnavailable: a counter is not readable (permission denied for non-root users).
        """
        counters = {}
        for zone in self.zones:
            path = zone.path / "energy_uj"
            try:
                counters[zone.label] = int(_read_text(path))
            except PermissionError as exc:
                raise SensorUnavailable(
                    f"{path} is readable by root only (Linux 5.10+, CVE-2020-8694): run as root, or "
                    "grant read access with `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj`"
                ) from exc
            except (OSError, ValueError) as exc:
                raise SensorError(f"cannot read {path}: {exc}") from exc
        return counters

    def rails(self) -> list[str]:
        """Zone labels, parents first."""
        return [z.label for z in self.zones]

    def total_rails(self) -> list[str]:
        """The zones summed into ``"total"``."""
        return list(self._total)

    def read_mw(self) -> dict[str, float]:
        """Mean power per zone in mW since the previous reading, plus ``"total"``.

        Waits up to :data:`MIN_DELTA_S` so the interval is long enough for the counter's
        resolution; returns ``{}`` if the clock did not advance.
        """
        now = self._clock()
        if now - self._last_t < MIN_DELTA_S:
            self._sleep(MIN_DELTA_S - (now - self._last_t))
            now = self._clock()
        dt_s = now - self._last_t
        if dt_s <= 0:
            return {}
        counters = self.read_energy_uj()
        ranges = {z.label: z.max_energy_range_uj for z in self.zones}
        power = {
            label: energy_delta_uj(self._last_uj[label], value, ranges[label]) / dt_s / 1000.0
            for label, value in counters.items()
        }
        self._last_uj, self._last_t = counters, now
        if self._total:
            power["total"] = sum(power[label] for label in self._total)
        return power

    def close(self) -> None:
        """Nothing to release: the counters are plain files."""
