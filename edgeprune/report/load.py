"""Read and validate result records, and name their variants for display.

A result record is the JSON written by ``edgeprune bench`` (see :func:`edgeprune.device.measure.bench.run_bench`).
The report trusts only what it checks here: the file is JSON, its ``kind`` says it is a result record,
its ``schema_version`` is one this code understands, and every variant carries latency figures the
tables can use. Everything else (layers, sensitivity, power samples, the three theoretical estimates)
is optional, because a record from a CPU run without a profiler simply lacks it; the plotting code skips
what is absent and says why.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.errors import UsageError
from edgeprune.record import RESULT_KIND, ResultRecord

SOURCE_KEY = "_source"
"""Key under which :func:`load_record` stores the file a record came from (not part of the schema)."""


def load_record(path: Path) -> dict[str, Any]:
    """Read one result record and check that the report can use it.

    Args:
        path: a JSON file written by ``edgeprune bench`` (or the on-device agent).

    Returns:
        The record, with the file it came from added under :data:`SOURCE_KEY`.

    Raises:
        UsageError: the file is missing, is not JSON, is not a result record, has a schema version
            this edgeprune does not read, or lacks the latency figures every report needs.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; pass result records written by `edgeprune bench`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc}); pass a result record written by `edgeprune bench`") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "pass a result record written by `edgeprune bench`"
        ) from None
    record = validate_record(data, str(path))
    record[SOURCE_KEY] = str(path)
    return record


def validate_record(data: Any, source: str = "record") -> dict[str, Any]:
    """Check the parts of a result record that every table and plot relies on.

    The checks are the record type's own (:meth:`edgeprune.record.ResultRecord.from_dict`): unknown
    keys are ignored (a demo may add its own), and optional parts are left for the consumers to
    skip, so a record from a newer minor writer still loads. The report reads the JSON form it
    checked, so a section a newer writer added is still there for a plot that knows it.

    Args:
        data: the parsed JSON.
        source: where it came from, for error messages.

    Returns:
        ``data`` itself, now known to be a usable record.

    Raises:
        UsageError: with the location of the first problem and what to do about it.
    """
    ResultRecord.from_dict(data, source)
    return data  # type: ignore[no-any-return]


def load_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Load every record named; a folder contributes each result record (``*.json``) inside it.

    Other JSON files in a folder (a ``table.json`` from an earlier report, say) are passed over, so
    ``edgeprune report results/`` works on a folder that also holds report output.

    Raises:
        UsageError: a named file is not a usable record, or nothing at all was found.
    """
    records: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = 0
            for child in sorted(path.glob("*.json")):
                if _looks_like_record(child):
                    records.append(load_record(child))
                    found += 1
            if not found:
                raise UsageError(f"{path}: folder holds no result records (*.json with kind {RESULT_KIND!r})")
        else:
            records.append(load_record(path))
    if not records:
        raise UsageError("no result records given; pass the JSON files written by `edgeprune bench`")
    return records


def _looks_like_record(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("kind") == RESULT_KIND


# --- helpers shared by table, plots, html and compare -------------------------------------------------


def as_float(value: Any) -> float | None:
    """A finite float, or None for anything else (null, strings, NaN, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: optional parts read without type checks."""
    return value if isinstance(value, dict) else {}


def batch_keys(latency: dict[str, Any] | None) -> list[str]:
    """Batch-size keys of a latency mapping, in numeric order ("1" before "32" before "128")."""
    return sorted(latency or {}, key=lambda k: int(k))


@dataclass(frozen=True)
class VariantRef:
    """One variant of one record, with the name shown for it.

    Attributes:
        label: unique across all records being reported; the plain name unless two records share
            it, then suffixed with the record's number so the rows stay distinguishable.
        record_index: position of the record in the list given.
        record: the record.
        variant: the variant inside it.
    """

    label: str
    record_index: int
    record: dict[str, Any]
    variant: dict[str, Any]


def variant_refs(records: Sequence[dict[str, Any]]) -> list[VariantRef]:
    """Every variant of every record, labelled uniquely, in record then variant order."""
    names = [(i, variant_key(v, rec)) for i, rec in enumerate(records) for v in rec.get("variants", [])]
    counts = Counter(name for _, name in names)
    refs = []
    position = 0
    for i, rec in enumerate(records):
        for variant in rec.get("variants", []):
            name = names[position][1]
            position += 1
            label = name if counts[name] == 1 else f"{name} (run {i + 1})"
            refs.append(VariantRef(label=label, record_index=i, record=rec, variant=variant))
    return refs


def variant_key(variant: dict[str, Any], record: dict[str, Any] | None = None) -> str:
    """The name a variant is matched by: its name, made unique inside its own record.

    ``edgeprune bench`` names variants after their bundle manifests, so two bundles with the same
    manifest name measured in one run would collide; the bundle folder then tells them apart (the
    same rule the bench uses for its internal labels).
    """
    name = str(variant.get("name", "?"))
    if record is None:
        return name
    same = [v for v in record.get("variants", []) if v.get("name") == name]
    if len(same) <= 1 or variant is same[0]:
        return name
    bundle = variant.get("bundle")
    return f"{name}@{Path(str(bundle)).name}" if bundle else f"{name}#{same.index(variant) + 1}"


def record_title(record: dict[str, Any], index: int) -> str:
    """A short name for a record: its file name when known, else its position."""
    source = record.get(SOURCE_KEY)
    return Path(source).name if source else f"run {index + 1}"
