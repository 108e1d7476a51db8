"""Package a (pruned) model into a bundle: ONNX, reference data, manifest with checksums.

The manifest carries everything the device needs to judge the model without torch: its inputs and
outputs, its per-layer sparsity pattern, its cost and theoretical speedup against a baseline, and
the parity of the export. ``reference.npz`` holds inputs with the expected outputs so the device
re-checks correctness before it measures anything.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune import bundle as bundle_mod
from edgeprune.analysis.cost import ModelCost, model_cost, theoretical_speedup
from edgeprune.device.provenance import library_versions
from edgeprune.errors import ExportError, UsageError
from edgeprune.export.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, check_parity, export_onnx
from edgeprune.prune.patterns import check_nm

REFERENCE_SAMPLES = 8


def layer_sparsity(model: nn.Module, pattern: str, cost: ModelCost) -> list[dict[str, Any]]:
    """Per-layer pattern record; for N:M it states whether the TensorRT 2:4 rule holds and why not."""
    modules = dict(model.named_modules())
    layers = []
    for layer in cost.layers:
        weight = modules[layer.name].weight
        assert isinstance(weight, torch.Tensor)
        record: dict[str, Any] = {"name": layer.name, "density": layer.density}
        if pattern == "nm":
            ok = check_nm(weight, 2, 4)
            record["nm_2_4"] = ok
            if not ok:
                record["nm_reason"] = (
                    f"{weight.shape[1]} input channels not a multiple of 4" if weight.shape[1] % 4
                    else "weights do not follow the 2:4 pattern (layer left dense)"
                )
        layers.append(record)
    return layers


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
) -> dict[str, Any]:
    """Export, verify and write a bundle folder; returns its manifest.

    Args:
        model: the model to package (not modified).
        input_shape: one sample's shape, e.g. ``(1, 32, 32)``.
        out_dir: the bundle folder; replaced atomically, untouched on failure.
        name: the variant label shown in reports.
        spec: the model spec it came from.
        pattern: dense, unstructured, nm or channel.
        precision: only fp32 here (fp16/int8 come with the packager issue).
        baseline_cost: the dense model's cost, for the theoretical speedup.
        reference_inputs: inputs for parity and reference.npz; random if None.
        accuracy: test accuracy to record, if known.
        summary: pruning summary to record.
        batch_sizes: batch sizes the device should build and measure for.

    Raises:
        UsageError: unsupported precision.
        ExportError: the export fails or its outputs do not match PyTorch.
    """
    if precision != "fp32":
        raise UsageError(f"precision {precision!r} is not supported yet: use fp32")
    model = model.eval()
    if reference_inputs is None:
        rng = np.random.default_rng(0)
        reference_inputs = rng.standard_normal((REFERENCE_SAMPLES, *input_shape)).astype(np.float32)
    reference_inputs = np.ascontiguousarray(reference_inputs, dtype=np.float32)
    cost = model_cost(model, input_shape)
    base = baseline_cost or cost
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, input_shape, Path(tmp) / bundle_mod.MODEL_FILE)
        parity, expected = check_parity(model, onnx_path, reference_inputs)
        if not parity.passed:
            raise ExportError(
                f"{name}: ONNX Runtime output differs from PyTorch by {parity.max_abs_diff:.3g} "
                f"(atol {parity.atol}, rtol {parity.rtol}); the bundle was not written"
            )
        ref_path = Path(tmp) / bundle_mod.REFERENCE_FILE
        arrays = {f"input:{INPUT_NAME}": reference_inputs, f"output:{OUTPUT_NAME}": expected}
        np.savez(ref_path, **arrays)  # type: ignore[arg-type]
        num_outputs = int(expected.shape[1])
        manifest = {
            "name": name,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "precision": precision,
            "model": {"spec": spec, "pattern": pattern, "accuracy": accuracy, "summary": summary or {}},
            "inputs": [{"name": INPUT_NAME, "shape": ["batch", *input_shape], "dtype": "float32"}],
            "outputs": [{"name": OUTPUT_NAME, "shape": ["batch", num_outputs], "dtype": "float32"}],
            "batch_sizes": list(batch_sizes),
            "onnx_opset": OPSET,
            "sparsity": {"pattern": pattern, "layers": layer_sparsity(model, pattern, cost),
                         "sparse_weights": pattern == "nm"},
            "cost": {
                "macs": cost.macs,
                "effective_macs": cost.effective_macs,
                "dense_macs": base.macs,
                "params": cost.params,
                "nonzero_params": cost.nonzero_params,
                "weight_bytes": cost.weight_bytes,
                "theoretical_speedup": theoretical_speedup(base, cost),
                "theoretical_label": "MAC ratio (baseline dense MACs / effective MACs), estimate",
            },
            "parity": {**asdict(parity), "reference": "onnxruntime CPU vs PyTorch eager"},
            "tool_versions": {k: v for k, v in library_versions().items() if v is not None},
        }
        return _write(out_dir, manifest, {bundle_mod.MODEL_FILE: onnx_path, bundle_mod.REFERENCE_FILE: ref_path})


def _write(out_dir: Path, manifest: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
    try:
        bundle_mod.write_bundle(Path(out_dir), manifest, files)
    except OSError as err:
        raise ExportError(f"cannot write bundle {out_dir}: {err}") from err
    return bundle_mod.read_manifest(Path(out_dir))
