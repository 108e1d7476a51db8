"""Parse ``tegrastats`` lines, and follow a running ``tegrastats`` as a power source.

``tegrastats`` is on every Jetson and needs no extra package, but its line format changed with
almost every L4T release. :func:`parse_line` accepts all the formats recorded from real boards:

- L4T 28.1 (TX1): ``cpu [17%,13%,29%,5%]@408 EMC 1%@408 APE 25 GR3D 3%@76``, no rails.
- L4T 28.2 / 32.x (TX2, Nano, Xavier, JetPack 4): ``CPU [x%@MHz,off,..]``, ``EMC_FREQ x%@MHz``,
  ``GR3D_FREQ x%@MHz`` (or ``@MHz`` without a load), ``MTS fg x% bg y%``, rails as ``cur/avg`` in
  mW without a unit (``VDD_IN 1931/1931``, ``POM_5V_IN 920/920``, AGX Xavier's ``GPU 463/463``).
- JetPack 5 / 6 (Xavier NX, Orin): a ``MM-DD-YYYY HH:MM:SS`` prefix, rails as ``5000mW/5000mW``,
  ``GR3D_FREQ 39%@[305,0]`` (one frequency per GPC), engine fields such as ``NVENC off``,
  ``VIC_FREQ 729``, ``-256C`` for a sensor that is powered off.
- JetPack 7 (AGX Orin R39, Thor): rails with three values ``a mW/b mW/c mW``, temperatures as
  ``cpu@52.968C/52.968C``, ``GR3D_FREQ @[314,314,314]``.
- Non-root runs and some boards print no rails at all: the sample then has an empty ``rails``.

Nothing unknown is dropped silently: tokens the grammar does not recognise are kept in
:attr:`TegrastatsSample.unparsed`.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from edgeprune.errors import SensorError, SensorUnavailable

TOTAL_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Rails that measure the whole module's input, in order of preference.

``VDD_IN`` (TX2, Xavier NX, Orin NX/Nano), ``POM_5V_IN`` (Nano) and ``VIN`` (Thor's INA238).
AGX Orin and AGX Xavier have no such rail: their rails have to be summed, and the sum still
misses part of the module.
"""

OFFLINE_TEMP_C = -256.0
"""Jetson thermal sensors report -256 C while their block is powered off."""

_UNIT_TO_KB = {"": 1 / 1024, "k": 1.0, "M": 1024.0, "G": 1024.0 * 1024.0}  # bare "B" is bytes

_TIMESTAMP_RE = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)([kMG]?)B(?:\s*\(lfb (\d+)x(\d+)([kMG]?)B\))?")
_SWAP_RE = re.compile(r"\bSWAP (\d+)/(\d+)([kMG]?)B(?:\s*\(cached (\d+)([kMG]?)B\))?")
_IRAM_RE = re.compile(r"\bIRAM (\d+)/(\d+)([kMG]?)B(?:\s*\(lfb (\d+)([kMG]?)B\))?")
_CPU_RE = re.compile(r"\b[Cc][Pp][Uu] \[([^\]]*)\](?:@(\d+))?")
_MTS_RE = re.compile(r"\bMTS fg (\d+)% bg (\d+)%")
_TEMP_RE = re.compile(r"^([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?$")
_NUM = r"(\d+(?:\.\d+)?)"
_RAIL_VALUE_RE = re.compile(rf"^{_NUM}(?:mW)?/{_NUM}(?:mW)?(?:/{_NUM}(?:mW)?)?$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ENGINE_VALUE_RE = re.compile(
    r"^(?:(?P<off>off)"
    r"|(?:(?P<load>\d+)%)?@\[(?P<freqs>[\d,]+)\]"
    r"|(?:(?P<load2>\d+)%)?@(?P<freq>\d+)"
    r"|(?P<load3>\d+)%"
    r"|(?P<plain>\d+))$"
)
_CPU_CORE_RE = re.compile(r"^(?:(\d+)%)?(?:@(\d+))?$")


@dataclass(frozen=True)
class CpuCore:
    """One CPU core as tegrastats prints it.

    Attributes:
        online: False when tegrastats prints ``off`` (core hot-unplugged, e.g. by nvpmodel).
        load_pct: busy share since the previous line, relative to the current frequency.
        freq_mhz: the core's current frequency.
    """

    online: bool
    load_pct: int | None = None
    freq_mhz: int | None = None


@dataclass(frozen=True)
class EngineReading:
    """A hardware engine field: EMC, GR3D (the GPU), APE, NVENC, VIC, NVDLA, ...

    Attributes:
        online: False when the engine is printed as ``off``.
        load_pct: busy share, when printed (non-root JetPack 5 prints ``GR3D_FREQ 22%`` alone).
        freqs_mhz: the frequency, or one per GPC for ``GR3D_FREQ x%@[a,b]``; empty when absent.
    """

    online: bool
    load_pct: int | None = None
    freqs_mhz: tuple[int, ...] = ()

    @property
    def freq_mhz(self) -> int | None:
        """The first (or only) frequency, which is what single-GPC boards report."""
        return self.freqs_mhz[0] if self.freqs_mhz else None


@dataclass(frozen=True)
class RailReading:
    """One power rail.

    Attributes:
        cur_mw: instantaneous power at the time of the line: the only value fit for integration.
        avg_mw: tegrastats' running average since it started; kept for display, never integrated.
        extra_mw: the third value JetPack 7 prints (``a mW/b mW/c mW``). The documentation we could
            read does not define it (it looks like a peak); it is kept and never used.
    """

    cur_mw: float
    avg_mw: float
    extra_mw: float | None = None


@dataclass(frozen=True)
class TegrastatsSample:
    """Everything one tegrastats line says. Absent fields are ``None`` or empty, never guessed.

    Memory is in MB (``lfb`` block size in kB), frequencies in MHz, temperatures in degrees
    Celsius, power in mW, exactly as tegrastats prints them.
    """

    timestamp: datetime | None = None
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    lfb_blocks: int | None = None
    lfb_block_kb: float | None = None
    swap_used_mb: float | None = None
    swap_total_mb: float | None = None
    swap_cached_mb: float | None = None
    iram_used_kb: float | None = None
    iram_total_kb: float | None = None
    cpus: tuple[CpuCore, ...] = ()
    mts_fg_pct: int | None = None
    mts_bg_pct: int | None = None
    engines: dict[str, EngineReading] = field(default_factory=dict)
    temperatures_c: dict[str, float] = field(default_factory=dict)
    temperature_extra_c: dict[str, float] = field(default_factory=dict)
    offline_sensors: tuple[str, ...] = ()
    rails: dict[str, RailReading] = field(default_factory=dict)
    unparsed: tuple[str, ...] = ()

    @property
    def emc(self) -> EngineReading | None:
        """The memory controller (``EMC_FREQ``, or ``EMC`` on L4T 28.1)."""
        return self.engines.get("EMC_FREQ") or self.engines.get("EMC")

    @property
    def gr3d(self) -> EngineReading | None:
        """The GPU (``GR3D_FREQ``, or ``GR3D`` on L4T 28.1)."""
        return self.engines.get("GR3D_FREQ") or self.engines.get("GR3D")

    @property
    def total_rail(self) -> str | None:
        """The rail that measures the module input, or None when the board has none."""
        return next((name for name in TOTAL_INPUT_RAILS if name in self.rails), None)

    def power_mw(self) -> dict[str, float]:
        """Instantaneous power per rail, plus ``"total"`` when a module-input rail exists."""
        power = {name: rail.cur_mw for name, rail in self.rails.items()}
        total = self.total_rail
        if total is not None:
            power["total"] = power[total]
        return power


def _to_mb(value: str, unit: str) -> float:
    return float(value) * _UNIT_TO_KB[unit] / 1024.0


def _to_kb(value: str, unit: str) -> float:
    return float(value) * _UNIT_TO_KB[unit]


def _parse_cpus(body: str, shared_freq: str | None) -> tuple[CpuCore, ...]:
    cores = []
    for item in body.split(","):
        item = item.strip()
        if item == "off":
            cores.append(CpuCore(online=False))
            continue
        match = _CPU_CORE_RE.match(item)
        if not match or not item:
            cores.append(CpuCore(online=True))
            continue
        load, freq = match.group(1), match.group(2) or shared_freq
        cores.append(
            CpuCore(
                online=True,
                load_pct=int(load) if load is not None else None,
                freq_mhz=int(freq) if freq is not None else None,
            )
        )
    return tuple(cores)


def _parse_engine(match: re.Match[str]) -> EngineReading:
    if match.group("off"):
        return EngineReading(online=False)
    if match.group("freqs") is not None:
        load = match.group("load")
        freqs = tuple(int(f) for f in match.group("freqs").split(",") if f)
        return EngineReading(True, int(load) if load is not None else None, freqs)
    if match.group("freq") is not None:
        load = match.group("load2")
        return EngineReading(True, int(load) if load is not None else None, (int(match.group("freq")),))
    if match.group("load3") is not None:
        return EngineReading(True, int(match.group("load3")))
    return EngineReading(True, None, (int(match.group("plain")),))


def _unique(name: str, taken: Mapping[str, object]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}#{n}" in taken:
        n += 1
    return f"{name}#{n}"


def parse_line(line: str) -> TegrastatsSample:
    """Parse one tegrastats line of any known L4T format.

    Rails named ``NC`` (not connected INA3221 channels on AGX Orin) are dropped, as jetson-stats
    does; a rail name printed twice gets a ``#2`` suffix rather than overwriting the first.

    Args:
        line: one line of tegrastats output, with or without its timestamp prefix.

    Returns:
        The parsed sample; tokens that match no known field are listed in ``unparsed``.
    """
    text = line.strip()
    values: dict[str, Any] = {}
    ts = _TIMESTAMP_RE.match(text)
    if ts:
        try:
            values["timestamp"] = datetime.strptime(ts.group(1), "%m-%d-%Y %H:%M:%S")
        except ValueError:
            pass
        text = text[ts.end() :]

    spans: list[tuple[int, int]] = []
    if m := _RAM_RE.search(text):
        values["ram_used_mb"] = _to_mb(m.group(1), m.group(3))
        values["ram_total_mb"] = _to_mb(m.group(2), m.group(3))
        if m.group(4) is not None:
            values["lfb_blocks"] = int(m.group(4))
            values["lfb_block_kb"] = _to_kb(m.group(5), m.group(6))
        spans.append(m.span())
    if m := _SWAP_RE.search(text):
        values["swap_used_mb"] = _to_mb(m.group(1), m.group(3))
        values["swap_total_mb"] = _to_mb(m.group(2), m.group(3))
        if m.group(4) is not None:
            values["swap_cached_mb"] = _to_mb(m.group(4), m.group(5))
        spans.append(m.span())
    if m := _IRAM_RE.search(text):
        values["iram_used_kb"] = _to_kb(m.group(1), m.group(3))
        values["iram_total_kb"] = _to_kb(m.group(2), m.group(3))
        spans.append(m.span())
    if m := _CPU_RE.search(text):
        values["cpus"] = _parse_cpus(m.group(1), m.group(2))
        spans.append(m.span())
    if m := _MTS_RE.search(text):
        values["mts_fg_pct"], values["mts_bg_pct"] = int(m.group(1)), int(m.group(2))
        spans.append(m.span())
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + " " + text[end:]

    engines: dict[str, EngineReading] = {}
    temps: dict[str, float] = {}
    temps_extra: dict[str, float] = {}
    offline: list[str] = []
    rails: dict[str, RailReading] = {}
    unparsed: list[str] = []
    tokens = text.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if t := _TEMP_RE.match(token):
            name, value = t.group(1), float(t.group(2))
            if value <= OFFLINE_TEMP_C:
                offline.append(name)
            else:
                temps[_unique(name, temps)] = value
                if t.group(3) is not None:
                    temps_extra[name] = float(t.group(3))
            i += 1
        elif _NAME_RE.match(token) and (r := _RAIL_VALUE_RE.match(nxt)):
            if token != "NC":
                extra = float(r.group(3)) if r.group(3) is not None else None
                rails[_unique(token, rails)] = RailReading(float(r.group(1)), float(r.group(2)), extra)
            i += 2
        elif _NAME_RE.match(token) and (e := _ENGINE_VALUE_RE.match(nxt)):
            engines[_unique(token, engines)] = _parse_engine(e)
            i += 2
        else:
            unparsed.append(token)
            i += 1
    return TegrastatsSample(
        **values,
        engines=engines,
        temperatures_c=temps,
        temperature_extra_c=temps_extra,
        offline_sensors=tuple(offline),
        rails=rails,
        unparsed=tuple(unparsed),
    )


def parse_lines(text: str) -> list[TegrastatsSample]:
    """Parse every non-empty line of a tegrastats log (``tegrastats --logfile`` output)."""
    return [parse_line(line) for line in text.splitlines() if line.strip()]


class TegrastatsSource:
    """Power from a running ``tegrastats``, one parsed line at a time.

    tegrastats prints at its own interval (``--interval`` ms, 1000 by default): that interval
    is this source's rate, and a sampler should not poll faster. Lines come from any text stream
    (a subprocess's stdout, a pipe, a test's list) read on a background thread, or are pushed with
    :meth:`feed`. :meth:`read_mw` returns the newest line's instantaneous (``cur``) rail values;
    tegrastats' own averages are never used.

    A reading older than three intervals raises :class:`SensorError` instead of repeating a
    stale value, and lines without any rail raise :class:`SensorUnavailable`: both end up as
    ``null`` with a reason in the energy report.

    A sampler timestamps a reading when it takes it; the line itself may be up to one interval
    older. That shifts the power curve by at most one interval, which matters only for windows
    not much longer than the interval: run tegrastats at ``--interval 100`` (what
    :meth:`from_command` defaults to) and time windows of seconds.
    """

    name = "tegrastats"
    scope = (
        "on-module INA3221/INA238 rails as printed by tegrastats; the carrier board and anything on it are not included"
    )

    def __init__(
        self,
        stream: Iterable[str] | None = None,
        *,
        interval_ms: int = 1000,
        command: Sequence[str] | None = None,
        first_line_timeout_s: float | None = None,
    ) -> None:
        """Create the source.

        Args:
            stream: lines to follow on a background thread; None to use :meth:`feed` or ``command``.
            interval_ms: the interval tegrastats was started with; it sets :attr:`rate_hz`.
            command: a tegrastats command to start on first use (see :meth:`from_command`).
            first_line_timeout_s: how long the first :meth:`read_mw` waits for a line when
                following a stream; defaults to two intervals plus one second.
        """
        if interval_ms <= 0:
            raise SensorError(f"tegrastats interval must be positive, got {interval_ms} ms")
        self.interval_ms = interval_ms
        self._command = list(command) if command else None
        self._stream = stream
        self._lock = threading.Lock()
        self._first_line = threading.Event()
        self._latest: TegrastatsSample | None = None
        self._latest_t = 0.0
        self._ended = False
        self._reader: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None
        self._timeout_s = first_line_timeout_s if first_line_timeout_s is not None else 2 * interval_ms / 1000 + 1.0
        self.lines_read = 0

    @classmethod
    def from_command(cls, executable: str = "tegrastats", interval_ms: int = 100) -> TegrastatsSource:
        """A source that starts ``tegrastats --interval <ms>`` on first use and stops it on close.

        Nothing is started until the first :meth:`read_mw` or :meth:`rails`, so a source can be
        offered without side effects.
        """
        return cls(interval_ms=interval_ms, command=[executable, "--interval", str(interval_ms)])

    @property
    def rate_hz(self) -> float:
        """tegrastats' own print rate: one line per interval."""
        return 1000.0 / self.interval_ms

    @property
    def latest(self) -> TegrastatsSample | None:
        """The newest parsed line, or None before the first."""
        with self._lock:
            return self._latest

    def feed(self, line: str) -> TegrastatsSample | None:
        """Parse one line and make it the current reading; blank lines are ignored."""
        if not line.strip():
            return None
        sample = parse_line(line)
        with self._lock:
            self._latest = sample
            self._latest_t = time.monotonic()
            self.lines_read += 1
        self._first_line.set()
        return sample

    def _follow(self, stream: Iterable[str]) -> None:
        try:
            for line in stream:
                self.feed(line)
        except (OSError, ValueError):  # the stream was closed under us: treat as its end
            pass
        finally:
            with self._lock:
                self._ended = True

    def _ensure_started(self) -> None:
        if self._reader is not None:
            return
        stream: Iterable[str] | None = self._stream
        if stream is None and self._command is not None:
            try:
                self._process = subprocess.Popen(
                    self._command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
                )
            except OSError as exc:
                raise SensorUnavailable(f"cannot start {' '.join(self._command)}: {exc}") from exc
            out: IO[str] | None = self._process.stdout
            stream = out
        if stream is None:
            return
        self._reader = threading.Thread(target=self._follow, args=(stream,), name="tegrastats-reader", daemon=True)
        self._reader.start()

    def rails(self) -> list[str]:
        """Rail names of the newest line (empty before the first line)."""
        self._ensure_started()
        sample = self.latest
        if sample is None and self._reader is not None:
            self._first_line.wait(self._timeout_s)
            sample = self.latest
        return list(sample.rails) if sample else []

    def total_rails(self) -> list[str]:
        """The module-input rail behind ``"total"``, when this board has one."""
        sample = self.latest
        total = sample.total_rail if sample else None
        return [total] if total else []

    def read_mw(self) -> dict[str, float]:
        """Instantaneous power per rail (mW) from the newest line, plus ``"total"`` if known.

        Raises:
            SensorUnavailable: the lines carry no power rails (non-root run on some releases).
            SensorError: tegrastats printed nothing, stopped, or its newest line is stale.
        """
        self._ensure_started()
        if self.latest is None and self._reader is not None:
            if not self._first_line.wait(self._timeout_s):
                raise SensorError(
                    f"tegrastats printed no line in {self._timeout_s:.1f} s; check that it runs on this board"
                )
        with self._lock:
            sample, when, ended = self._latest, self._latest_t, self._ended
        if sample is None:
            if ended:
                raise SensorError("the tegrastats stream ended before printing a line")
            return {}
        age_s = time.monotonic() - when
        max_age_s = max(3 * self.interval_ms / 1000, 0.5)
        if self._reader is not None and (ended or age_s > max_age_s):
            raise SensorError(f"tegrastats stopped printing (newest line is {age_s:.1f} s old); its readings are stale")
        if not sample.rails:
            raise SensorUnavailable(
                "tegrastats prints no power rails here (some boards and L4T "
                "releases show them only to root); run as root or use jtop"
            )
        return sample.power_mw()

    def close(self) -> None:
        """Stop the tegrastats process this source started, if any."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
        if self._reader is not None:
            self._reader.join(timeout=1.0)
