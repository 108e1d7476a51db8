"""``edgeprune report RESULTS... --out DIR [--compare OLD NEW] [--threshold 5]``.

The command body lives here as a plain function so the CLI module only has to declare options and
call it; it returns the process exit code:

* 0: report written (and, with ``--compare``, nothing got slower);
* 1: ``--compare`` found a variant slower beyond the threshold and the noise (fails a CI job);
* 2: bad input (missing file, not a result record, unknown schema version), one red line on stderr.

Example::

    edgeprune report results/run.json --out report/
    edgeprune report results/new.json --out report/ --compare results/main.json results/new.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2


def report_command(
    results: list[Path],
    out: Path,
    compare: tuple[Path, Path] | None,
    threshold_pct: float = 5.0,
    json_out: bool = False,
) -> int:
    """Write the report for ``results`` into ``out``, and run the regression check when asked.

    Args:
        results: result record files (or folders of them); may be empty when only comparing.
        out: folder for report.html, table.json, table.csv, the figures and compare.json/csv.
        compare: (old, new) record files to check for latency regressions, or None.
        threshold_pct: how many percent slower a p50 must get before it can count as a regression.
        json_out: print one JSON document to stdout (paths, rows, comparison) instead of rich tables.

    Returns:
        The exit code (see the module docstring).
    """
    from rich.console import Console
    from rich.text import Text

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or in a CI log: rich would assume 80 columns and fold every cell of the table.
        console = Console(width=200)
    errors = Console(stderr=True)
    try:
        return _run(results, Path(out), compare, threshold_pct, json_out, console, errors)
    except (EdgepruneError, OSError) as exc:
        # OSError: the --out folder or a file in it cannot be written (permissions, full disk).
        # Text, not markup: messages quote record paths such as "variants[1]", which rich would eat.
        errors.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT


def _run(
    results: list[Path],
    out: Path,
    compare: tuple[Path, Path] | None,
    threshold_pct: float,
    json_out: bool,
    console: Console,
    errors: Console,
) -> int:
    from edgeprune.errors import UsageError
    from edgeprune.report import load_records, write_report
    from edgeprune.report.compare import compare_records, print_comparison, write_compare
    from edgeprune.report.load import load_record
    from edgeprune.report.table import build_rows, print_summary, rows_as_dicts

    if not results and compare is None:
        raise UsageError("nothing to do: pass result records (RESULTS...) and/or --compare OLD NEW")
    comparison = None
    if compare is not None:
        old_path, new_path = compare
        comparison = compare_records(load_record(Path(old_path)), load_record(Path(new_path)), threshold_pct)
    records = load_records(results) if results else []
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the report")
    out.mkdir(parents=True, exist_ok=True)

    paths: dict[str, Path] = {}
    if records:
        if json_out:
            paths = write_report(records, out, comparison=comparison)
        else:
            with errors.status("rendering report") as status:
                paths = write_report(
                    records,
                    out,
                    comparison=comparison,
                    on_progress=lambda step: status.update(f"rendering report: {step}"),
                )
    if comparison is not None:
        json_path, csv_path = write_compare(comparison, out / "compare.json", out / "compare.csv")
        paths["compare_json"], paths["compare_csv"] = json_path, csv_path

    if json_out:
        payload: dict[str, Any] = {"files": {k: str(v) for k, v in paths.items()}}
        if records:
            payload["rows"] = rows_as_dicts(build_rows(records))
        if comparison is not None:
            payload["compare"] = comparison.to_dict()
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        if records:
            print_summary(records, console)
        if comparison is not None:
            print_comparison(comparison, console)
        if "html" in paths:
            console.print(f"report: {paths['html']}", highlight=False)
    return EXIT_REGRESSION if comparison is not None and comparison.regressed else EXIT_OK
