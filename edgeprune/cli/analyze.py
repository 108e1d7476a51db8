"""``edgeprune analyze``: the per-layer cost table of a model."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeprune.cli._common import MODEL_HELP, console, user_errors


def analyze(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the analysis as JSON here.")] = None,
) -> None:
    """Per-layer cost table: MACs, parameters, bytes, density.

    Example: edgeprune analyze torchvision:resnet18 --json resnet18.json
    """
    with user_errors():
        from edgeprune.analysis.cost import model_cost
        from edgeprune.models.spec import load_model

        loaded = load_model(model, weights)
        cost = model_cost(loaded.model, loaded.input_shape)
        table = Table(title=f"{loaded.spec}: input {list(loaded.input_shape)}")
        for column in ("layer", "type", "in", "out", "MACs", "params", "density"):
            table.add_column(column, justify="left" if column in ("layer", "type") else "right")
        for layer in cost.layers:
            table.add_row(layer.name, layer.type, str(layer.in_channels), str(layer.out_channels),
                          f"{layer.macs:,}", f"{layer.params:,}", f"{layer.density:.2f}")
        table.add_row("total", "", "", "", f"{cost.macs:,}", f"{cost.params:,}", "", style="bold")
        console.print(table)
        if json_out is not None:
            json_out.write_text(json.dumps({"model": loaded.spec, "input_shape": list(loaded.input_shape),
                                            **cost.to_dict()}, indent=1) + "\n")
