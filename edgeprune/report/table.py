"""The summary table: one row per variant and batch size, shown in the terminal and written as JSON/CSV.

The row puts the two speedups side by side on purpose: the theoretical one comes from the cost model
(an estimate, and labelled so everywhere), the measured one from latencies timed in the same session,
interleaved with the baseline. Their ratio is the headline of the product: how much of the paper
speedup the device delivered.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.report.load import SOURCE_KEY, as_dict, as_float, batch_keys, record_title, variant_refs

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

THEORETICAL_LABEL = "theoretical speedup (estimate)"
THEORETICAL_NOTE = (
    "Theoretical speedups are estimates from the cost model (dense MACs / effective MACs unless another "
    "model is named); they are not measurements."
)
MEASURED_NOTE = (
    "Measured speedup = baseline p50 / variant p50, both timed in the same run, interleaved. "
    "p50 in milliseconds with its bootstrap 95% confidence interval."
)


@dataclass(frozen=True)
class Row:
    """One variant at one batch size.

    The first fields are the columns of the summary (in order); the rest travel in JSON/CSV for
    tools that want them. ``None`` means the figure is absent from the record, never zero.
    """

    variant: str
    pattern: str | None
    precision: str | None
    params: float | None
    macs: float | None
    accuracy: float | None
    batch: int
    p50_ms: float
    p50_ci95_lo_ms: float | None
    p50_ci95_hi_ms: float | None
    theoretical_speedup_estimate: float | None
    measured_speedup: float | None
    measured_over_theoretical: float | None
    is_baseline: bool
    effective_macs_estimate: float | None
    theoretical_kernel_aware_estimate: float | None
    theoretical_roofline_estimate: float | None
    p90_ms: float | None
    p99_ms: float | None
    cov: float | None
    unstable: bool | None
    throughput_per_s: float | None
    iterations: int | None
    record: str
    finetuned: bool | None = None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row))
COLUMN_NOTES: dict[str, str] = {
    "params": "parameters (count; the non-zero ones where the record has them, so masks show)",
    "macs": "multiply-accumulates per inference (count, dense layers as built)",
    "accuracy": "accuracy recorded in the bundle manifest (host evaluation)",
    "finetuned": "false where a pruned model was packaged without fine-tuning after the cut",
    "theoretical_speedup_estimate": THEORETICAL_LABEL + "; " + THEORETICAL_NOTE,
    "measured_speedup": "measured: baseline p50 / variant p50, same run, interleaved",
    "measured_over_theoretical": "measured speedup / theoretical speedup (estimate)",
    "effective_macs_estimate": "sparsity-aware MACs from the cost model (estimate)",
    "theoretical_kernel_aware_estimate": "theoretical speedup, kernel-aware model (estimate)",
    "theoretical_roofline_estimate": "theoretical speedup, roofline model (estimate)",
    "unstable": "coefficient of variation above 2.5%: treat the latency with care",
}


def build_rows(records: Sequence[dict[str, Any]]) -> list[Row]:
    """Rows for every variant and batch size, in record, variant, then batch-size order."""
    rows = []
    for ref in variant_refs(records):
        variant = ref.variant
        cost = as_dict(variant.get("cost"))
        estimates = as_dict(cost.get("theoretical"))
        per_batch = as_dict(as_dict(variant.get("comparison")).get("per_batch"))
        latency = as_dict(variant.get("latency"))
        base_latency = as_dict(variant.get("baseline_latency"))
        for key in batch_keys(latency):
            stats = latency[key]
            ci = stats.get("p50_ci95_ms")
            lo, hi = (None, None)
            if isinstance(ci, list) and len(ci) == 2:
                lo, hi = as_float(ci[0]), as_float(ci[1])
            compared = as_dict(per_batch.get(key))
            theoretical = as_float(compared.get("theoretical_speedup"))
            if theoretical is None:
                theoretical = as_float(cost.get("theoretical_speedup"))
            measured = as_float(compared.get("measured_speedup"))
            p50 = float(stats["p50_ms"])
            if measured is None and p50 > 0:
                base_p50 = as_float(as_dict(base_latency.get(key)).get("p50_ms"))
                measured = base_p50 / p50 if base_p50 is not None else None
            ratio = as_float(compared.get("measured_over_theoretical"))
            if ratio is None and measured is not None and theoretical:
                ratio = measured / theoretical
            iterations = stats.get("iterations")
            rows.append(
                Row(
                    variant=ref.label,
                    pattern=_str_or_none(variant.get("pattern")),
                    precision=_str_or_none(variant.get("precision")),
                    params=as_float(cost.get("nonzero_params", cost.get("params"))),
                    macs=as_float(cost.get("macs")),
                    accuracy=as_float(variant.get("accuracy")),
                    batch=int(key),
                    p50_ms=p50,
                    p50_ci95_lo_ms=lo,
                    p50_ci95_hi_ms=hi,
                    theoretical_speedup_estimate=theoretical,
                    measured_speedup=measured,
                    measured_over_theoretical=ratio,
                    is_baseline=bool(variant.get("is_baseline", False)),
                    effective_macs_estimate=as_float(cost.get("effective_macs")),
                    theoretical_kernel_aware_estimate=as_float(estimates.get("kernel_aware")),
                    theoretical_roofline_estimate=as_float(estimates.get("roofline")),
                    p90_ms=as_float(stats.get("p90_ms")),
                    p99_ms=as_float(stats.get("p99_ms")),
                    cov=as_float(stats.get("cov")),
                    unstable=stats["unstable"] if isinstance(stats.get("unstable"), bool) else None,
                    finetuned=variant["finetuned"] if isinstance(variant.get("finetuned"), bool) else None,
                    throughput_per_s=as_float(stats.get("throughput_per_s")),
                    iterations=iterations if isinstance(iterations, int) else None,
                    record=str(ref.record.get(SOURCE_KEY) or record_title(ref.record, ref.record_index)),
                )
            )
    return rows


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# --- formatting -----------------------------------------------------------------------------------------


def fmt_count(value: float | None) -> str:
    """1234567 -> '1.23 M': counts of parameters and MACs, readable at a glance."""
    if value is None:
        return "—"
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g} {suffix}"
    return f"{value:.0f}"


def fmt_num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    """A number with fixed decimals, or an em dash where the record has none."""
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def fmt_p50(row: Row) -> str:
    """'1.234 [1.201, 1.260]': the p50 and its 95% confidence interval."""
    text = f"{row.p50_ms:.3f}"
    if row.p50_ci95_lo_ms is not None and row.p50_ci95_hi_ms is not None:
        text += f" [{row.p50_ci95_lo_ms:.3f}, {row.p50_ci95_hi_ms:.3f}]"
    return text


def fmt_accuracy(value: float | None) -> str:
    """Accuracy as a percentage when recorded as a fraction (as the manifests do), else as given."""
    if value is None:
        return "—"
    return f"{value * 100:.2f}%" if 0.0 <= value <= 1.0 else f"{value:.2f}"


DISPLAY_HEADERS: tuple[str, ...] = (
    "variant",
    "pattern",
    "precision",
    "params (nz)",
    "MACs",
    "accuracy",
    "batch",
    "p50 ms [95% CI]",
    THEORETICAL_LABEL,
    "measured speedup",
    "measured / theoretical",
)


TERMINAL_HEADERS: tuple[str, ...] = (
    "variant",
    "pattern",
    "prec.",
    "params (nz)",
    "MACs",
    "acc.",
    "batch",
    "p50 ms [95% CI]",
    "theor. speedup (estimate)",
    "meas. speedup",
    "meas. / theor.",
)
"""Shorter headers for the terminal, where width is scarce; the estimate stays labelled."""


def display_cells(row: Row, compact: bool = False) -> list[str]:
    """The summary columns of one row as text, shared by the terminal and the HTML table.

    Args:
        row: the row.
        compact: terminal form: the theoretical cell drops its "(est.)" suffix because its
            header already says "estimate", and the column must stay narrow.
    """
    name = row.variant + (" (baseline)" if row.is_baseline else "")
    p50 = fmt_p50(row) + (" ⚠ unstable" if row.unstable else "")
    return [
        name,
        row.pattern or "—",
        row.precision or "—",
        fmt_count(row.params),
        fmt_count(row.macs),
        fmt_accuracy(row.accuracy) + (" (not fine-tuned)" if row.finetuned is False else ""),
        str(row.batch),
        p50,
        fmt_num(row.theoretical_speedup_estimate, suffix="×" if compact else "× (est.)"),
        fmt_num(row.measured_speedup, suffix="×"),
        fmt_num(row.measured_over_theoretical),
    ]


def rich_table(rows: Sequence[Row], title: str = "edgeprune results") -> Table:
    """The summary as a rich table, with the estimate labelled in its header and caption."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), caption=Text(THEORETICAL_NOTE), caption_justify="left")
    for header in TERMINAL_HEADERS:
        numeric = header not in ("variant", "pattern", "prec.")
        table.add_column(Text(header), justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        # Text, not markup: "[...]" in a CI or a variant name must print as written.
        cells = display_cells(row, compact=True)
        table.add_row(*(Text(cell) for cell in cells), style="dim" if row.is_baseline else None)
    return table


def print_summary(records: Sequence[dict[str, Any]], console: Console) -> None:
    """Print where the numbers come from, the summary table and its notes to a rich console."""
    from rich.text import Text

    rows = build_rows(records)
    for i, record in enumerate(records):
        prov = record.get("provenance") or {}
        runner = record.get("runner") or {}
        device = prov.get("device_model") or prov.get("cpu_model") or prov.get("machine") or "unknown device"
        console.print(
            Text.assemble(
                (record_title(record, i), "bold"),
                f": {device}, {prov.get('os') or 'unknown OS'}, runner {runner.get('name') or 'unknown'}",
            ),
            highlight=False,
        )
    console.print(rich_table(rows))
    console.print(MEASURED_NOTE, style="dim", highlight=False)
    unstable = sorted({f"{r.variant} b{r.batch}" for r in rows if r.unstable})
    if unstable:
        console.print(
            Text.assemble(("unstable latency (CoV > 2.5%): ", "yellow"), ", ".join(unstable)), highlight=False
        )
    for i, record in enumerate(records):
        power = record.get("power") or {}
        energy = as_float(power.get("energy_mj_per_inference"))
        if energy is not None:
            console.print(
                Text(f"power ({record_title(record, i)}): {energy:.3g} mJ per inference (measured)"),
                highlight=False,
            )
        else:
            reason = power.get("reason") or "no power figures in the record"
            console.print(
                Text(f"power ({record_title(record, i)}): not measured ({reason})", style="dim"),
                highlight=False,
            )


# --- writers ----------------------------------------------------------------------------------------------


def rows_as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Rows as plain dicts in column order (JSON-ready)."""
    return [asdict(row) for row in rows]


def write_json(rows: Sequence[Row], path: Path) -> Path:
    """Write the table as JSON: columns, what each estimate means, then the rows.

    The column notes travel with the numbers so a consumer of the file cannot mistake the theoretical
    speedup for a measurement.
    """
    payload = {
        "kind": "edgeprune.report.table",
        "columns": list(COLUMNS),
        "column_notes": COLUMN_NOTES,
        "rows": rows_as_dicts(rows),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    """Write the table as CSV: a header of :data:`COLUMNS`, one line per row, empty where absent."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if value is None else value for value in asdict(row).values()])
    return path
