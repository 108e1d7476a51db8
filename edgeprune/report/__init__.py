"""Reports on result records: a terminal summary, JSON/CSV tables, figures and a self-contained HTML page.

``write_report`` is the one call most users need; the pieces (loading, rows, single plots, the
regression check) are importable on their own so the demo and CI scripts can use just what they need.
matplotlib is imported only when a figure is drawn, so loading and tables work without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeprune.report.compare import Comparison, compare_records, print_comparison
from edgeprune.report.load import SOURCE_KEY, load_record, load_records, validate_record
from edgeprune.report.plots import PlotOutcome, render_plots, speedup_plot
from edgeprune.report.table import Row, build_rows, print_summary, write_csv, write_json

__all__ = [
    "Comparison",
    "PlotOutcome",
    "Row",
    "build_rows",
    "compare_records",
    "load_record",
    "load_records",
    "print_comparison",
    "print_summary",
    "speedup_plot",
    "validate_record",
    "write_report",
]

HTML_FILE = "report.html"
JSON_FILE = "table.json"
CSV_FILE = "table.csv"


def write_report(
    records: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    comparison: Comparison | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write report.html, table.json, table.csv and the figures into ``out_dir``.

    Args:
        records: result records (as loaded by :func:`load_records`, or built in memory).
        out_dir: created if needed; existing report files in it are overwritten.
        comparison: a regression check to include in the HTML, if one was run.
        on_progress: called with the name of each step, for a progress display.

    Returns:
        ``{"html": ..., "json": ..., "csv": ..., "<plot key>": ...}`` for every file written; figures
        skipped for lack of data are absent (report.html says why).

    Raises:
        UsageError: a record fails validation.
    """
    from edgeprune.report.html import write_html

    for i, record in enumerate(records):
        validate_record(record, str(record.get(SOURCE_KEY) or f"record {i + 1}"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(records)
    paths: dict[str, Path] = {
        "json": write_json(rows, out_dir / JSON_FILE),
        "csv": write_csv(rows, out_dir / CSV_FILE),
    }
    outcomes = render_plots(records, out_dir, on_progress)
    for outcome in outcomes:
        if outcome.path is not None:
            paths[outcome.key] = outcome.path
        else:
            # A figure from an earlier report over other records would be misleading next to this one.
            (out_dir / f"{outcome.key}.png").unlink(missing_ok=True)
    if on_progress is not None:
        on_progress("HTML")
    paths["html"] = write_html(records, rows, outcomes, out_dir / HTML_FILE, comparison)
    return paths
