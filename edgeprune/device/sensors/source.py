"""The power-source protocol, and detection of the sources a machine offers.

A :class:`PowerSource` reports instantaneous power per rail; :func:`detect_sources` returns
every one this machine has (jtop, tegrastats, NVML, RAPL: best first) and one line of reason for
each that is missing. How readings become energy per inference is
:mod:`edgeprune.device.measure.energy`.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from edgeprune.device.sensors.jtop import JtopSource
from edgeprune.device.sensors.nvml import NvmlSource
from edgeprune.device.sensors.rapl import RaplSource
from edgeprune.device.sensors.tegrastats import TegrastatsSource
from edgeprune.errors import SensorUnavailable

DEFAULT_INTERVAL_S = 0.1
"""10 Hz: fast enough to follow inference bursts on the INA3221 rails, cheap enough to ignore."""

TOTAL = "total"

Sample = tuple[float, Mapping[str, float]]
"""One reading: (monotonic time in s, {rail: mW})."""


@runtime_checkable
class PowerSource(Protocol):
    """Anything that reports instantaneous power per rail.

    Implementations: :class:`~edgeprune.device.sensors.tegrastats.TegrastatsSource`,
    :class:`~edgeprune.device.sensors.jtop.JtopSource`,
    :class:`~edgeprune.device.sensors.nvml.NvmlSource`,
    :class:`~edgeprune.device.sensors.rapl.RaplSource`.
    """

    @property
    def name(self) -> str:
        """Short source name for reports (``tegrastats``, ``jtop``, ``nvml:gpu0``, ``rapl``)."""
        ...

    @property
    def rate_hz(self) -> float:
        """The sensor's own update rate; a sampler never polls faster than this."""
        ...

    @property
    def scope(self) -> str:
        """One line on what the power covers and what it misses (e.g. the carrier board)."""
        ...

    def rails(self) -> list[str]:
        """Names of the rails :meth:`read_mw` reports (without ``"total"``)."""
        ...

    def total_rails(self) -> list[str]:
        """The rail(s) behind the ``"total"`` key; empty when the source has no total."""
        ...

    def read_mw(self) -> dict[str, float]:
        """Instantaneous power per rail in mW, plus ``"total"`` when known; ``{}`` if not ready."""
        ...

    def close(self) -> None:
        """Release whatever the source opened (a process, a connection, a library)."""
        ...


# --------------------------------------------------------------------------------------------
# detection


def _find_tegrastats(root: Path) -> str | None:
    for rel in ("usr/bin/tegrastats", "usr/sbin/tegrastats"):
        if (root / rel).is_file():
            return str(root / rel)
    return shutil.which("tegrastats") if root == Path("/") else None


def detect_sources(
    root: Path = Path("/"), *, interval_s: float = DEFAULT_INTERVAL_S
) -> tuple[list[PowerSource], list[str]]:
    """Every power source this machine offers, best first, and why each other one is missing.

    Order: jtop (the service's own sampling), tegrastats, NVML, RAPL. jtop and tegrastats are
    returned unstarted: they connect or spawn on first reading, so detection has no side effects
    on a Jetson. NVML is probed only when ``root`` is the live system. The caller closes the
    sources it was given.

    Args:
        root: filesystem root; a fake tree in tests.
        interval_s: the interval jtop and tegrastats are asked to sample at.

    Returns:
        The available sources, and one ``"<source>: <reason>"`` line per unavailable one.
    """
    sources: list[PowerSource] = []
    reasons: list[str] = []
    sock = root / "run/jtop.sock"
    if not sock.exists():
        reasons.append(
            "jtop: no /run/jtop.sock; the jetson-stats service is not running (not a Jetson, "
            "or install jetson-stats and enable jtop.service)"
        )
    elif importlib.util.find_spec("jtop") is None:
        reasons.append("jtop: the service is running but the client is not installed: pip install 'edgeprune[jetson]'")
    else:
        sources.append(JtopSource(interval_s=interval_s))
    exe = _find_tegrastats(root)
    if exe is None:
        reasons.append("tegrastats: not found (not a Jetson)")
    else:
        sources.append(TegrastatsSource.from_command(exe, interval_ms=max(1, round(interval_s * 1000))))
    if root != Path("/"):
        reasons.append("nvml: probed only on the live system")
    else:
        nvml = NvmlSource()
        try:
            nvml.open()
            sources.append(nvml)
        except (SensorUnavailable, ImportError) as exc:
            reasons.append(f"nvml: {exc}")
    try:
        sources.append(RaplSource(root))
    except SensorUnavailable as exc:
        reasons.append(f"rapl: {exc}")
    return sources, reasons
