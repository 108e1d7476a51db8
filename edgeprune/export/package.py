"""Package a (pruned) model into a bundle: ONNX in the chosen precision, reference data, manifest.

The manifest carries everything the device needs to judge the model without torch: its inputs and
outputs, its precision and how each TensorRT version should build it, the per-layer 2:4
eligibility of its weights, its cost and theoretical speedup against a baseline, and the parity of
the export. ``reference.npz`` holds inputs with the expected outputs so the device re-checks
correctness (within ``parity.atol``) before it measures anything.

Precisions, and what "parity" means for each:

* **fp32**: ONNX Runtime against PyTorch, tight (``|ort - torch| <= 1e-4 + 1e-3 |torch|``); a
  miss fails the export. ``reference.npz`` holds PyTorch's outputs.
* **fp16**: the FP16 ONNX (float32 I/O) against PyTorch FP32, with a tolerance of 1% of the output
  scale (the largest |output| on the reference inputs): FP16 rounding of a healthy network is
  ~0.1% of it, a wrong model is ~100%. ``reference.npz`` holds PyTorch's FP32 outputs, so the device
  check covers the whole FP16 error whichever way its TensorRT gets there.
* **int8**: the quantization error is measured and recorded (``parity.vs_fp32``: top-1 agreement
  and output differences against FP32 PyTorch); the export fails only on gross breakage (top-1
  agreement below 90%). ``reference.npz`` holds the INT8 model's *own* outputs under exact Q/DQ
  arithmetic, and ``parity.atol`` is 5% of the output scale, so the device check tests the
  runtime (TensorRT or ONNX Runtime int8 kernels) rather than re-measuring the quantization.

Every artifact passes the onnx checker and strict shape inference and keeps a symbolic batch; a
bundle that fails any check is never written (an older bundle in its place stays untouched).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune import bundle as bundle_mod
from edgeprune.analysis.cost import ModelCost, model_cost, theoretical_speedup
from edgeprune.analysis.lint import lint_cost
from edgeprune.analysis.speedup import theoretical_figures
from edgeprune.data.task import Task, iterate, tensor_task
from edgeprune.device.provenance import library_versions
from edgeprune.errors import ExportError, UsageError
from edgeprune.export.calibration import CalibrationSet
from edgeprune.export.onnx_export import (
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    check_parity,
    export_onnx,
    run_ort,
    verify_onnx,
)
from edgeprune.export.quantize import Int8Config
from edgeprune.export.sparsity import RULE, check_sparsity
from edgeprune.train import evaluate
from edgeprune.vocab import NM_NAMES

REFERENCE_SAMPLES = 8
FP32_ATOL, FP32_RTOL = 1e-4, 1e-3
FP16_REL_ATOL = 0.01
INT8_REL_ATOL = 0.05
# TensorRT runs FP32 layers in TF32 on Ampere and later (Orin included) unless told not to.
TF32_REL_ATOL = 0.01
MIN_TOP1_AGREEMENT = 0.90
MIN_AGREEMENT_SAMPLES = 16
EVAL_BATCH = 512
MAX_JUDGE_SAMPLES = 1024
FP32_MODEL_FILE = "model_fp32.onnx"
CALIB_FILE = "calib.npz"
CALIB_MAX_BYTES = 16 << 20

Step = Callable[[str, int, int], None]


def layer_sparsity(model: nn.Module, pattern: str, cost: ModelCost, onnx_model: Any) -> list[dict[str, Any]]:
    """Per-layer record of the packaged ONNX's weights; for N:M, the TensorRT 2:4 verdict and why.

    Layers are named by their PyTorch module path where the ONNX node name tells it (else the node
    name); ``density`` is the PyTorch layer's when known, the ONNX initializer's otherwise.
    """
    densities = {layer.name: layer.density for layer in cost.layers}
    names = [name for name, _ in model.named_modules()]
    layers = []
    for check in check_sparsity(onnx_model, names):
        record: dict[str, Any] = {
            "name": check.module or check.node,
            "onnx_node": check.node,
            "op": check.op,
            "density": densities.get(check.module or "", check.density),
        }
        if pattern in NM_NAMES:
            record.update(
                {
                    "nm_2_4": check.eligible,
                    "initializer": check.initializer,
                    "shape": check.shape,
                    "axis": check.axis,
                    "through": check.path,
                    "groups": check.groups,
                    "violations": check.violations,
                }
            )
            if not check.eligible:
                record["nm_reason"] = check.reason
        layers.append(record)
    return layers


def as_calibration_set(calibration: CalibrationSet | np.ndarray, input_shape: tuple[int, ...]) -> CalibrationSet:
    """Wrap a bare array as a calibration set (checking its shape) or pass a set through.

    Raises:
        UsageError: the array does not have shape ``[N, *input_shape]``.
    """
    if isinstance(calibration, CalibrationSet):
        data = calibration.data
    else:
        data = np.asarray(calibration)
    if data.ndim != len(input_shape) + 1 or tuple(data.shape[1:]) != tuple(input_shape) or len(data) == 0:
        raise UsageError(
            f"calibration data has shape {tuple(data.shape)}, the model needs [N, {', '.join(map(str, input_shape))}]"
        )
    if isinstance(calibration, CalibrationSet):
        return calibration
    return CalibrationSet(np.ascontiguousarray(data, dtype=np.float32), "array", "array", int(len(data)))


def _torch_outputs(model: nn.Module, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    with torch.no_grad():
        parts = [model(torch.from_numpy(inputs[i : i + batch_size])).numpy() for i in range(0, len(inputs), batch_size)]
    return np.concatenate(parts)


def _agreement(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return {
        "samples": int(len(want)),
        "top1_agreement": float(np.mean(got.argmax(1) == want.argmax(1))),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }


def _runtime_notes(precision: str) -> dict[str, Any]:
    """How each runtime should build this bundle (the engine builder reads ``precision``)."""
    if precision == "fp32":
        return {
            "onnx": "float32",
            "tensorrt_10": {"model_file": bundle_mod.MODEL_FILE, "builder_flags": []},
            "tensorrt_11": {"model_file": bundle_mod.MODEL_FILE, "builder_flags": []},
            "onnxruntime": {"model_file": bundle_mod.MODEL_FILE},
            "note": "TensorRT runs FP32 layers in TF32 on Ampere and later (Orin) by default; "
            "parity.atol_tensorrt allows for it",
        }
    if precision == "fp16":
        return {
            "onnx": "float16 weights and activations; float32 inputs and outputs with Cast nodes inside "
            "(keep_io_types), so the device feeds the same float32 arrays as for FP32",
            "tensorrt_10": {
                "model_file": bundle_mod.MODEL_FILE,
                "builder_flags": ["FP16"],
                "alternative": {
                    "model_file": FP32_MODEL_FILE,
                    "builder_flags": ["FP16"],
                    "note": "TensorRT 10 (weak typing) may instead build the FP32 model with the "
                    "FP16 flag and choose each layer's precision itself",
                },
            },
            "tensorrt_11": {
                "model_file": bundle_mod.MODEL_FILE,
                "builder_flags": [],
                "note": "strongly typed: FP16 comes from the graph (the FP16 flag was removed)",
            },
            "onnxruntime": {
                "model_file": bundle_mod.MODEL_FILE,
                "note": "CPU providers run most FP16 ops through inserted casts to FP32",
            },
        }
    return {
        "onnx": "explicit quantization: int8 QuantizeLinear/DequantizeLinear pairs (symmetric, per-channel "
        "weights) around float32 ops; float32 inputs and outputs",
        "tensorrt_10": {
            "model_file": bundle_mod.MODEL_FILE,
            "builder_flags": ["INT8", "FP16"],
            "note": "no calibrator: the scales come from the Q/DQ nodes",
        },
        "tensorrt_11": {
            "model_file": bundle_mod.MODEL_FILE,
            "builder_flags": [],
            "note": "strongly typed; implicit INT8 calibration was removed in 11.0, Q/DQ is the only way; "
            "ops outside Q/DQ pairs run in float32 (the scales' type)",
        },
        "onnxruntime": {
            "model_file": bundle_mod.MODEL_FILE,
            "note": "the CPU provider fuses Q/DQ groups into int8 kernels",
        },
    }


def package_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    out_dir: Path,
    *,
    name: str,
    spec: str,
    pattern: str = "dense",
    precision: str = "fp32",
    baseline_cost: ModelCost | None = None,
    reference_inputs: np.ndarray | None = None,
    accuracy: float | None = None,
    summary: dict[str, Any] | None = None,
    batch_sizes: tuple[int, ...] = (1, 32),
    calibration: CalibrationSet | np.ndarray | None = None,
    int8: Int8Config | None = None,
    eval_data: Task | tuple[np.ndarray, np.ndarray] | None = None,
    archive: bool = False,
    step: Step | None = None,
) -> bundle_mod.Manifest:
    """Export, verify and write a bundle folder; returns its manifest.

    Args:
        model: the model to package (not modified).
        input_shape: one sample's shape, e.g. ``(1, 32, 32)``.
        out_dir: the bundle folder; replaced atomically, untouched on failure.
        name: the variant label shown in reports.
        spec: the model spec it came from.
        pattern: dense, unstructured, nm or channel.
        precision: fp32, fp16 or int8 (see the module docstring).
        baseline_cost: the dense model's cost, for the theoretical speedup.
        reference_inputs: inputs for parity and reference.npz; default the first calibration
            samples, else random normal.
        accuracy: the PyTorch model's test accuracy, if known.
        summary: pruning summary to record.
        batch_sizes: batch sizes the device should build and measure for.
        calibration: required for int8: preprocessed inputs ``[N, *input_shape]``.
        int8: quantization options (method and the rest); default :class:`Int8Config`.
        eval_data: a task (its validation split and metric) or (inputs, labels) arrays, to measure
            the packaged model's own accuracy under ONNX Runtime, recorded as ``model.accuracy``;
            PyTorch's goes to ``model.accuracy_pytorch``.
        archive: also write ``<out_dir>.tar.gz`` beside the folder.
        step: progress callback ``(label, done, total)``.

    Raises:
        UsageError: unknown precision, int8 without calibration, calibration of the wrong shape.
        BundleError: ``out_dir`` holds something other than a bundle.
        ExportError: the export fails, its outputs do not match PyTorch, or INT8 breaks the model.
    """
    say: Step = step or (lambda label, done, total: None)
    bundle_mod.check_replaceable(Path(out_dir))
    task = _eval_task(eval_data)
    if precision not in bundle_mod.PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(bundle_mod.PRECISIONS)}")
    calib = as_calibration_set(calibration, input_shape) if calibration is not None else None
    if precision == "int8" and calib is None:
        raise UsageError("int8 needs a calibration set: pass --calibration (a .npz or a folder of images)")
    int8 = int8 or Int8Config()
    model = model.eval()
    if reference_inputs is None:
        if calib is not None:
            reference_inputs = calib.data[:REFERENCE_SAMPLES]
        else:
            rng = np.random.default_rng(0)
            reference_inputs = rng.standard_normal((REFERENCE_SAMPLES, *input_shape)).astype(np.float32)
    reference_inputs = np.ascontiguousarray(reference_inputs, dtype=np.float32)
    cost = model_cost(model, input_shape)
    base = baseline_cost or cost
    steps = 4 if precision == "fp32" else 5
    label = f"package {name} ({precision})"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        say(label, 0, steps)
        fp32_path = export_onnx(model, input_shape, tmp / FP32_MODEL_FILE)
        export_parity, expected = check_parity(model, fp32_path, reference_inputs, atol=FP32_ATOL, rtol=FP32_RTOL)
        if not export_parity.passed:
            raise ExportError(
                f"{name}: ONNX Runtime output differs from PyTorch by {export_parity.max_abs_diff:.3g} "
                f"(atol {export_parity.atol}, rtol {export_parity.rtol}); the bundle was not written"
            )
        scale = max(float(np.max(np.abs(expected))), 1e-6)
        say(label, 1, steps)
        files: dict[str, Path] = {}
        extra: dict[str, Any] = {}
        if precision == "fp32":
            model_path, ref_outputs = fp32_path, expected
            parity: dict[str, Any] = {
                **asdict(export_parity),
                "reference": "reference.npz outputs are PyTorch's; ONNX Runtime CPU vs PyTorch eager",
                "atol_tensorrt": TF32_REL_ATOL * scale,
            }
        else:
            say(label, 2, steps)
            judge, judged_on = _judge_set(reference_inputs, calib, task)
            want = _torch_outputs(model, judge)
            if precision == "fp16":
                model_path, parity, ref_outputs, extra = _fp16(
                    fp32_path, tmp, reference_inputs, expected, scale, judge, judged_on, want, name
                )
                files[FP32_MODEL_FILE] = fp32_path
            else:
                assert calib is not None
                model_path, parity, ref_outputs, extra = _int8(
                    fp32_path, tmp, calib, int8, reference_inputs, scale, judge, judged_on, want, name
                )
            parity["export"] = {**asdict(export_parity), "reference": "FP32 ONNX on ONNX Runtime CPU vs PyTorch"}
        parity["output_scale"] = scale
        say(label, steps - 2 if precision == "fp32" else steps - 1, steps)
        proto = verify_onnx(model_path)
        model_extra: dict[str, Any] = {}
        if task is not None:
            model_extra = _evaluate(model_path, task, exact=False)
            if accuracy is None:
                accuracy = evaluate(model, task)
            model_extra["accuracy_pytorch"] = accuracy
            if precision == "int8":
                model_extra["accuracy_exact_qdq"] = _evaluate(model_path, task, exact=True)["accuracy"]
        model_info = bundle_mod.ModelInfo(
            spec=spec,
            pattern=pattern,
            accuracy=model_extra.pop("accuracy", accuracy),
            summary=dict(summary or {}),
            extra=model_extra,
        )
        ref_path = tmp / bundle_mod.REFERENCE_FILE
        np.savez(
            ref_path,
            **{
                f"input:{INPUT_NAME}": reference_inputs,  # type: ignore[arg-type]
                f"output:{OUTPUT_NAME}": ref_outputs,
            },
        )
        files = {bundle_mod.MODEL_FILE: model_path, bundle_mod.REFERENCE_FILE: ref_path, **files}
        if precision == "int8" and calib is not None:
            extra["calibration"]["file"] = _calib_file(calib, int(extra["calibration"]["samples"]), tmp, files)
        layers = layer_sparsity(model, pattern, cost, proto)
        sparsity = _sparsity_record(pattern, precision, layers)
        num_outputs = int(expected.shape[1])
        manifest = bundle_mod.Manifest(
            name=name,
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            precision=precision,
            precision_detail=_runtime_notes(precision),
            model=model_info,
            inputs=(bundle_mod.TensorSpec(INPUT_NAME, ("batch", *input_shape)),),
            outputs=(bundle_mod.TensorSpec(OUTPUT_NAME, ("batch", num_outputs)),),
            batch_sizes=tuple(batch_sizes),
            onnx_opset=OPSET,
            sparsity=sparsity,
            cost={
                "macs": cost.macs,
                "effective_macs": cost.effective_macs,
                "dense_macs": base.macs,
                "params": cost.params,
                "nonzero_params": cost.nonzero_params,
                "weight_bytes": cost.weight_bytes,
                "theoretical_speedup": theoretical_speedup(base, cost),
                "theoretical_label": "MAC ratio (baseline dense MACs / effective MACs), estimate",
                "theoretical": _theoretical(base, cost, pattern),
            },
            lint=lint_cost(cost, pattern, precision),
            parity=parity,
            tool_versions={k: v for k, v in library_versions().items() if v is not None},
            calibration=extra.get("calibration"),
            fp16=extra.get("fp16"),
        )
        written = _write(Path(out_dir), manifest, files)
    if archive:
        archive_path = Path(out_dir).with_name(Path(out_dir).name + ".tar.gz")
        try:
            bundle_mod.pack_bundle(Path(out_dir), archive_path)
        except OSError as err:
            raise ExportError(f"cannot write archive {archive_path}: {err}") from err
    say(label, steps, steps)
    return written


def _judge_set(reference: np.ndarray, calib: CalibrationSet | None, task: Task | None) -> tuple[np.ndarray, str]:
    """Inputs on which FP16/INT8 are compared with FP32: held-out data first, then calibration."""
    if task is not None:
        data = np.ascontiguousarray(task.sample(MAX_JUDGE_SAMPLES, "val")[0].numpy(), dtype=np.float32)
        return data, f"evaluation inputs ({len(data)})"
    if calib is not None:
        return calib.data[:MAX_JUDGE_SAMPLES], f"calibration samples ({min(len(calib.data), MAX_JUDGE_SAMPLES)})"
    return reference, f"reference inputs ({len(reference)}, random normal unless given)"


def _fp16(
    fp32_path: Path,
    tmp: Path,
    reference: np.ndarray,
    expected: np.ndarray,
    scale: float,
    judge: np.ndarray,
    judged_on: str,
    want: np.ndarray,
    name: str,
) -> tuple[Path, dict[str, Any], np.ndarray, dict[str, Any]]:
    from edgeprune.export.fp16 import convert_fp16

    path = tmp / "model_fp16.onnx"
    conversion = convert_fp16(fp32_path, path)
    got = run_ort(path, {INPUT_NAME: reference})[OUTPUT_NAME]
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    atol = FP16_REL_ATOL * scale
    if diff > atol:
        raise ExportError(
            f"{name}: the FP16 model differs from PyTorch FP32 by {diff:.3g}, more than "
            f"{atol:.3g} (1% of the output scale {scale:.3g}); the bundle was not written"
        )
    vs = _agreement(run_ort(path, {INPUT_NAME: judge})[OUTPUT_NAME], want)
    parity = {
        "atol": atol,
        "rtol": 0.0,
        "max_abs_diff": diff,
        "passed": True,
        "samples": int(len(reference)),
        "reference": "reference.npz outputs are PyTorch FP32's: the device check covers the whole FP16 error",
        "atol_basis": f"{FP16_REL_ATOL:.0%} of the output scale (max |FP32 output| on the reference inputs)",
        "atol_tensorrt": atol,
        "vs_fp32": {**vs, "measured_on": judged_on, "runtime": "onnxruntime CPU, FP16 model"},
    }
    return path, parity, expected, {"fp16": conversion}


def _int8(
    fp32_path: Path,
    tmp: Path,
    calib: CalibrationSet,
    config: Int8Config,
    reference: np.ndarray,
    scale: float,
    judge: np.ndarray,
    judged_on: str,
    want: np.ndarray,
    name: str,
) -> tuple[Path, dict[str, Any], np.ndarray, dict[str, Any]]:
    from edgeprune.export.quantize import quantize_int8

    path = tmp / "model_int8.onnx"
    quant = quantize_int8(fp32_path, path, calib.data, INPUT_NAME, config)
    exact = run_ort(path, {INPUT_NAME: reference}, exact=True)[OUTPUT_NAME]
    host = run_ort(path, {INPUT_NAME: reference})[OUTPUT_NAME]
    vs = _agreement(run_ort(path, {INPUT_NAME: judge}, exact=True)[OUTPUT_NAME], want)
    if vs["samples"] >= MIN_AGREEMENT_SAMPLES and vs["top1_agreement"] < MIN_TOP1_AGREEMENT:
        raise ExportError(
            f"{name}: the INT8 model agrees with FP32 on only {vs['top1_agreement']:.0%} of {vs['samples']} "
            f"{judged_on.split(' (')[0]} (needs {MIN_TOP1_AGREEMENT:.0%}); is the calibration set preprocessed "
            "as the model expects? The bundle was not written"
        )
    host_dev = float(np.max(np.abs(host.astype(np.float64) - exact)))
    atol = INT8_REL_ATOL * scale
    warnings = []
    if host_dev > atol:
        warnings.append(
            f"this host's ONNX Runtime int8 kernels differ from exact Q/DQ arithmetic by {host_dev:.3g} "
            f"(> atol {atol:.3g}), so `edgeprune bench` here will refuse this bundle; x86 CPUs without VNNI "
            "risk int8 saturation with 8-bit weights (keep reduce_range on)"
        )
    parity = {
        "atol": atol,
        "rtol": 0.0,
        "max_abs_diff": host_dev,
        "passed": host_dev <= atol,
        "samples": int(len(reference)),
        "reference": "reference.npz outputs are this INT8 model's own, under exact Q/DQ arithmetic (ONNX Runtime "
        "with graph optimizations off): the device check tests its runtime, not the quantization "
        "error (that is vs_fp32); max_abs_diff is this host's optimized ONNX Runtime against them",
        "atol_basis": f"{INT8_REL_ATOL:.0%} of the output scale (max |FP32 output| on the reference inputs)",
        "atol_tensorrt": atol,
        "vs_fp32": {
            **vs,
            "measured_on": judged_on,
            "runtime": "INT8 model, exact Q/DQ arithmetic",
            "min_top1_agreement": MIN_TOP1_AGREEMENT,
            "what": "quantization error: INT8 against FP32 PyTorch",
        },
        "warnings": warnings,
    }
    return path, parity, exact, {"calibration": {**calib.record(), **quant}}


def _calib_file(calib: CalibrationSet, used: int, tmp: Path, files: dict[str, Path]) -> str | None:
    """Ship the calibration samples actually used, when small enough, so the bundle is reproducible."""
    data = calib.data[:used]
    if data.nbytes > CALIB_MAX_BYTES:
        return None
    path = tmp / CALIB_FILE
    np.savez_compressed(path, input=data)
    files[CALIB_FILE] = path
    return CALIB_FILE


def _eval_task(eval_data: Task | tuple[np.ndarray, np.ndarray] | None) -> Task | None:
    if eval_data is None or isinstance(eval_data, Task):
        return eval_data if eval_data is None or eval_data.has_val else None
    x, y = eval_data
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_t = torch.from_numpy(np.asarray(y))
    return tensor_task(x_t, y_t, x_t, y_t, name="evaluation arrays")


def _evaluate(model_path: Path, task: Task, exact: bool) -> dict[str, Any]:
    """The task's metric for this ONNX file on ONNX Runtime, over the validation batches."""
    total, count = 0.0, 0
    for x, y in iterate(task.batches("val", EVAL_BATCH)):
        feeds = {INPUT_NAME: np.ascontiguousarray(x.numpy(), dtype=np.float32)}
        logits = run_ort(model_path, feeds, exact=exact, batch_size=EVAL_BATCH)[OUTPUT_NAME]
        total += task.metric(torch.from_numpy(logits), y) * len(x)
        count += len(x)
    return {
        "accuracy": total / max(1, count),
        "metric": task.metric_name,
        "accuracy_source": f"this bundle's model.onnx on ONNX Runtime CPU, {count} held-out samples of {task.name}",
    }


def _theoretical(base: ModelCost, cost: ModelCost, pattern: str) -> dict[str, Any]:
    """The three labelled theoretical speedups on the host CPU (where ``edgeprune bench`` measures)."""
    figures = theoretical_figures(base, cost, pattern, None, include_layers=False)
    return {k: figures[k] for k in ("mac_ratio", "kernel_aware", "roofline", "labels", "device", "assumptions")}


def _sparsity_record(pattern: str, precision: str, layers: list[dict[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {"pattern": pattern, "layers": layers, "sparse_weights": pattern in NM_NAMES}
    if pattern in NM_NAMES:
        eligible = sum(1 for layer in layers if layer.get("nm_2_4"))
        record["trt_sparse_weights"] = eligible > 0
        record["eligible_layers"] = eligible
        record["checked_layers"] = len(layers)
        record["rule"] = RULE
        if precision == "fp32":
            record["note"] = (
                "TensorRT uses 2:4 sparse kernels only in FP16 or INT8 layers: package with "
                "--precision fp16 or int8 for SPARSE_WEIGHTS to matter (TensorRT 11 is strongly "
                "typed, so an FP32 model stays FP32)"
            )
    return record


def _write(out_dir: Path, manifest: bundle_mod.Manifest, files: dict[str, Path]) -> bundle_mod.Manifest:
    try:
        bundle_mod.write_bundle(Path(out_dir), manifest, files)
    except OSError as err:
        raise ExportError(f"cannot write bundle {out_dir}: {err}") from err
    return bundle_mod.read_manifest(Path(out_dir), check_model=True)
