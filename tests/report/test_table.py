"""The summary table: one row per (variant, batch), estimates labelled, JSON and CSV writers."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from edgeprune.report import build_rows, print_summary
from edgeprune.report.table import COLUMNS

from .conftest import BATCHES, VARIANTS

REQUIRED_HEADER = [
    "variant",
    "pattern",
    "precision",
    "params",
    "macs",
    "accuracy",
    "batch",
    "p50_ms",
    "p50_ci95_lo_ms",
    "p50_ci95_hi_ms",
    "theoretical_speedup_estimate",
    "measured_speedup",
    "measured_over_theoretical",
]


def test_one_row_per_variant_and_batch(full_record: dict[str, Any]) -> None:
    rows = build_rows([full_record])
    assert len(rows) == (len(VARIANTS) + 1) * len(BATCHES)
    assert [(r.variant, r.batch) for r in rows[:2]] == [("net-dense", 1), ("net-dense", 32)]


def test_rows_carry_speedups_and_ci(full_record: dict[str, Any]) -> None:
    rows = {(r.variant, r.batch): r for r in build_rows([full_record])}
    base = rows[("net-dense", 1)]
    assert base.is_baseline and base.measured_speedup is None
    ch = rows[("net-ch50", 32)]
    assert ch.theoretical_speedup_estimate == pytest.approx(2.0)
    assert ch.measured_speedup == pytest.approx(1 / 0.6, rel=0.05)
    assert ch.measured_over_theoretical == pytest.approx(ch.measured_speedup / 2.0)
    assert ch.p50_ci95_lo_ms is not None and ch.p50_ci95_hi_ms is not None
    assert ch.p50_ci95_lo_ms <= ch.p50_ms <= ch.p50_ci95_hi_ms
    assert ch.theoretical_kernel_aware_estimate == pytest.approx(1.6)


def test_measured_speedup_falls_back_to_baseline_latency(full_record: dict[str, Any]) -> None:
    data = json.loads(json.dumps(full_record))
    data["variants"][1]["comparison"] = None
    row = next(r for r in build_rows([data]) if r.variant == "net-ch50" and r.batch == 1)
    assert row.measured_speedup == pytest.approx(1 / 0.6, rel=0.05)


def test_csv_has_header_and_one_line_per_row(rendered: dict[str, Path]) -> None:
    with rendered["csv"].open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == list(COLUMNS)
    assert lines[0][: len(REQUIRED_HEADER)] == REQUIRED_HEADER
    body = lines[1:]
    assert len(body) == (len(VARIANTS) + 1) * len(BATCHES)
    assert {(line[0], line[6]) for line in body} == {
        (name, str(b)) for name in ["net-dense", *VARIANTS] for b in BATCHES
    }


def test_json_labels_the_estimate(rendered: dict[str, Path]) -> None:
    data = json.loads(rendered["json"].read_text(encoding="utf-8"))
    assert data["columns"] == list(COLUMNS)
    assert len(data["rows"]) == (len(VARIANTS) + 1) * len(BATCHES)
    assert "estimate" in data["column_notes"]["theoretical_speedup_estimate"]


def test_terminal_summary_shows_rows_provenance_and_labels(full_record: dict[str, Any]) -> None:
    console = Console(record=True, width=250, color_system=None)
    print_summary([full_record], console)
    text = console.export_text()
    assert "Jetson Orin Nano" in text
    assert "theor. speedup (estimate)" in text
    for name in VARIANTS:
        assert name in text


def test_terminal_summary_says_power_was_not_measured(minimal_record: dict[str, Any]) -> None:
    console = Console(record=True, width=250, color_system=None)
    print_summary([minimal_record], console)
    assert "not measured (no power sensor was sampled in this run)" in console.export_text()


def test_terminal_prints_brackets_literally(full_record: dict[str, Any]) -> None:
    # Rich would read "[bold]" as markup and drop it; names and CIs must print as written.
    data = json.loads(json.dumps(full_record))
    data["variants"][1]["name"] = "net[bold]x"
    console = Console(record=True, width=250, color_system=None)
    print_summary([data], console)
    text = console.export_text()
    assert "net[bold]x" in text
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", text)


def test_terminal_summary_reports_measured_energy(full_record: dict[str, Any]) -> None:
    console = Console(record=True, width=250, color_system=None)
    print_summary([full_record], console)
    assert "3.2 mJ per inference (measured)" in console.export_text()
