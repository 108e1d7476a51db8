"""``edgeprune analyze``: the per-layer cost table of a model, its lint, and its theoretical speedups."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgeprune.cli._common import MODEL_HELP, SHAPE_HELP, console, fmt, user_errors

DEVICE_HELP = (
    "Target for the kernel-aware and roofline figures: host-cpu (measured by a short calibration "
    "run, cached), jetson-nano, jetson-tx2, jetson-xavier-nx, jetson-agx-xavier, jetson-orin-nano, "
    "jetson-orin-nano-super, jetson-orin-nx, jetson-agx-orin."
)


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def analyze(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    input_shape: Annotated[str | None, typer.Option(help=SHAPE_HELP)] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "host-cpu",
    precision: Annotated[str | None, typer.Option(help="fp32, fp16 or int8 (default: the device's usual one).")] = None,
    pattern: Annotated[
        str | None,
        typer.Option(
            help="Sparsity pattern to lint and price: dense, channel, unstructured, nm (2:4). "
            "Default: the pruned model's own pattern."
        ),
    ] = None,
    pattern_aware: Annotated[
        bool,
        typer.Option(
            "--pattern-aware",
            help="Add per-layer effective MACs under each pattern and, for a pruned model, "
            "each layer's three theoretical speedups.",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Batch size the roofline prices.")] = 1,
    storage: Annotated[
        bool,
        typer.Option(
            "--storage",
            help="Add per-layer weight bytes in each sparse storage format (dense, CSR, bitmask, "
            "compressed sparse banks, 2:4, vector/kernel/block CSR) and the smallest.",
        ),
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the analysis as JSON here.")] = None,
) -> None:
    """Per-layer cost table (MACs, parameters, bytes, arithmetic intensity, density), alignment
    warnings, and for a pruned model its theoretical speedup three ways (MAC ratio, kernel-aware,
    roofline), each labelled.

    Examples:

        edgeprune analyze torchvision:resnet18 --device jetson-orin-nx --json resnet18.json

        edgeprune analyze runs/demo/models/nm-2-4 --pattern-aware --storage
    """
    with user_errors():
        from edgeprune.analysis.cost import BYTES_PER_ELEMENT, model_cost
        from edgeprune.analysis.devices import get_device
        from edgeprune.analysis.lint import lint_cost
        from edgeprune.analysis.speedup import normalize_pattern, theoretical_figures
        from edgeprune.errors import UsageError
        from edgeprune.models.spec import build_source, load_model, parse_shape

        if batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if precision is not None and precision not in BYTES_PER_ELEMENT:
            raise UsageError(f"unknown precision '{precision}': use fp32, fp16 or int8")
        if pattern is not None:
            normalize_pattern(pattern)  # reject a bad name before loading anything
        spec = get_device(device)
        chosen = precision or spec.default_precision
        loaded = load_model(model, weights, parse_shape(input_shape) if input_shape else None)
        pruned_pattern = loaded.meta.get("method") if Path(model).is_dir() else None
        layer_pattern = normalize_pattern(pattern or pruned_pattern)
        cost = model_cost(loaded.model, loaded.input_shape)
        warnings = lint_cost(cost, layer_pattern, chosen)

        figures: dict[str, Any] | None = None
        if Path(model).is_dir():
            import torch

            # The baseline's dense counts need shapes only: build it on the meta device (no weights).
            with torch.device("meta"):
                source, _ = build_source(loaded.meta["source"], tuple(loaded.input_shape))
            baseline = model_cost(source, loaded.input_shape)
            figures = theoretical_figures(baseline, cost, layer_pattern, spec, precision=chosen, batch_size=batch_size)

        _print_table(loaded.spec, loaded.input_shape, cost, chosen, batch_size)
        if pattern_aware:
            _print_pattern_table(cost, figures)
        storage_rows: list[dict[str, Any]] | None = None
        if storage:
            from edgeprune.prune.storage import storage_table, storage_totals

            storage_rows = storage_table(loaded.model, value_bits=8 * BYTES_PER_ELEMENT[chosen])
            _print_storage_table(storage_rows, storage_totals(storage_rows), chosen)
        peak = spec.peak(chosen)
        peak_text = (
            f"{chosen} peak {_si(peak, 'FLOP/s')}"
            if peak is not None
            else f"no {chosen} peak, fp32 {_si(spec.peak('fp32') or 0.0, 'FLOP/s')} used"
        )
        console.print(
            f"device: {escape(spec.label)} ({escape(spec.runtime)}); {peak_text}, memory "
            f"{_si(spec.memory_bytes_per_s.value or 0.0, 'B/s')} ({escape(spec.memory_bytes_per_s.how)})",
            style="dim",
            highlight=False,
        )
        if figures is not None:
            console.print(
                f"theoretical speedup vs {escape(loaded.meta['source'])} (batch {batch_size}, estimates):",
                highlight=False,
            )
            for key in ("mac_ratio", "kernel_aware", "roofline"):
                console.print(f"  {figures[key]:6.2f}x  {escape(figures['labels'][key])}", highlight=False)
        for warning in warnings:
            console.print(
                f"[yellow]warning[/yellow] [yellow]{escape(warning['code'])}[/yellow] "
                f"{escape(warning['layer'])}: {escape(warning['message'])}",
                highlight=False,
            )
        if json_out is not None:
            data = {
                **cost.to_dict(),
                "model": loaded.spec,
                "input_shape": list(loaded.input_shape),
                "effective_macs_by_pattern": cost.effective_macs_by_pattern(),
                "pattern": layer_pattern,
                "precision": chosen,
                "batch_size": batch_size,
                "device": spec.to_dict(),
                "lint": warnings,
                "theoretical": figures,
            }
            if storage_rows is not None:
                from edgeprune.prune.storage import storage_totals

                data["storage"] = {"layers": storage_rows, "totals": storage_totals(storage_rows)}
            json_out.write_text(json.dumps(data, indent=1) + "\n")


def _print_table(title: str, input_shape: tuple[int, ...], cost: Any, precision: str, batch_size: int) -> None:
    from edgeprune.analysis.cost import BYTES_PER_ELEMENT

    elt = BYTES_PER_ELEMENT[precision]
    table = Table(title=f"{title}: input {list(input_shape)}, {precision}, batch {batch_size}")
    for column in ("layer", "type", "in", "out", "MACs", "params", "bytes", "FLOP/B", "density"):
        if column == "layer":
            table.add_column(column, no_wrap=True, min_width=min(40, max(len(x.name) for x in cost.layers or [])))
        else:
            table.add_column(column, justify="left" if column == "type" else "right", no_wrap=True)
    for layer in cost.layers:
        table.add_row(
            layer.name,
            layer.type,
            str(layer.in_channels),
            str(layer.out_channels),
            _si(layer.macs),
            _si(layer.params),
            _si(layer.bytes_moved(elt, batch_size), "B"),
            f"{layer.intensity_flop_per_byte(elt, batch_size):.1f}",
            f"{layer.density:.2f}",
        )
    table.add_row(
        "total",
        "",
        "",
        "",
        _si(cost.macs),
        _si(cost.params),
        _si(sum(x.bytes_moved(elt, batch_size) for x in cost.layers), "B"),
        "",
        f"{cost.effective_macs / cost.macs:.2f}" if cost.macs else "",
        style="bold",
    )
    console.print(table)
    console.print(
        "bytes = weights + input and output activations moved per call; FLOP/B = 2 x MACs / bytes "
        "(arithmetic intensity); density = non-zero weights / weights.",
        style="dim",
    )


def _print_pattern_table(cost: Any, figures: dict[str, Any] | None) -> None:
    table = Table(
        title="effective MACs under each pattern"
        + (" and theoretical speedup per layer (estimates)" if figures is not None else "")
    )
    columns = ["layer", "dense", "unstructured", "2:4", "follows 2:4"]
    if figures is not None:
        columns += ["MAC×", "kernel×", "roofline×", "runs on"]
    for column in columns:
        if column == "layer":
            table.add_column(column, no_wrap=True, min_width=min(40, max(len(x.name) for x in cost.layers or [])))
        else:
            table.add_column(column, justify="left" if column == "runs on" else "right", no_wrap=column != "runs on")
    per_layer = {row["name"]: row for row in (figures or {}).get("layers", [])}
    for layer in cost.layers:
        eff = layer.effective_macs_by_pattern
        row = [
            layer.name,
            _si(eff["dense"]),
            _si(eff["unstructured"]),
            _si(eff["nm"]),
            "yes" if layer.follows_2_4 else "no",
        ]
        if figures is not None:
            lf = per_layer.get(layer.name, {})
            row += [
                fmt(lf.get("mac_ratio"), ".2f"),
                fmt(lf.get("kernel_aware"), ".2f"),
                fmt(lf.get("roofline"), ".2f"),
                str(lf.get("kernel", "")) + (f" ({lf['reason']})" if lf.get("reason") else ""),
            ]
        table.add_row(*row)
    totals = cost.effective_macs_by_pattern()
    row = ["total", _si(totals.get("dense", 0.0)), _si(totals.get("unstructured", 0.0)), _si(totals.get("nm", 0.0)), ""]
    if figures is not None:
        row += [f"{figures['mac_ratio']:.2f}", f"{figures['kernel_aware']:.2f}", f"{figures['roofline']:.2f}", ""]
    table.add_row(*row, style="bold")
    console.print(table)


def _print_storage_table(rows: list[dict[str, Any]], totals: dict[str, Any], precision: str) -> None:
    formats = ("dense", "csr", "bitmask", "csb", "nm", "vector_csr", "kernel_csr", "block_csr")
    table = Table(title=f"weight bytes per storage format ({precision} values; computed, not measured)")
    table.add_column("layer", no_wrap=True)
    for column in (*formats, "best", "×"):
        table.add_column(column, justify="left" if column == "best" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["module"],
            *[_si(row[f"{f}_bytes"], "B") if row.get(f"{f}_bytes") is not None else "-" for f in formats],
            row["best_format"],
            f"{row['compression']:.2f}",
        )
    table.add_row(
        "total",
        *[_si(totals[f"{f}_bytes"], "B") for f in formats],
        "per layer",
        f"{totals['compression']:.2f}",
        style="bold",
    )
    console.print(table)
    console.print(
        "- : the layer cannot be stored so (2:4 needs the pattern; banks need a row length they divide); "
        "totals count such layers dense. × = dense bytes / the smallest format's.",
        style="dim",
    )
