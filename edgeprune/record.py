"""The result record: what ``edgeprune bench`` (here or on the device's agent) measured, as one JSON file.

One definition, written by :func:`edgeprune.device.measure.bench.run_bench` and read by the report
(:mod:`edgeprune.report.load`), the agent's store and the Python API. It imports only the standard
library, so the device reads and writes it without torch or numpy.

A record holds one :class:`Variant` per bundle measured, each with its latency per batch size
(``"1"``, ``"32"``: JSON keys are strings) and, when a baseline was timed in the same run, the
baseline's figures from that pairing and the measured speedup beside the theoretical one. Sections
whose keys depend on the machine (``provenance``, ``power``, ``memory``, a TensorRT ``engine``) stay
JSON objects; this module checks what every consumer relies on and keeps the rest as written.
Fields a newer schema-1 writer adds (the demo's ``demo``, the agent's ``agent``) are kept in
``extra``, so a record read and written again loses nothing.

Example (abridged)::

    {"kind": "edgeprune.result", "schema_version": 1, "created_unix_s": 1764822000.0,
     "provenance": {...}, "runner": {"name": "onnxruntime-cpu", "kind": "ort", "settings": {...}},
     "method": {"warmup_s": 1.0, ...}, "memory": {...}, "power": {"reason": "no power sensor ..."},
     "variants": [{"name": "channel-50mac", "is_baseline": false, "latency": {"1": {"p50_ms": 0.41, ...}},
                   "baseline_latency": {"1": {...}}, "comparison": {"per_batch": {"1": {...}}}, ...}]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from edgeprune.errors import UsageError

RESULT_KIND = "edgeprune.result"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})

Latency = dict[str, dict[str, Any]]
"""Batch size (a string key) -> latency statistics (``LatencyStats.to_dict()``: ``p50_ms``, ``p90_ms``, ...)."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _check_latency(latency: Any, where: str) -> Latency:
    if not isinstance(latency, dict):
        raise UsageError(f"{where} must be an object mapping batch size to latency statistics")
    for key, stats in latency.items():
        try:
            batch = int(key)
        except (TypeError, ValueError):
            batch = 0
        if batch <= 0:
            raise UsageError(f"{where}: key {key!r} is not a positive batch size")
        if not isinstance(stats, dict) or _number(stats.get("p50_ms")) is None:
            raise UsageError(f"{where}[{key!r}] has no numeric 'p50_ms'")
    return latency


def _optional_object(data: dict[str, Any], key: str, where: str) -> Any:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise UsageError(f"{where}.{key} must be an object or null")
    return value


@dataclass
class Variant:
    """One bundle's measurements in a record.

    Attributes:
        name: the bundle manifest's name (the label in tables).
        latency: its own latency per batch size.
        bundle: the bundle folder it was read from.
        is_baseline: True for the dense baseline the others are compared with.
        precision: fp32, fp16 or int8, from the manifest.
        pattern: the pruning pattern, from the manifest.
        cost: the manifest's cost section (MACs, parameters, ``theoretical_speedup``).
        accuracy: the bundle's own accuracy from its manifest, or None.
        finetuned: False for a pruned model packaged without fine-tuning; None when not said.
        reference_check: the re-check of ``reference.npz`` before timing (``max_abs_diff``, ``atol``).
        model_file_bytes: size of ``model.onnx``.
        baseline_latency: the baseline's latency timed interleaved with this variant, per batch size.
        comparison: measured over theoretical speedup per batch size, or None for the baseline.
        engine: TensorRT only: the engine build's report.
        energy: energy per inference per batch size, when a power sensor was read.
        layers: per-layer gap attribution (``edgeprune explain``), when the run included it.
        extra: fields this version does not know.
    """

    name: str
    latency: Latency = field(default_factory=dict)
    bundle: str | None = None
    is_baseline: bool = False
    precision: str | None = None
    pattern: str | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None
    finetuned: bool | None = None
    reference_check: dict[str, Any] | None = None
    model_file_bytes: int | None = None
    baseline_latency: Latency | None = None
    comparison: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    energy: dict[str, Any] | None = None
    layers: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # Fields written even when null, so a reader sees "no comparison" rather than a missing key.
    _ALWAYS = frozenset({"name", "latency", "bundle", "is_baseline", "precision", "pattern", "cost", "accuracy"})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; optional sections that are None are left out (``comparison`` is kept)."""
        data: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is not None or f.name in self._ALWAYS or f.name in ("finetuned", "comparison"):
                data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Variant:
        """Read one variant, checking what tables and plots rely on.

        Raises:
            UsageError: naming the variant and the first field that is missing or mistyped.
        """
        if not isinstance(data, dict):
            raise UsageError(f"{where} is not an object")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where} has no 'name'")
        latency = _check_latency(data.get("latency"), f"{where}.latency")
        baseline = data.get("baseline_latency")
        if baseline is not None:
            _check_latency(baseline, f"{where}.baseline_latency")
        for key in ("cost", "comparison", "reference_check", "engine", "energy"):
            _optional_object(data, key, where)
        layers = data.get("layers")
        if layers is not None and not isinstance(layers, list):
            raise UsageError(f"{where}.layers must be a list or null")
        known = {f.name for f in fields(cls)} - {"extra"}
        finetuned = data.get("finetuned")
        bytes_ = data.get("model_file_bytes")
        return cls(
            name=name,
            latency=latency,
            bundle=None if data.get("bundle") is None else str(data["bundle"]),
            is_baseline=data.get("is_baseline") is True,
            precision=data.get("precision") if isinstance(data.get("precision"), str) else None,
            pattern=data.get("pattern") if isinstance(data.get("pattern"), str) else None,
            cost=data.get("cost") or {},
            accuracy=_number(data.get("accuracy")),
            finetuned=finetuned if isinstance(finetuned, bool) else None,
            reference_check=data.get("reference_check"),
            model_file_bytes=bytes_ if isinstance(bytes_, int) and not isinstance(bytes_, bool) else None,
            baseline_latency=baseline,
            comparison=data.get("comparison"),
            engine=data.get("engine"),
            energy=data.get("energy"),
            layers=layers,
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass
class ResultRecord:
    """One benchmark run: where and how it was measured, and every variant's figures.

    Attributes:
        variants: one per bundle, the baseline (if any) first.
        created_unix_s: when the run started.
        provenance: the machine, its clocks and power mode, library versions
            (:func:`edgeprune.device.provenance.collect`).
        runner: ``name``, ``kind`` (a :data:`edgeprune.vocab.RUNNERS` name) and its ``settings``.
        method: the timing rule (warm-up, minimum iterations and duration, interleaving, the timer).
        memory: ``peak_rss_bytes``, ``gpu_bytes`` and the reason when that is null.
        power: the power source and idle baseline, or ``{"reason": ...}`` when none was read.
        extra: fields this version does not know (the demo's ``demo``, the agent's ``agent``).
        schema_version: :data:`SCHEMA_VERSION` when written by this version.
    """

    variants: list[Variant]
    created_unix_s: float | None = None
    provenance: dict[str, Any] | None = None
    runner: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    power: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def variant(self, name: str) -> Variant:
        """The variant called ``name``.

        Raises:
            KeyError: no variant has that name.
        """
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    @property
    def baseline(self) -> Variant | None:
        """The baseline variant, or None when the run had none."""
        return next((v for v in self.variants if v.is_baseline), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by ``edgeprune bench --json`` and stored by the agent."""
        return {
            **self.extra,
            "schema_version": self.schema_version,
            "kind": RESULT_KIND,
            "created_unix_s": self.created_unix_s,
            "provenance": self.provenance,
            "runner": self.runner,
            "method": self.method,
            "memory": self.memory,
            "power": self.power,
            "variants": [variant.to_dict() for variant in self.variants],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "record") -> ResultRecord:
        """Read a record's JSON form, checking every part the report relies on.

        Unknown keys are kept in ``extra`` and optional parts are left for consumers to skip, so a
        record from a newer schema-1 writer still loads.

        Args:
            data: the parsed JSON.
            source: where it came from, for error messages.

        Raises:
            UsageError: with the location of the first problem and what to do about it.
        """
        if not isinstance(data, dict):
            raise UsageError(f"{source}: expected a JSON object (a result record), found {type(data).__name__}")
        kind = data.get("kind")
        if kind != RESULT_KIND:
            found = "no 'kind' field" if kind is None else f"kind {kind!r}"
            raise UsageError(
                f"{source}: {found}, expected {RESULT_KIND!r}; this is not a result record from `edgeprune bench`"
            )
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_SCHEMA_VERSIONS:
            readable = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
            raise UsageError(
                f"{source}: unknown schema_version {version!r} (this edgeprune reads {readable}); "
                "upgrade edgeprune, or re-run `edgeprune bench` with this version"
            )
        variants = data.get("variants")
        if not isinstance(variants, list) or not variants:
            raise UsageError(f"{source}: 'variants' must be a non-empty list; the record holds no measurements")
        sections = {
            key: _optional_object(data, key, source) for key in ("provenance", "runner", "method", "memory", "power")
        }
        known = {"kind", "schema_version", "created_unix_s", "variants", *sections}
        return cls(
            variants=[Variant.from_dict(v, f"{source}: variants[{i}]") for i, v in enumerate(variants)],
            created_unix_s=_number(data.get("created_unix_s")),
            extra={k: v for k, v in data.items() if k not in known},
            schema_version=version,
            **sections,
        )
