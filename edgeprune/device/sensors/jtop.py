"""Power from jetson-stats (``jtop``), the service most Jetson users already run.

The ``jtop`` package is imported only inside :meth:`JtopSource.connect`; everything else works on
the plain dicts jtop hands out, so it is tested against recorded ``print(jetson.power)`` and
``print(jetson.stats)`` output.

``j.power`` has the shape ``{'rail': {name: {'volt', 'curr', 'power', 'avg', 'warn', 'crit',
'online'}}, 'tot': {..., 'name': 'VDD_IN'}}`` with power in mW. When the board has a
module-input rail (``VDD_IN``, ``POM_5V_IN``), jtop moves it out of ``rail`` into ``tot`` and
names it; otherwise ``tot`` is jtop's sum of all rails and has no ``name``.

The ``avg`` fields are never used: jtop computes them as ``(new + old) // 2``, a smoothing with
weight one half, not a mean over any window. Energy comes from integrating ``power`` ourselves.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import SensorError, SensorUnavailable, missing

OFFLINE_TEMP_C = -256.0


@dataclass(frozen=True)
class JtopPower:
    """Instantaneous power from one jtop reading.

    Attributes:
        rails_mw: power per online rail in mW, the module-input rail included under its own name.
        total_mw: the module-input rail's power, or None when the board has no such rail.
        total_rail: that rail's name (``VDD_IN``), or None.
        jtop_sum_mw: jtop's own total when it summed the rails itself (no named input rail).
    """

    rails_mw: dict[str, float] = field(default_factory=dict)
    total_mw: float | None = None
    total_rail: str | None = None
    jtop_sum_mw: float | None = None

    def power_mw(self) -> dict[str, float]:
        """Per-rail power plus ``"total"`` when a module-input rail is known."""
        power = dict(self.rails_mw)
        if self.total_mw is not None:
            power["total"] = self.total_mw
        return power


def power_from_jtop(power: Mapping[str, Any]) -> JtopPower:
    """Convert ``j.power`` to instantaneous rail powers, ignoring every ``avg`` field.

    Rails marked ``online: False`` are left out.
    """
    rails: dict[str, float] = {}
    for name, values in (power.get("rail") or {}).items():
        if not isinstance(values, Mapping) or values.get("online") is False or "power" not in values:
            continue
        rails[str(name)] = float(values["power"])
    tot = power.get("tot") or {}
    total_mw: float | None = None
    total_rail: str | None = None
    jtop_sum: float | None = None
    if isinstance(tot, Mapping) and "power" in tot:
        if tot.get("name"):
            total_rail = str(tot["name"])
            total_mw = float(tot["power"])
            rails[total_rail] = total_mw
        else:
            jtop_sum = float(tot["power"])
    return JtopPower(rails_mw=rails, total_mw=total_mw, total_rail=total_rail, jtop_sum_mw=jtop_sum)


def power_from_stats(stats: Mapping[str, Any]) -> JtopPower:
    """Rail powers from the flat ``j.stats`` dict (``Power <rail>``, ``Power TOT``, in mW).

    ``j.stats`` does not say whether ``Power TOT`` is a real input rail or jtop's sum, so it is
    reported as ``jtop_sum_mw`` and never as a named total. jtop 2.x printed ``power cur`` instead.
    """
    rails: dict[str, float] = {}
    total: float | None = None
    for key, value in stats.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key == "Power TOT" or key == "power cur":
            total = float(value)
        elif key.startswith("Power "):
            rails[key[len("Power ") :]] = float(value)
    return JtopPower(rails_mw=rails, jtop_sum_mw=total)


def state_from_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance facts in ``j.stats``: nvpmodel mode, jetson_clocks, temperatures in C.

    Sensors reading -256 C (powered-off blocks) are listed as offline, not as temperatures.
    """
    clocks = stats.get("jetson_clocks")
    temps: dict[str, float] = {}
    offline: list[str] = []
    for key, value in stats.items():
        if key.startswith("Temp ") and isinstance(value, (int, float)):
            if float(value) <= OFFLINE_TEMP_C:
                offline.append(key[5:])
            else:
                temps[key[5:]] = float(value)
    return {
        "nvpmodel": stats.get("nvp model"),
        "jetson_clocks": None if clocks is None else str(clocks).upper() == "ON",
        "temperatures_c": temps,
        "offline_sensors": offline,
    }


_CALL_RE = re.compile(r"\b(?:datetime\.)?(?:datetime|timedelta|date)\([^()]*\)")


def parse_printed_dict(text: str) -> dict[str, Any]:
    """Parse a dict printed with ``print(jetson.stats)`` or ``print(jetson.power)``.

    ``datetime(...)`` and ``timedelta(...)`` values become their text, so the rest can be read with
    :func:`ast.literal_eval` and nothing is executed.

    Raises:
        SensorError: the text is not a printed dict.
    """
    cleaned = _CALL_RE.sub(lambda m: repr(m.group(0)), text.strip())
    try:
        value = ast.literal_eval(cleaned)
    except (ValueError, SyntaxError) as exc:
        raise SensorError(f"not a printed jtop dict: {exc}") from exc
    if not isinstance(value, dict):
        raise SensorError("not a printed jtop dict")
    return value


def parse_stats_csv(text: str) -> dict[str, Any]:
    """Parse ``<key>, <value>`` lines, the way jtop 2.x stats were commonly logged.

    Numbers become floats; everything else stays text. A ``<key>, <value>`` header is skipped.
    """
    stats: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(",")
        key, value = key.strip(), value.strip()
        if not sep or not key or key == "<key>":
            continue
        try:
            stats[key] = float(value)
        except ValueError:
            stats[key] = value
    return stats


class JtopSource:
    """Power from a jtop client (``jtop.jtop``), passed in or connected on first use.

    The rate is the jtop service's interval, read from ``client.interval``: a running service keeps
    its own interval whatever a client asks for, so the requested one is only a fallback.
    """

    name = "jtop"
    scope = (
        "on-module INA3221 rails read by the jetson-stats service; the carrier board and "
        "anything on it are not included"
    )

    def __init__(self, client: Any | None = None, *, interval_s: float = 0.1) -> None:
        """Wrap a jtop client.

        Args:
            client: a started ``jtop.jtop`` object (or anything with ``.power`` and ``.interval``);
                None to connect lazily with :meth:`connect` on first use.
            interval_s: the interval to ask for when connecting, in seconds.
        """
        self._client = client
        self._owns_client = False
        self.interval_s = interval_s
        self._total_rail: str | None = None

    def connect(self) -> Any:
        """Start a jtop client if none was given, and return it.

        Raises:
            MissingDependencyError: jetson-stats is not installed.
            SensorUnavailable: the jtop service is not running or refuses the connection.
        """
        if self._client is not None:
            return self._client
        try:
            import jtop
        except ImportError as exc:
            raise missing("jtop", "jetson") from exc
        client = jtop.jtop(interval=self.interval_s)
        try:
            client.start()
        except Exception as exc:  # jtop raises its own JtopException for service/version problems
            raise SensorUnavailable(
                f"cannot connect to the jtop service ({exc}); check `systemctl status jtop.service` "
                "and that the jetson-stats versions of service and client match"
            ) from exc
        self._client = client
        self._owns_client = True
        return client

    @property
    def rate_hz(self) -> float:
        """The service's update rate, from its real interval when known."""
        interval = getattr(self._client, "interval", None) if self._client is not None else None
        try:
            interval_s = float(interval) if interval is not None else self.interval_s
        except (TypeError, ValueError):
            interval_s = self.interval_s
        return 1.0 / interval_s if interval_s > 0 else 0.0

    def _power(self) -> JtopPower:
        client = self.connect()
        power = getattr(client, "power", None)
        if not power:
            raise SensorUnavailable("jtop reports no power rails on this board")
        reading = power_from_jtop(power)
        self._total_rail = reading.total_rail
        return reading

    def rails(self) -> list[str]:
        """Names of the online rails (the module-input rail included)."""
        return list(self._power().rails_mw)

    def total_rails(self) -> list[str]:
        """The module-input rail behind ``"total"``, when the board has one."""
        return [self._total_rail] if self._total_rail else []

    def read_mw(self) -> dict[str, float]:
        """Instantaneous power per rail in mW (never jtop's ``avg``), plus ``"total"`` if known."""
        return self._power().power_mw()

    def close(self) -> None:
        """Close the client if this source started it."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
            self._owns_client = False
