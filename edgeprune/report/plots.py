"""The report's figures, each one function that writes a PNG.

Every ``*_plot(records, path)`` function returns the path it wrote, or ``None`` when the records hold
no data for it; :func:`render_plots` runs them all and keeps the reason for each one skipped, so the
HTML can say *why* a figure is missing instead of leaving a hole.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state, no
display needed), so the report renders the same on a headless CI runner, a laptop and a Jetson.
Anything computed by a model rather than measured carries "(estimate)" in its axis label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import missing
from edgeprune.report.load import as_dict, as_float, batch_keys, record_title, variant_refs
from edgeprune.report.table import fmt_count

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
MAX_LAYERS_SHOWN = 20
MAX_PANELS = 6


class NoData(Exception):
    """Raised inside a plot function when the records hold nothing to draw; carries the reason."""


@dataclass(frozen=True)
class PlotOutcome:
    """What became of one figure.

    Attributes:
        key: file stem and anchor, e.g. ``speedup``.
        title: heading shown above it in the report.
        caption: what the figure shows and which parts are estimates.
        path: the PNG written, or None when skipped.
        reason: why it was skipped (None when drawn).
    """

    key: str
    title: str
    caption: str
    path: Path | None
    reason: str | None = None


def _figure(width: float = 7.5, height: float = 4.8, ncols: int = 1, nrows: int = 1) -> tuple[Figure, list[Axes]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise missing("matplotlib", "host") from None
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No Software/date metadata: the same records give byte-identical figures.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _ideal_line(ax: Axes, values: Sequence[float]) -> None:
    top = max([1.0, *values]) * 1.1
    ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="ideal (y = x)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)


# --- 1. accuracy against operations (Canziani et al., Figure 2) -----------------------------------------


def _accuracy_ops(records: Sequence[dict[str, Any]], path: Path) -> Path:
    points: dict[tuple[str, str], tuple[str, float, float, float | None]] = {}
    for ref in variant_refs(records):
        v = ref.variant
        cost = v.get("cost") or {}
        ops = as_float(cost.get("effective_macs"))
        if ops is None:
            ops = as_float(cost.get("macs"))
        accuracy = as_float(v.get("accuracy"))
        if ops is None or accuracy is None:
            continue
        # The same bundle appears in several records (a shared baseline); its cost and accuracy do not
        # depend on the run, so plot it once.
        points.setdefault(
            (str(v.get("name")), str(v.get("bundle"))),
            (str(v.get("name")), ops, accuracy, as_float(cost.get("nonzero_params", cost.get("params")))),
        )
    if not points:
        raise NoData("no variant records both its accuracy and its MACs (accuracy is null in the manifests)")
    fig, (ax,) = _figure()
    params = [p for *_, p in points.values() if p is not None]
    largest = max(params) if params else 1.0
    as_percent = all(0.0 <= acc <= 1.0 for _, _, acc, _ in points.values())
    # Canziani et al. plot G-ops; small edge models read better in M-ops or k-ops.
    top_ops = 2 * max(ops for _, ops, _, _ in points.values())
    scale, unit = next(((f, u) for f, u in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if top_ops >= f), (1.0, ""))
    for color, (name, ops, acc, n_params) in zip(_colors(len(points)), points.values(), strict=False):
        size = 40 + 1400 * (n_params / largest) if n_params else 40
        x, y = ops * 2 / scale, (acc * 100 if as_percent else acc)
        ax.scatter([x], [y], s=size, alpha=0.55, color=color, edgecolors="black", linewidths=0.6)
        ax.annotate(
            f"{name}\n{fmt_count(n_params)} non-zero params",
            (x, y),
            fontsize=8,
            xytext=(6, 6),
            textcoords="offset points",
        )
    ax.set_xlabel(
        f"operations per inference, {unit}-ops (2 × effective MACs, cost-model estimate)"
        if unit
        else "operations per inference (2 × effective MACs, cost-model estimate)"
    )
    ax.set_ylabel("accuracy (%)" if as_percent else "accuracy")
    ax.set_title("Accuracy against operations; marker area ∝ non-zero parameters")
    ax.margins(0.25)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


# --- 2. theoretical against measured speedup ------------------------------------------------------------


_ESTIMATE_MARKERS = {
    "mac_ratio": ("o", "MAC ratio"),
    "kernel_aware": ("s", "kernel-aware"),
    "roofline": ("^", "roofline"),
}


def _speedup(records: Sequence[dict[str, Any]], path: Path) -> Path:
    # (variant label, batch, estimate kind) -> (theoretical, measured)
    points: list[tuple[str, int, str, float, float]] = []
    for ref in variant_refs(records):
        v = ref.variant
        per_batch = as_dict(as_dict(v.get("comparison")).get("per_batch"))
        cost = as_dict(v.get("cost"))
        extra = as_dict(cost.get("theoretical"))
        for key in batch_keys(per_batch):
            entry = as_dict(per_batch[key])
            measured = as_float(entry.get("measured_speedup"))
            primary = as_float(entry.get("theoretical_speedup"))
            if primary is None:
                primary = as_float(cost.get("theoretical_speedup"))
            if measured is None:
                continue
            if primary is not None:
                points.append((ref.label, int(key), "mac_ratio", primary, measured))
            for kind in ("kernel_aware", "roofline"):
                value = as_float(extra.get(kind))
                if value is not None:
                    points.append((ref.label, int(key), kind, value, measured))
    if not points:
        raise NoData("no variant was measured against a baseline in the same run (bench with --baseline)")
    fig, (ax,) = _figure()
    batches = sorted({b for _, b, *_ in points})
    colors = dict(zip(batches, _colors(len(batches)), strict=False))
    seen: set[str] = set()
    for label, batch, kind, theo, meas in points:
        marker, kind_name = _ESTIMATE_MARKERS[kind]
        legend = f"batch {batch}, {kind_name} (estimate)"
        # The primary estimate is filled; the other estimates are hollow markers of the same colour.
        primary = kind == "mac_ratio"
        ax.scatter(
            [theo],
            [meas],
            marker=marker,
            s=55,
            facecolors=colors[batch] if primary else "none",
            edgecolors="black" if primary else colors[batch],
            linewidths=0.5 if primary else 1.4,
            label=None if legend in seen else legend,
        )
        seen.add(legend)
        if kind == "mac_ratio":
            ax.annotate(label, (theo, meas), fontsize=8, xytext=(5, -10), textcoords="offset points")
    _ideal_line(ax, [p[3] for p in points] + [p[4] for p in points])
    ax.set_xlabel("theoretical speedup (estimate)")
    ax.set_ylabel("measured speedup (baseline p50 / variant p50)")
    ax.set_title("Theoretical against measured speedup")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


# --- 3. latency and throughput against batch size -------------------------------------------------------


def _latency_batch(records: Sequence[dict[str, Any]], path: Path) -> Path:
    series = []
    for ref in variant_refs(records):
        latency = ref.variant.get("latency") or {}
        keys = batch_keys(latency)
        if keys:
            series.append((ref.label, [int(k) for k in keys], [latency[k] for k in keys]))
    if not series:
        raise NoData("no latency figures in the records")
    fig, (lat_ax, thr_ax) = _figure(width=10, height=4.5, ncols=2)
    for color, (label, batches, stats) in zip(_colors(len(series)), series, strict=False):
        p50 = [float(s["p50_ms"]) for s in stats]
        lower, upper = [], []
        for s, mid in zip(stats, p50, strict=False):
            ci = s.get("p50_ci95_ms")
            ok = isinstance(ci, list) and len(ci) == 2 and all(as_float(c) is not None for c in ci)
            lower.append(max(mid - float(ci[0]), 0.0) if ok else 0.0)
            upper.append(max(float(ci[1]) - mid, 0.0) if ok else 0.0)
        lat_ax.errorbar(batches, p50, yerr=[lower, upper], marker="o", capsize=3, color=color, label=label)
        throughput = [as_float(s.get("throughput_per_s")) for s in stats]
        thr = [
            t if t is not None else (b * 1000.0 / m if m > 0 else 0.0)
            for t, b, m in zip(throughput, batches, p50, strict=False)
        ]
        thr_ax.plot(batches, thr, marker="o", color=color, label=label)
    all_batches = sorted({b for _, bs, _ in series for b in bs})
    for ax in (lat_ax, thr_ax):
        if len(all_batches) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(all_batches, [str(b) for b in all_batches])
        ax.set_xlabel("batch size")
        ax.grid(True, alpha=0.3)
    lat_ax.set_ylabel("p50 latency per batch (ms), 95% CI")
    lat_ax.set_title("Latency")
    thr_ax.set_ylabel("throughput (inferences / s, from p50)")
    thr_ax.set_title("Throughput")
    thr_ax.legend(fontsize=8)
    return _save(fig, path)


# --- 4. and 5. per-layer explanation --------------------------------------------------------------------


def _layer_sets(records: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    sets = []
    for ref in variant_refs(records):
        layers = ref.variant.get("layers")
        if isinstance(layers, list):
            usable = [layer for layer in layers if isinstance(layer, dict) and "name" in layer]
            if usable:
                sets.append((ref.label, usable))
    return sets


_NO_LAYERS = "no per-layer profile in the records (the runner did not profile layers)"


def _layer_time_share(records: Sequence[dict[str, Any]], path: Path) -> Path:
    sets: list[tuple[str, list[tuple[str, float]]]] = []
    for label, layers in _layer_sets(records):
        raw = [(str(layer["name"]), as_float(layer.get("time_share"))) for layer in layers]
        known = [(name, share) for name, share in raw if share is not None]
        if known:
            sets.append((label, known))
    sets = sets[:MAX_PANELS]
    if not sets:
        raise NoData(_NO_LAYERS if not _layer_sets(records) else "the layer profiles carry no time_share")
    shown = [sorted(shares, key=lambda item: -item[1])[:MAX_LAYERS_SHOWN] for _, shares in sets]
    height = max(3.0, 0.28 * max(len(s) for s in shown) + 1.2)
    fig, axes = _figure(width=6.0 * len(sets), height=height, ncols=len(sets))
    for ax, (label, shares), top in zip(axes, sets, shown, strict=False):
        names = [n for n, _ in reversed(top)]
        # Profiles may give shares as fractions or as percentages; show percentages either way.
        scale = 100.0 if max(v for _, v in shares) <= 1.0 else 1.0
        values = [v * scale for _, v in reversed(top)]
        ax.barh(names, values, color="#4c72b0")
        ax.set_xlabel("share of measured time (%)")
        more = f" (top {len(top)} of {len(shares)})" if len(shares) > len(top) else ""
        ax.set_title(f"{label}{more}", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def _layer_speedup(records: Sequence[dict[str, Any]], path: Path) -> Path:
    sets = []
    for label, layers in _layer_sets(records):
        pts = []
        for layer in layers:
            theo, meas = as_float(layer.get("theoretical_speedup")), as_float(layer.get("measured_speedup"))
            if theo is not None and meas is not None:
                pts.append((str(layer["name"]), theo, meas, as_float(layer.get("time_share")) or 0.0))
        if pts:
            sets.append((label, pts))
    if not sets:
        raise NoData(
            _NO_LAYERS
            if not _layer_sets(records)
            else "the layer profiles carry no pair of theoretical and measured speedups"
        )
    fig, (ax,) = _figure()
    values: list[float] = []
    for color, (label, pts) in zip(_colors(len(sets)), sets, strict=False):
        ax.scatter(
            [p[1] for p in pts],
            [p[2] for p in pts],
            s=[30 + 400 * p[3] for p in pts],
            color=color,
            alpha=0.6,
            edgecolors="black",
            linewidths=0.5,
            label=label,
        )
        for name, theo, meas, _ in sorted(pts, key=lambda p: -p[3])[:5]:
            ax.annotate(name, (theo, meas), fontsize=7, xytext=(4, 4), textcoords="offset points")
        values += [p[1] for p in pts] + [p[2] for p in pts]
    _ideal_line(ax, values)
    ax.set_xlabel("theoretical layer speedup (estimate)")
    ax.set_ylabel("measured layer speedup")
    ax.set_title("Per-layer achieved against theoretical speedup; marker area ∝ time share")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# --- 6. sensitivity -------------------------------------------------------------------------------------


def _sensitivity(records: Sequence[dict[str, Any]], path: Path) -> Path:
    panels: list[tuple[str, list[tuple[str, list[float], list[float]]]]] = []
    seen: list[list[tuple[str, list[float], list[float]]]] = []
    for ref in variant_refs(records):
        curves = []
        for entry in ref.variant.get("sensitivity") or []:
            if not isinstance(entry, dict):
                continue
            xs, ys = entry.get("sparsity"), entry.get("accuracy")
            if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or not xs:
                continue
            fx, fy = [as_float(x) for x in xs], [as_float(y) for y in ys]
            pairs = [(x, y) for x, y in zip(fx, fy, strict=False) if x is not None and y is not None]
            if pairs:
                curves.append((str(entry.get("layer", "?")), [p[0] for p in pairs], [p[1] for p in pairs]))
        # A sensitivity scan belongs to the dense model, so variants often repeat it: draw it once.
        if curves and curves not in seen:
            seen.append(curves)
            panels.append((ref.label, curves))
    if not panels:
        raise NoData("no sensitivity scan in the records (run the pruner's sensitivity analysis)")
    panels = panels[:MAX_PANELS]
    fig, axes = _figure(width=6.5 * len(panels), height=4.5, ncols=len(panels))
    for ax, (label, curves) in zip(axes, panels, strict=False):
        for color, (layer, xs, ys) in zip(_colors(len(curves)), curves, strict=False):
            ax.plot(xs, ys, marker=".", color=color, label=layer)
        ax.set_xlabel("sparsity of the layer")
        ax.set_ylabel("accuracy")
        ax.set_title(f"Sensitivity ({label})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncols=2 if len(curves) > 8 else 1)
    return _save(fig, path)


# --- 7. power over time ---------------------------------------------------------------------------------


def _power(records: Sequence[dict[str, Any]], path: Path) -> Path:
    panels = []
    reasons = []
    for i, record in enumerate(records):
        power = record.get("power") or {}
        samples = power.get("samples")
        pts = []
        if isinstance(samples, list):
            for sample in samples:
                if isinstance(sample, (list, tuple)) and len(sample) == 2:
                    t, mw = as_float(sample[0]), as_float(sample[1])
                    if t is not None and mw is not None:
                        pts.append((t, mw))
        if pts:
            window = power.get("window_s")
            span = None
            if isinstance(window, list) and len(window) == 2:
                t0, t1 = as_float(window[0]), as_float(window[1])
                span = (t0, t1) if t0 is not None and t1 is not None else None
            panels.append((record_title(record, i), pts, span, power))
        else:
            reasons.append(f"{record_title(record, i)}: {power.get('reason') or 'no power samples recorded'}")
    if not panels:
        raise NoData("power was not measured (" + "; ".join(reasons) + ")")
    panels = panels[:MAX_PANELS]
    fig, axes = _figure(width=7.5, height=3.2 * len(panels), nrows=len(panels))
    for ax, (title, pts, window, power) in zip(axes, panels, strict=False):
        ax.plot([p[0] for p in pts], [p[1] / 1000.0 for p in pts], color="#c44e52", linewidth=1)
        if window is not None:
            ax.axvspan(window[0], window[1], color="#55a868", alpha=0.2, label="measured window")
            ax.legend(fontsize=8, loc="upper right")
        energy = as_float(power.get("energy_mj_per_inference"))
        suffix = f", {energy:.3g} mJ / inference (measured)" if energy is not None else ""
        ax.set_title(f"{title}{suffix}", fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("power (W)")
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


# --- registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotSpec:
    """One figure of the report: file stem, heading, caption and the function that draws it."""

    key: str
    title: str
    caption: str
    draw: Callable[[Sequence[dict[str, Any]], Path], Path]


PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec(
        "accuracy_ops",
        "Accuracy against operations",
        "After Canziani et al. (2016), Figure 2, for these variants: operations are the cost model's "
        "effective MACs (an estimate), marker area is proportional to the non-zero parameter count.",
        _accuracy_ops,
    ),
    PlotSpec(
        "speedup",
        "Theoretical against measured speedup",
        "Each point is one variant at one batch size; x is the theoretical speedup (an estimate from "
        "the cost model; hollow markers are the other estimates where recorded), y is the measured "
        "speedup against the baseline timed in the same run. Points below the dashed ideal line "
        "(y = x) fall short of the estimate.",
        _speedup,
    ),
    PlotSpec(
        "latency_batch",
        "Latency and throughput against batch size",
        "p50 latency with its bootstrap 95% confidence interval, and throughput derived from the p50 (both measured).",
        _latency_batch,
    ),
    PlotSpec(
        "layer_time_share",
        "Per-layer time share",
        "Share of the measured time spent in each layer, from the runner's profile.",
        _layer_time_share,
    ),
    PlotSpec(
        "layer_speedup",
        "Per-layer achieved against theoretical speedup",
        "x is the layer's theoretical speedup (an estimate), y what the profile measured; the dashed "
        "line is the ideal (y = x).",
        _layer_speedup,
    ),
    PlotSpec(
        "sensitivity",
        "Sensitivity",
        "Accuracy as each layer alone is pruned to a given sparsity (measured on the host).",
        _sensitivity,
    ),
    PlotSpec(
        "power",
        "Power over time",
        "Power samples from the device's sensor (measured); the shaded span is the window the energy "
        "per inference was computed over.",
        _power,
    ),
)
PLOTS_BY_KEY = {spec.key: spec for spec in PLOTS}


def render_plot(key: str, records: Sequence[dict[str, Any]], path: Path) -> PlotOutcome:
    """Draw one figure by key, or record why it was skipped."""
    spec = PLOTS_BY_KEY[key]
    try:
        written = spec.draw(records, path)
    except NoData as exc:
        return PlotOutcome(spec.key, spec.title, spec.caption, None, str(exc))
    return PlotOutcome(spec.key, spec.title, spec.caption, written)


def render_plots(
    records: Sequence[dict[str, Any]], out_dir: Path, on_progress: Callable[[str], None] | None = None
) -> list[PlotOutcome]:
    """Draw every figure into ``out_dir`` as ``<key>.png``; skipped ones carry their reason."""
    outcomes = []
    for spec in PLOTS:
        if on_progress is not None:
            on_progress(spec.title)
        outcomes.append(render_plot(spec.key, records, out_dir / f"{spec.key}.png"))
    return outcomes


def accuracy_ops_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy against operations, marker size by parameters; None when no variant records accuracy."""
    return render_plot("accuracy_ops", records, path).path


def speedup_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Theoretical (estimate) against measured speedup with the ideal line; None without a baseline."""
    return render_plot("speedup", records, path).path


def latency_batch_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """p50 latency (with CI) and throughput against batch size, one line per variant."""
    return render_plot("latency_batch", records, path).path


def layer_time_share_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Per-layer share of the measured time; None when no layer profile was recorded."""
    return render_plot("layer_time_share", records, path).path


def layer_speedup_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Per-layer achieved against theoretical speedup; None when no layer profile was recorded."""
    return render_plot("layer_speedup", records, path).path


def sensitivity_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Sensitivity curves; None when no sensitivity scan was recorded."""
    return render_plot("sensitivity", records, path).path


def power_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Power over time with the measured window; None when power was not measured."""
    return render_plot("power", records, path).path


# --- small helpers --------------------------------------------------------------------------------------


def _colors(n: int) -> list[str]:
    palette = [
        "#4c72b0",
        "#dd8452",
        "#55a868",
        "#c44e52",
        "#8172b3",
        "#937860",
        "#da8bc3",
        "#8c8c8c",
        "#ccb974",
        "#64b5cd",
    ]
    return [palette[i % len(palette)] for i in range(n)]
