"""``edgeprune package``: export, verify and bundle a model for the device."""

from pathlib import Path
from typing import Annotated

import typer

from edgeprune.cli._common import console, user_errors


def package(
    model: Annotated[str, typer.Argument(help="A pruned-model folder or any MODEL spec.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write.")],
    precision: Annotated[str, typer.Option(help="fp32 (fp16 and int8 come with calibration support).")] = "fp32",
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    baseline: Annotated[str | None, typer.Option(help="MODEL spec of the dense baseline.")] = None,
    baseline_weights: Annotated[Path | None, typer.Option(help="Weights of the baseline.")] = None,
) -> None:
    """Export to ONNX, check parity with PyTorch under ONNX Runtime, and write a bundle.

    Example: edgeprune package runs/pruned --out runs/bundles/pruned
    """
    with user_errors():
        from edgeprune.analysis.cost import model_cost
        from edgeprune.export.package import package_model
        from edgeprune.models.spec import load_model

        loaded = load_model(model, weights)
        base_cost = None
        source = loaded.meta.get("source", loaded.spec)
        if baseline is not None:
            base = load_model(baseline, baseline_weights)
            base_cost = model_cost(base.model, base.input_shape)
        elif source != loaded.spec:
            src = load_model(source)
            base_cost = model_cost(src.model, src.input_shape)
        manifest = package_model(
            loaded.model, loaded.input_shape, out, name=Path(model).name if Path(model).is_dir() else model,
            spec=source, pattern=loaded.meta.get("method", "dense"), precision=precision,
            baseline_cost=base_cost, accuracy=loaded.meta.get("accuracy"), summary=loaded.meta.get("summary"),
        )
        console.print(f"bundle {out}: parity max |diff| {manifest['parity']['max_abs_diff']:.2e}, "
                      f"theoretical speedup {manifest['cost']['theoretical_speedup']:.2f}× (MAC ratio)")
