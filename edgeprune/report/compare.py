"""``--compare OLD NEW``: did anything get slower between two runs, beyond noise?

Built for CI: a job benches the new build, compares with a stored record of the old one and fails
when a variant's p50 latency grew. Latency on a shared machine is noisy, so a row is flagged only
when two things hold at once:

* the new p50 is more than ``threshold_pct`` percent above the old one (the change matters), and
* the new p50's 95% confidence interval lies entirely above the old one (the change is not noise).

Rows where either record lacks a confidence interval fall back to the threshold alone, and say so.
Variants are matched by name and batch size; those present on one side only are listed, not failed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import UsageError
from edgeprune.report.load import SOURCE_KEY, as_float, batch_keys, validate_record, variant_key

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

DEFAULT_THRESHOLD_PCT = 5.0
SLOWER = "slower"
FASTER = "faster"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class CompareRow:
    """One variant at one batch size, old against new.

    Attributes:
        status: ``slower`` (flagged: fails CI), ``faster``, or ``unchanged`` (within threshold or noise).
        note: why the status is what it is, when that is not obvious (noise, missing CI).
    """

    variant: str
    batch: int
    old_p50_ms: float
    old_ci95_ms: tuple[float, float] | None
    new_p50_ms: float
    new_ci95_ms: tuple[float, float] | None
    change_pct: float
    status: str
    note: str = ""

    @property
    def flagged(self) -> bool:
        """True when this row should fail a CI job."""
        return self.status == SLOWER


@dataclass(frozen=True)
class Comparison:
    """The regression table and what could not be matched.

    Attributes:
        rows: matched (variant, batch) pairs.
        only_old: ``variant bN`` present in the old record only.
        only_new: ``variant bN`` present in the new record only.
        threshold_pct: the threshold the statuses were decided with.
        old_source: where the old record came from.
        new_source: where the new record came from.
    """

    rows: list[CompareRow]
    threshold_pct: float
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    old_source: str = "old"
    new_source: str = "new"

    @property
    def regressed(self) -> bool:
        """True when any row got slower beyond threshold and noise."""
        return any(row.flagged for row in self.rows)

    @property
    def exit_code(self) -> int:
        """1 when something regressed (for CI), else 0."""
        return 1 if self.regressed else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": "edgeprune.report.compare",
            "old": self.old_source,
            "new": self.new_source,
            "threshold_pct": self.threshold_pct,
            "rule": "slower when new p50 > old p50 by more than threshold_pct and new CI low > old CI high",
            "regressed": self.regressed,
            "rows": [dict(asdict(row), flagged=row.flagged) for row in self.rows],
            "only_old": self.only_old,
            "only_new": self.only_new,
        }


def _latency_table(record: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for variant in record.get("variants", []):
        name = variant_key(variant, record)
        latency = variant.get("latency") or {}
        for key in batch_keys(latency):
            table[(name, int(key))] = latency[key]
    return table


def _ci(stats: dict[str, Any]) -> tuple[float, float] | None:
    ci = stats.get("p50_ci95_ms")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = as_float(ci[0]), as_float(ci[1])
        if lo is not None and hi is not None:
            return (lo, hi)
    return None


def classify(
    old_p50: float,
    old_ci: tuple[float, float] | None,
    new_p50: float,
    new_ci: tuple[float, float] | None,
    threshold_pct: float,
) -> tuple[float, str, str]:
    """Decide one row: (change in percent, status, note).

    Faster is decided by the mirror of the slower rule, so a report reads the same both ways.
    """
    if old_p50 <= 0:
        return 0.0, UNCHANGED, "old p50 is not positive; cannot compare"
    change = (new_p50 - old_p50) / old_p50 * 100.0
    if old_ci is None or new_ci is None:
        if change > threshold_pct:
            return change, SLOWER, "no confidence interval recorded: decided on the threshold alone"
        if change < -threshold_pct:
            return change, FASTER, "no confidence interval recorded: decided on the threshold alone"
        return change, UNCHANGED, ""
    if change > threshold_pct:
        if new_ci[0] > old_ci[1]:
            return change, SLOWER, ""
        return change, UNCHANGED, "above threshold but the confidence intervals overlap (noise)"
    if change < -threshold_pct:
        if new_ci[1] < old_ci[0]:
            return change, FASTER, ""
        return change, UNCHANGED, "below threshold but the confidence intervals overlap (noise)"
    return change, UNCHANGED, ""


def compare_records(
    old: dict[str, Any], new: dict[str, Any], threshold_pct: float = DEFAULT_THRESHOLD_PCT
) -> Comparison:
    """Compare the p50 latency of every variant and batch size present in both records.

    Args:
        old: the reference record (e.g. from the main branch).
        new: the record under test.
        threshold_pct: how many percent slower counts as a regression (when not noise).

    Raises:
        UsageError: the threshold is negative, or the records share no variant and batch size, which
            almost always means the wrong files were passed (and must not pass CI silently).
    """
    if not threshold_pct >= 0:
        raise UsageError(f"--threshold must be a percentage >= 0, got {threshold_pct}")
    validate_record(old, str(old.get(SOURCE_KEY, "old record")))
    validate_record(new, str(new.get(SOURCE_KEY, "new record")))
    old_table, new_table = _latency_table(old), _latency_table(new)
    rows = []
    for key in old_table:
        if key not in new_table:
            continue
        o, n = old_table[key], new_table[key]
        old_p50, new_p50 = float(o["p50_ms"]), float(n["p50_ms"])
        old_ci, new_ci = _ci(o), _ci(n)
        change, status, note = classify(old_p50, old_ci, new_p50, new_ci, threshold_pct)
        rows.append(
            CompareRow(
                variant=key[0],
                batch=key[1],
                old_p50_ms=old_p50,
                old_ci95_ms=old_ci,
                new_p50_ms=new_p50,
                new_ci95_ms=new_ci,
                change_pct=change,
                status=status,
                note=note,
            )
        )
    old_src = str(old.get(SOURCE_KEY, "old"))
    new_src = str(new.get(SOURCE_KEY, "new"))
    if not rows:
        raise UsageError(
            f"{old_src} and {new_src} share no variant and batch size; compare records of the same bundles"
        )
    return Comparison(
        rows=rows,
        threshold_pct=threshold_pct,
        only_old=[f"{name} b{batch}" for name, batch in old_table if (name, batch) not in new_table],
        only_new=[f"{name} b{batch}" for name, batch in new_table if (name, batch) not in old_table],
        old_source=old_src,
        new_source=new_src,
    )


def _fmt_p50_ci(p50: float, ci: tuple[float, float] | None) -> str:
    return f"{p50:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " [no CI]")


COMPARE_HEADERS: tuple[str, ...] = (
    "variant",
    "batch",
    "old p50 ms [95% CI]",
    "new p50 ms [95% CI]",
    "change",
    "status",
    "note",
)


def compare_cells(row: CompareRow) -> list[str]:
    """One comparison row as text, shared by the terminal and HTML tables."""
    return [
        row.variant,
        str(row.batch),
        _fmt_p50_ci(row.old_p50_ms, row.old_ci95_ms),
        _fmt_p50_ci(row.new_p50_ms, row.new_ci95_ms),
        f"{row.change_pct:+.1f}%",
        row.status,
        row.note,
    ]


def rich_compare_table(comparison: Comparison) -> Table:
    """The regression table for the terminal; flagged rows in red."""
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(f"p50 latency: {comparison.old_source} → {comparison.new_source}"),
        caption=(f"slower = more than {comparison.threshold_pct:g}% slower and the 95% CIs do not overlap"),
        caption_justify="left",
    )
    for header in COMPARE_HEADERS:
        numeric = header in ("batch", "change")
        table.add_column(Text(header), justify="right" if numeric else "left", overflow="fold")
    styles = {SLOWER: "bold red", FASTER: "green", UNCHANGED: None}
    for row in comparison.rows:
        # Text, not markup: "[no CI]" and variant names must print as written.
        table.add_row(*(Text(cell) for cell in compare_cells(row)), style=styles[row.status])
    return table


def print_comparison(comparison: Comparison, console: Console) -> None:
    """Print the regression table, unmatched variants and the verdict."""
    from rich.text import Text

    console.print(rich_compare_table(comparison))
    for source, only in (
        (comparison.old_source, comparison.only_old),
        (comparison.new_source, comparison.only_new),
    ):
        if only:
            console.print(Text(f"only in {source}: {', '.join(only)}", style="dim"), highlight=False)
    flagged = [f"{r.variant} b{r.batch} ({r.change_pct:+.1f}%)" for r in comparison.rows if r.flagged]
    if flagged:
        console.print(Text.assemble(("regression: ", "bold red"), ", ".join(flagged)), highlight=False)
    else:
        console.print(Text.assemble(("no regression", "green"), " beyond the threshold and noise"), highlight=False)


def write_compare(comparison: Comparison, json_path: Path, csv_path: Path | None = None) -> list[Path]:
    """Write the regression table as JSON (and CSV when asked); returns the paths written."""
    json_path.write_text(json.dumps(comparison.to_dict(), indent=2) + "\n", encoding="utf-8")
    written = [json_path]
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "variant",
                    "batch",
                    "old_p50_ms",
                    "old_ci95_lo_ms",
                    "old_ci95_hi_ms",
                    "new_p50_ms",
                    "new_ci95_lo_ms",
                    "new_ci95_hi_ms",
                    "change_pct",
                    "status",
                    "note",
                ]
            )
            for r in comparison.rows:
                oc = r.old_ci95_ms or ("", "")
                nc = r.new_ci95_ms or ("", "")
                writer.writerow(
                    [
                        r.variant,
                        r.batch,
                        r.old_p50_ms,
                        oc[0],
                        oc[1],
                        r.new_p50_ms,
                        nc[0],
                        nc[1],
                        round(r.change_pct, 3),
                        r.status,
                        r.note,
                    ]
                )
        written.append(csv_path)
    return written
