"""A single, self-contained ``report.html``.

The report has to open on an air-gapped lab laptop, as a CI artifact, or attached to an e-mail, and
still show everything: figures are embedded as base64 ``data:`` URIs, the style sheet is inline, and
the page has no scripts and fetches nothing. It states where the numbers came from (device, OS,
library versions, runner settings, timing method) and marks every figure that comes from a model
rather than a measurement as an estimate.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from edgeprune.report.compare import COMPARE_HEADERS, Comparison, compare_cells
from edgeprune.report.load import SOURCE_KEY, as_dict, as_float, record_title
from edgeprune.report.plots import PlotOutcome
from edgeprune.report.table import (
    DISPLAY_HEADERS,
    MEASURED_NOTE,
    THEORETICAL_LABEL,
    THEORETICAL_NOTE,
    Row,
    display_cells,
    fmt_count,
)

KNOWN_TOP_LEVEL = frozenset(
    {
        "schema_version",
        "kind",
        "created_unix_s",
        "provenance",
        "runner",
        "method",
        "memory",
        "power",
        "variants",
        SOURCE_KEY,
    }
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d2327; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
.meta { color: #666; margin-top: 0; }
.note { background: #f6f8fa; border-left: 4px solid #4c72b0; padding: 0.6rem 0.9rem; margin: 1rem 0; }
.estimate { background: #fff4d6; border-radius: 3px; padding: 0 0.25rem; font-size: 0.85em; color: #7a5a00; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.88rem; }
th, td { border: 1px solid #d8dde3; padding: 0.25rem 0.5rem; vertical-align: top; }
th { background: #f0f3f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.baseline td { color: #555; background: #fafafa; }
tr.slower td { background: #fde2e1; } tr.faster td { background: #e3f4e4; }
.scroll { overflow-x: auto; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9rem; max-width: 900px; }
.skipped { color: #666; font-style: italic; border: 1px dashed #ccc; padding: 0.6rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.82rem; }
pre { background: #f6f8fa; padding: 0.5rem; overflow-x: auto; max-height: 20rem; }
.bad { color: #b00020; font-weight: 600; } .good { color: #1e7b34; font-weight: 600; }
"""

_NUMERIC_HEADERS = frozenset(
    {
        "params (nz)",
        "MACs",
        "accuracy",
        "batch",
        "p50 ms [95% CI]",
        "measured speedup",
        "measured / theoretical",
        "change",
        THEORETICAL_LABEL,
    }
)


def png_data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _est(text: str = "estimate") -> str:
    return f' <span class="estimate">{escape(text)}</span>'


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    row_classes: Sequence[str] | None = None,
    numeric: frozenset[str] = _NUMERIC_HEADERS,
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, cells in enumerate(rows):
        cls = f' class="{escape(row_classes[i])}"' if row_classes and row_classes[i] else ""
        tds = "".join(
            f'<td class="num">{escape(c)}</td>' if h in numeric else f"<td>{escape(c)}</td>"
            for h, c in zip(headers, cells, strict=False)
        )
        body.append(f"<tr{cls}>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _value(key: str, value: Any) -> str:
    """One provenance value as escaped HTML: bytes readable, nested objects as compact JSON."""
    if value is None:
        return "<em>not recorded</em>"
    number = as_float(value)
    if number is not None and key.endswith("_bytes"):
        return escape(f"{number / 2**20:.1f} MiB ({int(number)} bytes)")
    if isinstance(value, (dict, list)):
        return f"<code>{escape(json.dumps(value, sort_keys=True))}</code>"
    return escape(str(value))


def _kv(mapping: dict[str, Any], skip: frozenset[str] = frozenset()) -> str:
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{_value(str(k), v)}</td></tr>" for k, v in mapping.items() if k not in skip
    )
    return f"<table>{rows}</table>" if rows else "<p><em>nothing recorded</em></p>"


def _summary_section(rows: Sequence[Row]) -> str:
    headers = list(DISPLAY_HEADERS)
    cells = [display_cells(r) for r in rows]
    classes = ["baseline" if r.is_baseline else "" for r in rows]
    return (
        '<h2 id="summary">Summary</h2>'
        + _table(headers, cells, classes)
        + f'<p class="note"><strong>Theoretical</strong>{_est()}: {escape(THEORETICAL_NOTE)}<br>'
        + f"<strong>Measured</strong>: {escape(MEASURED_NOTE)} "
        + "Rows marked ⚠ unstable have a coefficient of variation above 2.5%.</p>"
    )


def _compare_section(comparison: Comparison) -> str:
    verdict = (
        '<p class="bad">Regression: at least one variant got slower beyond the threshold and the noise.</p>'
        if comparison.regressed
        else '<p class="good">No regression beyond the threshold and the noise.</p>'
    )
    extra = ""
    if comparison.only_old:
        extra += f"<p>Only in {escape(comparison.old_source)}: {escape(', '.join(comparison.only_old))}</p>"
    if comparison.only_new:
        extra += f"<p>Only in {escape(comparison.new_source)}: {escape(', '.join(comparison.only_new))}</p>"
    return (
        '<h2 id="regression">Regression check</h2>'
        f"<p>{escape(comparison.old_source)} → {escape(comparison.new_source)}. A row is <em>slower</em> "
        f"when the new p50 exceeds the old by more than {comparison.threshold_pct:g}% <em>and</em> the new "
        "p50's 95% confidence interval lies wholly above the old one.</p>"
        + verdict
        + _table(COMPARE_HEADERS, [compare_cells(r) for r in comparison.rows], [r.status for r in comparison.rows])
        + extra
    )


def _figures_section(outcomes: Sequence[PlotOutcome]) -> str:
    parts = ['<h2 id="figures">Figures</h2>']
    for outcome in outcomes:
        parts.append(f'<section id="fig-{escape(outcome.key)}"><h3>{escape(outcome.title)}</h3>')
        if outcome.path is not None:
            parts.append(
                f'<figure><img src="{png_data_uri(outcome.path)}" alt="{escape(outcome.title)}" '
                f'data-plot="{escape(outcome.key)}">'
                f"<figcaption>{escape(outcome.caption)}</figcaption></figure>"
            )
        else:
            parts.append(f'<p class="skipped">Not shown: {escape(outcome.reason or "no data")}.</p>')
        parts.append("</section>")
    return "".join(parts)


def _variants_table(record: dict[str, Any]) -> str:
    estimates = ("theoretical speedup (estimate)", "kernel-aware (estimate)", "roofline (estimate)")
    headers = [
        "variant",
        "bundle",
        "precision",
        "pattern",
        "params (nz)",
        "MACs",
        "weight size",
        "dense MACs",
        "effective MACs (estimate)",
        *estimates,
        "reference check",
    ]
    rows = []
    for v in record.get("variants", []):
        cost = as_dict(v.get("cost"))
        extra = as_dict(cost.get("theoretical"))
        check = v.get("reference_check")
        if isinstance(check, dict) and check.get("passed"):
            ref = f"passed (max |Δ| {as_float(check.get('max_abs_diff')) or 0.0:.2g})"
        else:
            ref = "not recorded" if check is None else "failed"
        weight = as_float(cost.get("weight_bytes"))
        rows.append(
            [
                str(v.get("name")) + (" (baseline)" if v.get("is_baseline") else ""),
                str(v.get("bundle") or "—"),
                str(v.get("precision") or "—"),
                str(v.get("pattern") or "—"),
                fmt_count(as_float(cost.get("nonzero_params", cost.get("params")))),
                fmt_count(as_float(cost.get("macs"))),
                "—" if weight is None else f"{weight / 2**20:.2f} MiB",
                fmt_count(as_float(cost.get("dense_macs"))),
                fmt_count(as_float(cost.get("effective_macs"))),
                _speedup_text(cost.get("theoretical_speedup")),
                _speedup_text(extra.get("kernel_aware")),
                _speedup_text(extra.get("roofline")),
                ref,
            ]
        )
    numeric = frozenset({"params (nz)", "MACs", "weight size", "dense MACs", "effective MACs (estimate)", *estimates})
    return _table(headers, rows, numeric=numeric)


def _speedup_text(value: Any) -> str:
    number = as_float(value)
    return "—" if number is None else f"{number:.2f}×"


def _power_block(power: dict[str, Any]) -> str:
    energy = as_float(power.get("energy_mj_per_inference"))
    if energy is None:
        reason = power.get("reason") or "no reason recorded"
        return f"<p>Not measured: {escape(str(reason))}. No figure is estimated in its place.</p>"
    samples = power.get("samples")
    shown = {k: v for k, v in power.items() if k != "samples"}
    if isinstance(samples, list):
        shown["samples"] = f"{len(samples)} samples (plotted above)"
    return _kv(shown)


def _provenance_section(records: Sequence[dict[str, Any]]) -> str:
    parts = ['<h2 id="provenance">Provenance</h2>']
    for i, record in enumerate(records):
        created = as_float(record.get("created_unix_s"))
        when = (
            dt.datetime.fromtimestamp(created, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            if created is not None
            else "not recorded"
        )
        runner = record.get("runner") or {}
        prov = dict(record.get("provenance") or {})
        libraries = prov.pop("libraries", None)
        parts.append(
            f"<h3>{escape(record_title(record, i))}</h3>"
            f"<p>File: <code>{escape(str(record.get(SOURCE_KEY, 'given in memory')))}</code> · "
            f"measured {escape(when)} · schema version {escape(str(record.get('schema_version')))}</p>"
            "<h4>Device and software</h4>" + _kv(prov)
        )
        if isinstance(libraries, dict):
            parts.append("<h4>Library versions</h4>" + _kv(libraries))
        parts.append(
            f"<h4>Runner: {escape(str(runner.get('name') or 'not recorded'))}</h4>"
            + _kv(runner.get("settings") or {})
            + "<h4>Timing method</h4>"
            + _kv(record.get("method") or {})
            + "<h4>Memory</h4>"
            + _kv(record.get("memory") or {})
            + "<h4>Power and energy</h4>"
            + _power_block(record.get("power") or {})
            + "<h4>Variants</h4>"
            + _variants_table(record)
        )
        labels = {
            str(v["comparison"]["theoretical_label"])
            for v in record.get("variants", [])
            if isinstance(v.get("comparison"), dict) and v["comparison"].get("theoretical_label")
        }
        if labels:
            parts.append(
                "<p>Theoretical speedup used for comparison:"
                + _est()
                + " "
                + escape("; ".join(sorted(labels)))
                + "</p>"
            )
        other = {k: v for k, v in record.items() if k not in KNOWN_TOP_LEVEL}
        if other:
            parts.append("<h4>Other fields in the record</h4>" + _kv(other))
    return "".join(parts)


def render_html(
    records: Sequence[dict[str, Any]],
    rows: Sequence[Row],
    outcomes: Sequence[PlotOutcome],
    comparison: Comparison | None = None,
) -> str:
    """The whole report as one HTML string (figures inlined, no scripts, no external resources)."""
    generated = dt.datetime.now(tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sources = ", ".join(record_title(r, i) for i, r in enumerate(records))
    drawn = sum(1 for o in outcomes if o.path is not None)
    nav = " · ".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label in [("summary", "Summary")]
        + ([("regression", "Regression check")] if comparison else [])
        + [("figures", "Figures"), ("provenance", "Provenance")]
    )
    body = (
        "<h1>edgeprune report</h1>"
        f'<p class="meta">Generated {escape(generated)} from {len(records)} result record(s): '
        f"{escape(sources)}. {drawn} of {len(outcomes)} figures drawn.</p>"
        f"<p>{nav}</p>"
        '<p class="note">Every figure labelled <span class="estimate">estimate</span> or “theoretical” '
        "comes from the cost model, not from a measurement. Latencies, throughput, memory and power are "
        "measured on the device named under Provenance; where a sensor was missing the report says so "
        "instead of guessing.</p>"
        + _summary_section(rows)
        + (_compare_section(comparison) if comparison is not None else "")
        + _figures_section(outcomes)
        + _provenance_section(records)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>edgeprune report</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def write_html(
    records: Sequence[dict[str, Any]],
    rows: Sequence[Row],
    outcomes: Sequence[PlotOutcome],
    path: Path,
    comparison: Comparison | None = None,
) -> Path:
    """Write :func:`render_html` to ``path`` and return it."""
    path.write_text(render_html(records, rows, outcomes, comparison), encoding="utf-8")
    return path
