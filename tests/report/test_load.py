"""Loading and validating result records: good ones load, bad ones fail with a clear EdgepruneError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.report.load import SOURCE_KEY, load_record, load_records, validate_record, variant_refs

from .conftest import write_record


def test_valid_record_loads_and_remembers_its_file(tmp_path: Path, full_record: dict[str, Any]) -> None:
    path = write_record(tmp_path / "run.json", full_record)
    record = load_record(path)
    assert record[SOURCE_KEY] == str(path)
    assert [v["name"] for v in record["variants"]] == ["net-dense", "net-ch50", "net-2of4", "net-int8"]


def test_unknown_top_level_keys_are_ignored(full_record: dict[str, Any]) -> None:
    assert "demo" in full_record
    validate_record(dict(full_record, something_new={"x": 1}))


def test_non_json_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(EdgepruneError, match=r"broken\.json: not JSON .*line 1"):
        load_record(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EdgepruneError, match="no such file"):
        load_record(tmp_path / "absent.json")


@pytest.mark.parametrize("kind", ["edgeprune.bundle", None, 3])
def test_wrong_kind_is_rejected(tmp_path: Path, full_record: dict[str, Any], kind: Any) -> None:
    data = dict(full_record, kind=kind)
    with pytest.raises(EdgepruneError, match="expected 'edgeprune.result'"):
        load_record(write_record(tmp_path / "r.json", data))


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_unknown_schema_version_is_rejected(tmp_path: Path, full_record: dict[str, Any], version: Any) -> None:
    data = dict(full_record, schema_version=version)
    with pytest.raises(EdgepruneError, match="unknown schema_version .*upgrade edgeprune"):
        load_record(write_record(tmp_path / "r.json", data))


def test_variant_without_p50_is_rejected(full_record: dict[str, Any]) -> None:
    data = json.loads(json.dumps(full_record))
    del data["variants"][1]["latency"]["32"]["p50_ms"]
    with pytest.raises(EdgepruneError, match=r"variants\[1\]\.latency\['32'\] has no numeric 'p50_ms'"):
        validate_record(data)


def test_non_object_json_and_empty_variants_are_rejected(full_record: dict[str, Any]) -> None:
    with pytest.raises(EdgepruneError, match="expected a JSON object"):
        validate_record([1, 2])
    with pytest.raises(EdgepruneError, match="non-empty list"):
        validate_record(dict(full_record, variants=[]))


def test_folder_loads_records_and_skips_other_json(tmp_path: Path, full_record: dict[str, Any]) -> None:
    write_record(tmp_path / "a.json", full_record)
    write_record(tmp_path / "b.json", full_record)
    (tmp_path / "table.json").write_text(json.dumps({"kind": "edgeprune.report.table"}), encoding="utf-8")
    records = load_records([tmp_path])
    assert [Path(r[SOURCE_KEY]).name for r in records] == ["a.json", "b.json"]


def test_folder_without_records_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EdgepruneError, match="holds no result records"):
        load_records([tmp_path])


def test_labels_disambiguate_variants_shared_by_two_runs(full_record: dict[str, Any]) -> None:
    labels = [ref.label for ref in variant_refs([full_record, full_record])]
    assert len(set(labels)) == len(labels) == 8
    assert "net-ch50 (run 2)" in labels
