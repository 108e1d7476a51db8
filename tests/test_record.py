"""The result record type: one definition, a lossless JSON round trip, clear refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgeprune.errors import UsageError
from edgeprune.record import RESULT_KIND, ResultRecord, Variant


def _json() -> dict[str, Any]:
    stats = {"p50_ms": 1.5, "p90_ms": 1.7, "iterations": 50}
    return {
        "kind": RESULT_KIND,
        "schema_version": 1,
        "created_unix_s": 1.0,
        "provenance": {"cpu": "test"},
        "runner": {"name": "onnxruntime", "kind": "ort", "settings": {}},
        "method": {"warmup_s": 0.1},
        "memory": {"peak_rss_bytes": 1},
        "power": {"reason": "no sensor"},
        "variants": [
            {"name": "dense", "is_baseline": True, "latency": {"1": stats}, "comparison": None},
            {
                "name": "half",
                "latency": {"1": dict(stats, p50_ms=1.0)},
                "baseline_latency": {"1": stats},
                "comparison": {"per_batch": {"1": {"measured_speedup": 1.5}}},
                "cost": {"theoretical_speedup": 2.0},
                "a_newer_field": [1, 2],
            },
        ],
        "demo": {"task": "digits"},
    }


def test_typed_access_and_lossless_round_trip() -> None:
    record = ResultRecord.from_dict(_json())
    assert record.baseline is not None and record.baseline.name == "dense"
    half = record.variant("half")
    assert half.cost["theoretical_speedup"] == 2.0 and half.extra == {"a_newer_field": [1, 2]}
    assert record.extra == {"demo": {"task": "digits"}}
    again = ResultRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    with pytest.raises(KeyError):
        record.variant("missing")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(kind="something"), "not a result record"),
        (lambda d: d.update(schema_version=7), "unknown schema_version 7"),
        (lambda d: d.update(variants=[]), "non-empty list"),
        (lambda d: d["variants"][1].pop("name"), r"variants\[1\] has no 'name'"),
        (lambda d: d["variants"][0]["latency"].update({"0": {"p50_ms": 1}}), "not a positive batch size"),
        (lambda d: d["variants"][1].update(comparison=[1]), "comparison must be an object or null"),
        (lambda d: d.update(power="none"), "power must be an object or null"),
    ],
)
def test_refusals_name_the_place(change: Any, message: str) -> None:
    data = _json()
    change(data)
    with pytest.raises(UsageError, match=message):
        ResultRecord.from_dict(data, "r.json")


def test_a_new_variant_writes_the_keys_readers_expect() -> None:
    written = Variant(name="x", latency={"1": {"p50_ms": 1.0}}).to_dict()
    assert {"name", "latency", "is_baseline", "cost", "accuracy", "finetuned", "comparison"} <= set(written)
    assert "energy" not in written and "engine" not in written
