"""Pure parsers for what TensorRT prints: build logs, trtexec summaries, engine-inspector JSON.

Nothing here imports TensorRT or touches a GPU, so every parser is tested on any machine against
real recorded output (``tests/fixtures/trt``). The parsers are deliberately tolerant of the ways
the same text reaches us:

- log lines may carry any mix of prefixes: a trtexec timestamp ``[09/16/2022-09:55:37]``, a level
  ``[I]``/``[W]``/``[V]``/``[E]``, a ``[TRT]`` tag, or the Python logger's ``[TensorRT] INFO:``;
  a user may also have stripped them all;
- a long list (the sparsity report prints every layer name on one line) may have been hard-wrapped
  by a terminal in the middle of a name, so continuation lines are joined without a separator;
- fields a TensorRT version does not print are ``None``, never a guess.

Three reports matter for the question "did 2:4 sparsity pay off, and where":

1. :func:`parse_sparsity` reads the build log's ``(Sparsity) Layers eligible for sparse math`` and
   ``(Sparsity) TRT inference plan picked sparse implementation for layers`` lists. A layer that is
   eligible but not picked means the builder timed a dense kernel as faster.
2. :func:`parse_trtexec` reads trtexec's performance summary (throughput, latency statistics,
   warnings such as an unstable coefficient of variation).
3. :func:`parse_layer_info` reads the engine inspector's per-layer JSON (also what
   ``trtexec --exportLayerInfo`` writes), handling TensorRT 10's ``Bindings`` and TensorRT 11's
   ``I/O Tensors``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------
# Line prefixes
# --------------------------------------------------------------------------------------------

# One prefix token at the start of a line; stripped repeatedly, in any order.
_PREFIX_TOKEN = re.compile(
    r"""^\s*(?:
        \[\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2}(?:\.\d+)?\]      # trtexec timestamp
      | \[\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\]  # ISO timestamp
      | \[(?P<letter>[IWEVF])\]                               # trtexec / logger level letter
      | \[(?:TRT|TensorRT)\]                                  # TensorRT tag
      | (?P<word>INTERNAL_ERROR|ERROR|WARNING|WARN|INFO|VERBOSE):(?=\s|$)  # Python logger level
    )""",
    re.VERBOSE,
)
_LEVEL_WORDS = {"INTERNAL_ERROR": "F", "ERROR": "E", "WARNING": "W", "WARN": "W", "INFO": "I", "VERBOSE": "V"}


def strip_log_prefix(line: str) -> tuple[str | None, str, bool]:
    """Remove TensorRT/trtexec log prefixes from one line.

    Returns:
        ``(level, content, had_prefix)``: the level letter (``I``, ``W``, ``E``, ``V``, ``F``) if
        the line named one, the text after the prefixes with surrounding whitespace removed, and
        whether any prefix was found (a line without one may be a wrapped continuation).
    """
    level: str | None = None
    rest = line
    had_prefix = False
    while True:
        match = _PREFIX_TOKEN.match(rest)
        if match is None or match.end() == 0:
            break
        had_prefix = True
        if match.group("letter"):
            level = match.group("letter")
        elif match.group("word"):
            level = _LEVEL_WORDS[match.group("word")]
        rest = rest[match.end() :]
    return level, rest.strip(), had_prefix


def _starts_record(line: str) -> bool:
    """Whether a raw line begins a new log record (as opposed to continuing a wrapped one)."""
    _, content, had_prefix = strip_log_prefix(line)
    return had_prefix or content.startswith(("&&&&", "===", "(Sparsity)"))


# --------------------------------------------------------------------------------------------
# Sparsity report (build log)
# --------------------------------------------------------------------------------------------

_ELIGIBLE = "(Sparsity) Layers eligible for sparse math:"
_PICKED = "(Sparsity) TRT inference plan picked sparse implementation for layers:"


@dataclass(frozen=True)
class SparsityReport:
    """What the TensorRT builder said about 2:4 sparse kernels.

    Attributes:
        eligible: layers whose weights follow the 2:4 pattern, in log order.
        picked: layers for which the builder kept a sparse kernel.
        not_picked: eligible layers that were not picked: the dense kernel timed faster there.
        reported: whether the build log contained the sparsity report at all. ``False`` means the
            log says nothing (sparsity was off, or the log level hid INFO lines): the empty lists
            are then *unknown*, not "no layer qualified".
    """

    eligible: list[str] = field(default_factory=list)
    picked: list[str] = field(default_factory=list)
    not_picked: list[str] = field(default_factory=list)
    reported: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparsityReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            eligible=list(data.get("eligible", [])),
            picked=list(data.get("picked", [])),
            not_picked=list(data.get("not_picked", [])),
            reported=bool(data.get("reported", False)),
        )


def _split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _collect_list(lines: list[str], index: int, marker: str) -> tuple[str, int]:
    """Return the list text after ``marker`` on ``lines[index]`` joined with wrapped continuations.

    Continuations are joined with no separator: a terminal wraps at a fixed column, often in the
    middle of a layer name (``Mat`` / ``Mul_139``), so inserting a space would invent two names.
    """
    _, content, _ = strip_log_prefix(lines[index])
    text = content.split(marker, 1)[1]
    end = index + 1
    while end < len(lines) and lines[end].strip() and not _starts_record(lines[end]):
        text += lines[end].rstrip("\r\n")
        end += 1
    return text, end


def parse_sparsity(log_text: str) -> SparsityReport:
    """Parse the builder's sparsity report out of a build log.

    When a log holds several builds (several reports), the last report wins: it belongs to the
    engine that was written last.

    Args:
        log_text: a TensorRT build log, from trtexec or from a Python ``ILogger``, with or without
            timestamps and level prefixes.

    Returns:
        The eligible and picked layers; ``not_picked`` is computed as eligible minus picked.
    """
    lines = log_text.splitlines()
    eligible: list[str] | None = None
    picked: list[str] | None = None
    index = 0
    while index < len(lines):
        _, content, _ = strip_log_prefix(lines[index])
        if content.startswith(_ELIGIBLE):
            text, index = _collect_list(lines, index, _ELIGIBLE)
            eligible = _split_names(text)
            picked = None  # a new report starts; its picked list follows
            continue
        if content.startswith(_PICKED):
            text, index = _collect_list(lines, index, _PICKED)
            picked = _split_names(text)
            continue
        index += 1
    if eligible is None and picked is None:
        return SparsityReport()
    eligible_list = eligible or []
    picked_list = picked or []
    picked_set = set(picked_list)
    return SparsityReport(
        eligible=eligible_list,
        picked=picked_list,
        not_picked=[name for name in eligible_list if name not in picked_set],
        reported=True,
    )


# --------------------------------------------------------------------------------------------
# trtexec performance summary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingStats:
    """One trtexec statistics line, in milliseconds.

    Attributes:
        percentiles_ms: percentile label (``"p90"``, ``"p99"``, ``"p99.9"``) -> value. Which
            percentiles exist depends on the TensorRT version and ``--percentile``: 8.4 printed
            only p99, 8.6+ prints p90/p95/p99 by default.
    """

    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    median_ms: float | None = None
    percentiles_ms: dict[str, float] = field(default_factory=dict)

    @property
    def p90_ms(self) -> float | None:
        """The 90th percentile, if printed."""
        return self.percentiles_ms.get("p90")

    @property
    def p95_ms(self) -> float | None:
        """The 95th percentile, if printed."""
        return self.percentiles_ms.get("p95")

    @property
    def p99_ms(self) -> float | None:
        """The 99th percentile, if printed."""
        return self.percentiles_ms.get("p99")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class TrtexecWarning:
    """A performance warning from trtexec's summary.

    Attributes:
        kind: ``unstable`` (coefficient of variation above trtexec's 2.5% threshold),
            ``enqueue_bound``, ``h2d_bound``, ``d2h_bound``, ``multi_stream`` or ``other``.
        text: the warning's lines joined with a space.
        value: the number the warning quotes (the CoV in percent for ``unstable``), else None.
    """

    kind: str
    text: str
    value: float | None = None


@dataclass(frozen=True)
class TrtexecSummary:
    """Everything trtexec's performance summary says; ``None`` where this output did not say it.

    Attributes:
        throughput_qps: queries per second = queries / total host walltime.
        latency: H2D + GPU compute + D2H per query ("Host Latency" in older versions).
        enqueue: host time to enqueue one query.
        h2d, gpu_compute, d2h: the parts of ``latency``; H2D/D2H are 0 under --noDataTransfers.
        total_host_walltime_s, total_gpu_compute_time_s: totals over the timed run, in seconds.
        warnings: the performance warnings, in order.
        cov_percent: the coefficient of variation trtexec quoted when it flagged instability.
        trt_version: e.g. ``"10.3.0"``, from the header or the ``&&&&`` line.
        command: the trtexec command line as trtexec echoed it on its ``&&&&`` line.
        status: ``"PASSED"``/``"FAILED"`` from the final ``&&&&`` line.
        device_name, compute_capability: from the device header when printed.
    """

    throughput_qps: float | None = None
    latency: TimingStats | None = None
    enqueue: TimingStats | None = None
    h2d: TimingStats | None = None
    gpu_compute: TimingStats | None = None
    d2h: TimingStats | None = None
    total_host_walltime_s: float | None = None
    total_gpu_compute_time_s: float | None = None
    warnings: list[TrtexecWarning] = field(default_factory=list)
    cov_percent: float | None = None
    trt_version: str | None = None
    command: str | None = None
    status: str | None = None
    device_name: str | None = None
    compute_capability: str | None = None

    @property
    def unstable(self) -> bool | None:
        """Whether trtexec flagged the GPU compute time as unstable; None if no summary was found."""
        if self.throughput_qps is None and self.gpu_compute is None and self.latency is None:
            return None
        return any(w.kind == "unstable" for w in self.warnings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["unstable"] = self.unstable
        return data


_STAT_LABELS = {
    "Latency": "latency",
    "Host Latency": "latency",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "GPU Compute": "gpu_compute",
    "D2H Latency": "d2h",
}
_LABEL_ALTERNATIVES = "|".join(re.escape(k) for k in sorted(_STAT_LABELS, key=len, reverse=True))
_STAT_LINE = re.compile(r"^(?P<label>" + _LABEL_ALTERNATIVES + r"):\s*(?P<body>.*\bmin\s*=.*)$")
_STAT_ITEM = re.compile(
    r"(?P<key>min|max|mean|median|percentile\((?P<pct>[\d.]+)%\))\s*=\s*"
    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)\s*(?P<unit>ms|us|s)?"
)
_UNIT_TO_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3, None: 1.0}
_THROUGHPUT = re.compile(r"^Throughput:\s*(?P<value>[-+\d.eE]+)\s*qps\b")
_TOTAL = re.compile(r"^Total (?P<what>Host Walltime|GPU Compute Time):\s*(?P<value>[-+\d.eE]+)\s*(?P<unit>ms|s)\b")
_COV = re.compile(r"coefficient of varia(?:nce|tion)\s*=\s*(?P<value>[\d.]+)\s*%", re.IGNORECASE)
_AMPERSANDS = re.compile(
    r"^&&&&\s+(?P<status>RUNNING|PASSED|FAILED|WAIVED)\s+\S+\s*"
    r"(?:\[TensorRT v(?P<tag>\d+)\])?\s*(?:#\s*(?P<cmd>.*))?$"
)
_VERSION_LINE = re.compile(r"^TensorRT version:\s*(?P<version>\d+(?:\.\d+)+)")
_DEVICE_LINE = re.compile(r"^Selected Device:\s*(?P<name>.+)$")
_CC_LINE = re.compile(r"^Compute Capability:\s*(?P<cc>\d+\.\d+)")


def decode_version_tag(tag: str) -> str:
    """Turn trtexec's ``[TensorRT vNNNN]`` number into a dotted version.

    TensorRT 8.x encodes ``major*1000 + minor*100 + patch`` (``8510`` -> ``8.5.10``); from 10.0 it is
    ``major*10000 + minor*100 + patch`` (``100300`` -> ``10.3.0``, ``101303`` -> ``10.13.3``).
    """
    code = int(tag)
    if code >= 10000:
        return f"{code // 10000}.{(code // 100) % 100}.{code % 100}"
    return f"{code // 1000}.{(code // 100) % 10}.{code % 100}"


def _parse_stats(body: str) -> TimingStats:
    values: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    for item in _STAT_ITEM.finditer(body):
        value = float(item.group("value")) * _UNIT_TO_MS[item.group("unit")]
        if item.group("pct"):
            pct = item.group("pct")
            label = pct[:-2] if pct.endswith(".0") else pct
            percentiles[f"p{label}"] = value
        else:
            values[item.group("key")] = value
    return TimingStats(
        min_ms=values.get("min"),
        max_ms=values.get("max"),
        mean_ms=values.get("mean"),
        median_ms=values.get("median"),
        percentiles_ms=percentiles,
    )


def _warning_kind(text: str) -> tuple[str, float | None]:
    lowered = text.lower()
    cov = _COV.search(text)
    if "unstable" in lowered or cov:
        return "unstable", float(cov.group("value")) if cov else None
    if "bound by enqueue" in lowered:
        return "enqueue_bound", None
    if "host-to-device" in lowered:
        return "h2d_bound", None
    if "device-to-host" in lowered:
        return "d2h_bound", None
    if "multiple inference streams" in lowered or "infstreams" in lowered:
        return "multi_stream", None
    return "other", None


def parse_trtexec(text: str) -> TrtexecSummary:
    """Parse trtexec's console output into a :class:`TrtexecSummary`.

    Works on the full verbose log (the ``=== Explanations ===`` block is ignored because its lines
    carry no numbers), on the short non-verbose summary of TensorRT 8.4 to 10.x, and on pastes
    whose prefixes were stripped. When a metric appears more than once the last value wins.

    Args:
        text: trtexec's stdout and stderr, as captured.
    """
    found: dict[str, Any] = {}
    warnings: list[TrtexecWarning] = []
    pending: list[str] | None = None

    def flush() -> None:
        nonlocal pending
        if pending:
            joined = " ".join(pending)
            kind, value = _warning_kind(joined)
            warnings.append(TrtexecWarning(kind=kind, text=joined, value=value))
        pending = None

    for raw in text.splitlines():
        level, content, _ = strip_log_prefix(raw)
        if level in (None, "W") and content.startswith("* "):
            flush()
            pending = [content[2:].strip()]
            continue
        if pending is not None and level == "W" and content:
            pending.append(content)
            continue
        flush()
        if match := _THROUGHPUT.match(content):
            found["throughput_qps"] = float(match.group("value"))
        elif match := _STAT_LINE.match(content):
            found[_STAT_LABELS[match.group("label")]] = _parse_stats(match.group("body"))
        elif match := _TOTAL.match(content):
            seconds = float(match.group("value")) * (1e-3 if match.group("unit") == "ms" else 1.0)
            if match.group("what") == "Host Walltime":
                found["total_host_walltime_s"] = seconds
            else:
                found["total_gpu_compute_time_s"] = seconds
        elif match := _AMPERSANDS.match(content):
            found["status"] = None if match.group("status") == "RUNNING" else match.group("status")
            if match.group("tag"):
                found.setdefault("trt_version", decode_version_tag(match.group("tag")))
            if match.group("cmd"):
                found["command"] = match.group("cmd").strip()
        elif match := _VERSION_LINE.match(content):
            found["trt_version"] = match.group("version")
        elif match := _DEVICE_LINE.match(content):
            found["device_name"] = match.group("name").strip()
        elif match := _CC_LINE.match(content):
            found["compute_capability"] = match.group("cc")
    flush()
    cov = next((w.value for w in reversed(warnings) if w.kind == "unstable"), None)
    return TrtexecSummary(warnings=warnings, cov_percent=cov, **found)


# --------------------------------------------------------------------------------------------
# Engine inspector JSON
# --------------------------------------------------------------------------------------------

SPARSE_TACTIC_HEURISTIC = (
    "heuristic: the tactic name contains 'sparse' or 'sptensor' (e.g. sm80_xmma_fprop_sparse_conv_*); "
    "a community observation about NVIDIA's kernel names, not a documented contract"
)
_SPARSE_MARKERS = ("sparse", "sptensor")


@dataclass(frozen=True)
class LayerInfo:
    """One engine layer as the engine inspector describes it.

    Attributes:
        name: the fused layer's name (often several ONNX nodes joined with ``+``).
        layer_type: the inspector's ``LayerType`` (e.g. ``CaskConvolution``), if detailed.
        tactic_name: the kernel TensorRT chose, if the engine was built with detailed
            profiling verbosity.
        tactic_value: the tactic id, if printed.
        looks_sparse_heuristic: whether the tactic name looks like a sparse kernel; see
            :data:`SPARSE_TACTIC_HEURISTIC`. Only a hint: the build log's picked list is the
            authoritative record.
    """

    name: str
    layer_type: str | None = None
    tactic_name: str | None = None
    tactic_value: str | None = None
    looks_sparse_heuristic: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class EngineInfo:
    """The engine inspector's whole-engine JSON: layers and I/O tensor names."""

    layers: list[LayerInfo]
    io_tensors: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"layers": [layer.to_dict() for layer in self.layers], "io_tensors": list(self.io_tensors)}


def looks_sparse(tactic_name: str | None) -> bool:
    """Apply :data:`SPARSE_TACTIC_HEURISTIC` to one tactic name."""
    lowered = (tactic_name or "").lower()
    return any(marker in lowered for marker in _SPARSE_MARKERS)


def _layer_from(entry: Any) -> LayerInfo:
    if isinstance(entry, str):  # ProfilingVerbosity.LAYER_NAMES_ONLY: just the name
        return LayerInfo(name=entry)
    if not isinstance(entry, dict):
        raise ValueError(f"engine inspector layer entry is neither a name nor an object: {entry!r}")
    tactic = entry.get("TacticName")
    tactic_name = str(tactic) if tactic not in (None, "") else None
    value = entry.get("TacticValue")
    return LayerInfo(
        name=str(entry.get("Name", "")),
        layer_type=str(entry["LayerType"]) if entry.get("LayerType") is not None else None,
        tactic_name=tactic_name,
        tactic_value=str(value) if value is not None else None,
        looks_sparse_heuristic=looks_sparse(tactic_name),
    )


def _io_names(entries: Iterable[Any]) -> list[str]:
    names = []
    for entry in entries:
        if isinstance(entry, str):  # TensorRT 10 "Bindings": plain names
            names.append(entry)
        elif isinstance(entry, dict) and "Name" in entry:  # TensorRT 11 "I/O Tensors": objects
            names.append(str(entry["Name"]))
    return names


def parse_engine_info(json_text: str) -> EngineInfo:
    """Parse the engine inspector's JSON (``get_engine_information`` or ``trtexec --exportLayerInfo``).

    Accepts the whole-engine object (``{"Layers": [...], "Bindings": [...]}`` in TensorRT 10,
    ``"I/O Tensors"`` objects in TensorRT 11), a bare list of layers, or one layer object as
    ``get_layer_information`` returns it.

    Raises:
        ValueError: the text is not JSON of one of these shapes.
    """
    try:
        data = json.loads(json_text)
    except json.JSONDecodeError as err:
        raise ValueError(f"engine inspector output is not valid JSON: {err}") from err
    if isinstance(data, list):
        return EngineInfo(layers=[_layer_from(entry) for entry in data], io_tensors=[])
    if not isinstance(data, dict):
        raise ValueError("engine inspector JSON must be an object or a list of layers")
    if "Layers" in data:
        io = data.get("I/O Tensors", data.get("Bindings")) or []
        return EngineInfo(layers=[_layer_from(entry) for entry in data["Layers"]], io_tensors=_io_names(io))
    if "Name" in data:
        return EngineInfo(layers=[_layer_from(data)], io_tensors=[])
    raise ValueError("engine inspector JSON has no 'Layers' list and is not a single layer")


def parse_layer_info(json_text: str) -> list[LayerInfo]:
    """The layers of :func:`parse_engine_info`; see there for the accepted shapes."""
    return parse_engine_info(json_text).layers


@dataclass(frozen=True)
class LayerTime:
    """One layer's time from ``trtexec --exportProfile`` (per-layer profiling run)."""

    name: str
    total_ms: float | None
    average_ms: float | None
    median_ms: float | None
    percentage: float | None


def parse_layer_profile(json_text: str) -> list[LayerTime]:
    """Parse ``trtexec --exportProfile`` JSON: ``[{"count": N}, {"name", "timeMs", "averageMs", ...}]``.

    Per-layer times come from a profiled run (the profiler adds overhead per layer), so use them
    for *shares* of time, e.g. the fraction spent in layers that got sparse kernels, not as latency.

    Raises:
        ValueError: the text is not a JSON list.
    """
    try:
        data = json.loads(json_text)
    except json.JSONDecodeError as err:
        raise ValueError(f"trtexec profile is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError("trtexec profile JSON must be a list")

    def num(entry: dict[str, Any], key: str) -> float | None:
        value = entry.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    return [
        LayerTime(
            name=str(entry["name"]),
            total_ms=num(entry, "timeMs"),
            average_ms=num(entry, "averageMs"),
            median_ms=num(entry, "medianMs"),
            percentage=num(entry, "percentage"),
        )
        for entry in data
        if isinstance(entry, dict) and "name" in entry
    ]
