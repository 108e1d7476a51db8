"""``--compare OLD NEW``: a slowed variant fails CI, identical runs and noise do not."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from edgeprune.cli.report import report_command
from edgeprune.errors import EdgepruneError
from edgeprune.report.compare import FASTER, SLOWER, UNCHANGED, classify, compare_records

from .conftest import BATCHES, VARIANTS, make_record, write_record


@pytest.fixture(scope="module")
def old() -> dict[str, Any]:
    return make_record(extras=False)


@pytest.fixture(scope="module")
def slowed() -> dict[str, Any]:
    # Same seed, so the only difference is net-2of4's samples multiplied by 1.5.
    return make_record(slow={"net-2of4": 1.5}, extras=False)


def test_slowed_variant_is_flagged(old: dict[str, Any], slowed: dict[str, Any]) -> None:
    comparison = compare_records(old, slowed, threshold_pct=5.0)
    assert len(comparison.rows) == (len(VARIANTS) + 1) * len(BATCHES)
    flagged = {(r.variant, r.batch) for r in comparison.rows if r.flagged}
    assert flagged == {("net-2of4", b) for b in BATCHES}
    row = next(r for r in comparison.rows if r.flagged)
    assert row.change_pct == pytest.approx(50.0, abs=0.5)
    assert comparison.regressed and comparison.exit_code == 1


def test_identical_records_pass(old: dict[str, Any]) -> None:
    comparison = compare_records(old, old)
    assert not comparison.regressed and comparison.exit_code == 0
    assert {r.status for r in comparison.rows} == {UNCHANGED}
    assert all(r.change_pct == 0.0 for r in comparison.rows)


def test_faster_variant_is_not_a_regression(old: dict[str, Any], slowed: dict[str, Any]) -> None:
    comparison = compare_records(slowed, old)
    assert not comparison.regressed
    assert {r.status for r in comparison.rows if r.variant == "net-2of4"} == {FASTER}


def test_noise_alone_does_not_fail() -> None:
    # 10% slower on the p50, but the confidence intervals overlap: not a regression.
    change, status, note = classify(1.0, (0.8, 1.2), 1.1, (0.9, 1.3), threshold_pct=5.0)
    assert change == pytest.approx(10.0) and status == UNCHANGED and "noise" in note
    # Same shift with tight intervals: a regression.
    assert classify(1.0, (0.99, 1.01), 1.1, (1.09, 1.11), 5.0)[1] == SLOWER
    # Clearly separated but under the threshold: not a regression.
    assert classify(1.0, (0.999, 1.001), 1.03, (1.029, 1.031), 5.0)[1] == UNCHANGED
    # No interval recorded: the threshold alone decides, and the note says so.
    change, status, note = classify(1.0, None, 1.2, None, 5.0)
    assert status == SLOWER and "threshold alone" in note


def test_threshold_above_the_change_passes(old: dict[str, Any], slowed: dict[str, Any]) -> None:
    assert not compare_records(old, slowed, threshold_pct=60.0).regressed


def test_unmatched_variants_are_listed_not_failed(old: dict[str, Any]) -> None:
    new = json.loads(json.dumps(old))
    new["variants"] = [v for v in new["variants"] if v["name"] != "net-int8"]
    comparison = compare_records(old, new)
    assert comparison.only_old == ["net-int8 b1", "net-int8 b32"] and comparison.only_new == []
    assert not comparison.regressed


def test_nothing_in_common_is_an_error(old: dict[str, Any]) -> None:
    other = json.loads(json.dumps(old))
    for variant in other["variants"]:
        variant["name"] = "other-" + variant["name"]
    with pytest.raises(EdgepruneError, match="share no variant"):
        compare_records(old, other)


def test_cli_exit_codes_and_outputs(
    tmp_path: Path, old: dict[str, Any], slowed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    old_path = write_record(tmp_path / "old.json", old)
    new_path = write_record(tmp_path / "new.json", slowed)
    out = tmp_path / "out"

    assert report_command([], out, (old_path, new_path), 5.0, False) == 1
    text = capsys.readouterr().out
    assert "net-2of4" in text and "slower" in text and "regression" in text
    with (out / "compare.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["variant"] for r in rows if r["status"] == "slower"} == {"net-2of4"}

    assert report_command([], out, (old_path, old_path), 5.0, True) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["compare"]["regressed"] is False
    assert Path(payload["files"]["compare_json"]).is_file()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("nope", encoding="utf-8")
    assert report_command([bad], tmp_path / "out", None, 5.0, False) == 2
    err = capsys.readouterr().err
    assert "not JSON" in err and "Traceback" not in err
    assert report_command([], tmp_path / "out", None, 5.0, False) == 2


def test_cli_report_with_compare_embeds_regression(
    tmp_path: Path, old: dict[str, Any], slowed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    old_path = write_record(tmp_path / "old.json", old)
    new_path = write_record(tmp_path / "new.json", slowed)
    out = tmp_path / "out"
    assert report_command([new_path], out, (old_path, new_path), 5.0, True) == 1
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["rows"]) == (len(VARIANTS) + 1) * len(BATCHES)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Regression check" in html and 'class="slower"' in html


def test_terminal_table_prints_missing_ci_literally(old: dict[str, Any]) -> None:
    from rich.console import Console

    from edgeprune.report.compare import print_comparison

    new = json.loads(json.dumps(old))
    for variant in new["variants"]:
        for stats in variant["latency"].values():
            del stats["p50_ci95_ms"]
    console = Console(record=True, width=250, color_system=None)
    print_comparison(compare_records(old, new), console)
    text = console.export_text()
    assert "[no CI]" in text and "no regression" in text
