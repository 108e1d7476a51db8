"""``edgeprune package``: export, verify and bundle a model for the device, in FP32, FP16 or INT8."""

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune.bundle import Manifest
from edgeprune.cli._common import (
    DATA_OPTION_HELP,
    MODEL_HELP,
    NORM_HELP,
    SHAPE_HELP,
    console,
    fail,
    fmt,
    progress_steps,
    resolve_task,
    user_errors,
)
from edgeprune.vocab import CALIB_METHODS, PRECISIONS, CalibMethod, Precision


def package(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    out: Annotated[Path, typer.Option(help="Bundle folder to write (replaced only once the new one is complete).")],
    precision: Annotated[
        str, typer.Option(help=f"{Precision.listing()}: fp16 is FP16 ONNX with float32 I/O, int8 Q/DQ, calibrated.")
    ] = "fp32",
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="int8: a .npz of preprocessed inputs or a folder of images (default: training samples of --data)."
        ),
    ] = None,
    calib_method: Annotated[str, typer.Option(help=f"int8: {CalibMethod.listing()}.")] = "entropy",
    calib_samples: Annotated[int, typer.Option(help="int8: calibration samples to use (seeded choice).")] = 256,
    archive: Annotated[bool, typer.Option("--archive", help="Also write OUT.tar.gz beside the folder.")] = False,
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    baseline: Annotated[str | None, typer.Option(help="MODEL spec of the dense baseline.")] = None,
    baseline_weights: Annotated[Path | None, typer.Option(help="Weights of the baseline.")] = None,
    data: Annotated[
        str | None, typer.Option(help="Accuracy of this bundle and INT8 calibration: " + DATA_OPTION_HELP)
    ] = None,
    mean: Annotated[str | None, typer.Option(help=NORM_HELP)] = None,
    std: Annotated[str | None, typer.Option(help=NORM_HELP)] = None,
    input_shape: Annotated[str | None, typer.Option(help=SHAPE_HELP)] = None,
) -> None:
    """Export to ONNX, check parity with PyTorch under ONNX Runtime, and write a bundle.

    fp16 and int8 bundles record their error against FP32 (top-1 agreement, output differences);
    int8 is explicit Q/DQ, so one file serves TensorRT 10, TensorRT 11 and ONNX Runtime.

    Example: edgeprune package runs/demo/models/nm-2-4 --out runs/bundles/nm-int8 --precision int8 --archive

    More: fashion-resnet --weights w.safetensors --data fashion-mnist --precision int8 --out runs/b/fm-int8
    """
    with user_errors():
        if precision not in PRECISIONS:
            raise fail(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if calib_method not in CALIB_METHODS:
            raise fail(f"--calib-method {calib_method!r} is not one of {', '.join(CALIB_METHODS)}")
        if calib_samples < 1:
            raise fail(f"--calib-samples must be positive, got {calib_samples}")
        if calibration is not None and precision != "int8":
            raise fail("--calibration applies to --precision int8 only")
        from edgeprune.bundle import check_replaceable

        check_replaceable(out)
        from edgeprune.analysis.cost import model_cost
        from edgeprune.export.onnx_export import INPUT_NAME
        from edgeprune.export.package import package_model
        from edgeprune.export.quantize import Int8Config
        from edgeprune.models.spec import load_model, parse_shape

        loaded = load_model(model, weights, parse_shape(input_shape) if input_shape else None)
        source = loaded.meta.get("source", loaded.spec)
        task: Any = resolve_task(loaded, data, mean, std)
        calib = None
        if precision == "int8":
            calib = _calibration(calibration, task, INPUT_NAME, loaded.input_shape, calib_samples)
        base_cost = None
        if baseline is not None:
            base = load_model(baseline, baseline_weights)
            base_cost = model_cost(base.model, base.input_shape)
        elif source != loaded.spec:
            src = load_model(source, input_shape=tuple(loaded.input_shape))
            base_cost = model_cost(src.model, src.input_shape)
        reference = None
        if task is not None and task.has_val:
            reference = task.sample(8, "val")[0].numpy()
        summary = dict(loaded.meta.get("summary") or {})
        for key in ("data", "finetune", "accuracy_unpruned", "accuracy_reason", "preprocessing"):
            if key in loaded.meta:
                summary[key] = loaded.meta[key]
        if "finetuned" in loaded.meta:
            summary["finetuned"] = bool(loaded.meta["finetuned"])
        with progress_steps() as step:
            manifest = package_model(
                loaded.model,
                loaded.input_shape,
                out,
                name=Path(model).name if Path(model).is_dir() else model,
                spec=source,
                pattern=loaded.meta.get("method", "dense"),
                precision=precision,
                baseline_cost=base_cost,
                accuracy=loaded.meta.get("accuracy"),
                summary=summary,
                reference_inputs=reference,
                calibration=calib,
                int8=Int8Config(method=calib_method),
                eval_data=task,
                archive=archive,
                step=step,
            )
        _print_summary(out, manifest, archive)


def _calibration(
    source_path: Path | None, task: Any, input_name: str, input_shape: tuple[int, ...], samples: int
) -> Any:
    from edgeprune.export.calibration import digits_calibration, load_calibration, task_calibration

    if source_path is not None:
        return load_calibration(source_path, input_name, input_shape, samples)
    if task is not None and task.name == "digits":
        return digits_calibration(input_shape, samples)  # the committed set, so bundles rebuild bit for bit
    if task is not None:
        return task_calibration(task, samples)
    raise fail(
        "int8 needs a calibration set: give --data (its training samples are used) or --calibration with a "
        ".npz of preprocessed inputs or a folder of images (see calibration/README.md)"
    )


def _print_summary(out: Path, manifest: Manifest, archive: bool) -> None:
    parity = manifest.parity
    precision = manifest.precision
    line = f"bundle {out} ({precision}): parity max |diff| {parity['max_abs_diff']:.2e} (atol {parity['atol']:.2g})"
    vs = parity.get("vs_fp32")
    if vs:
        line += (
            f", vs FP32: top-1 agreement {vs['top1_agreement']:.1%}, max |diff| {vs['max_abs_diff']:.3g} "
            f"on {vs['measured_on']}"
        )
    console.print(line)
    model = manifest.model
    if model.accuracy is not None:
        pytorch = model.extra.get("accuracy_pytorch")
        extra = f" (PyTorch FP32 {fmt(pytorch and 100 * pytorch, '.1f')}%)" if "accuracy_pytorch" in model.extra else ""
        console.print(f"accuracy {100 * model.accuracy:.1f}%{extra}")
    calib = manifest.calibration
    if calib:
        console.print(
            f"calibration: {calib['method']} on {calib['samples']} samples from {calib['source']}"
            + (f" ({calib['capped']})" if calib.get("capped") else "")
        )
    sparsity = manifest.sparsity
    if "eligible_layers" in sparsity:
        console.print(
            f"2:4: {sparsity['eligible_layers']} of {sparsity['checked_layers']} layers eligible for "
            "TensorRT sparse kernels (per-layer reasons in manifest.json)"
        )
    for warning in parity.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    tarball = out.with_name(out.name + ".tar.gz")
    if not archive and tarball.exists():
        console.print(
            f"[yellow]warning:[/yellow] {tarball} is from an earlier run and no longer matches this "
            "bundle: rerun with --archive or delete it"
        )
    console.print(
        f"theoretical speedup {manifest.cost['theoretical_speedup']:.2f}× (MAC ratio)"
        + (f"; archive {tarball}" if archive else "")
    )
