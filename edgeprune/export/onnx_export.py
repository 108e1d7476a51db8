"""ONNX export with a dynamic batch dimension, checked by onnx and by ONNX Runtime parity.

Opset 17 is used because both TensorRT 10.3 (JetPack 6) and TensorRT 11 parse it, and the
TorchScript-based exporter is preferred when present: it is about 15x faster than the dynamo
exporter on small CNNs and produces plain Conv/Gemm graphs that TensorRT's sparse-weight check
can read. The export is verified twice: the onnx checker with shape inference, and the outputs of
ONNX Runtime against PyTorch on the same inputs; a model that disagrees is never written.

The FP16 and INT8 variants (:mod:`edgeprune.export.fp16`, :mod:`edgeprune.export.quantize`) are
derived from this FP32 export and pass the same :func:`verify_onnx` gate.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import ExportError, RunnerError

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class Parity:
    """How closely ONNX Runtime reproduces PyTorch on the reference inputs."""

    max_abs_diff: float
    atol: float
    rtol: float
    passed: bool
    samples: int


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Export ``model`` (eval mode) to ``path`` with a symbolic batch dimension named ``batch``.

    Raises:
        ExportError: the exporter or the onnx checker rejects the model.
    """
    import onnx

    model.eval()
    example = torch.zeros(2, *input_shape)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file-like object is accepted
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        proto = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(proto)
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as err:  # the exporters raise many unrelated types
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {first_line(err)}") from err
    if not has_dynamic_batch(proto):
        raise ExportError(
            f"ONNX export of {type(model).__name__} has no symbolic batch dimension: "
            "the model's forward must not depend on the batch size"
        )
    Path(path).write_bytes(proto.SerializeToString())
    return Path(path)


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (the CLI prints one line), or its type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def has_dynamic_batch(proto: Any) -> bool:
    """True if every graph input and output has a symbolic (named) leading dimension."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            return False
    return True


def verify_onnx(path: Path) -> Any:
    """Load an ONNX file and run the onnx checker and strict shape inference on it.

    This is the gate every artifact passes before it goes into a bundle: FP32, FP16 and INT8 alike,
    so the device never receives a file its parser would reject for a structural reason.

    Returns:
        The shape-inferred ``onnx.ModelProto``.

    Raises:
        ExportError: the file is missing, not ONNX, or fails the checker or shape inference.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} does not exist")
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf raises DecodeError, onnx its own types
        raise ExportError(f"{path} is not an ONNX model (cannot parse it: {first_line(err)})") from err
    if not proto.graph.node:
        raise ExportError(f"{path} is not an ONNX model (it has no graph)")
    try:
        onnx.checker.check_model(proto)
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as err:  # ValidationError, InferenceError
        raise ExportError(f"{path} fails the onnx checker: {first_line(err)}") from err


def run_ort(
    path: Path, feeds: Mapping[str, np.ndarray], *, exact: bool = False, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Run an ONNX file on ONNX Runtime's CPU provider, in batches; returns every output.

    Args:
        path: the model.
        feeds: input name -> array with a leading batch axis (all the same length).
        exact: disable every graph optimization, so each QuantizeLinear, DequantizeLinear and float
            op runs as written. For a Q/DQ model that is the arithmetic the ONNX specifies (what
            TensorRT implements), free of the host CPU's fused int8 kernels; those can differ, e.g.
            x86 CPUs without VNNI saturate 16-bit intermediate sums of 8-bit products.
        batch_size: rows per run, to bound memory.

    Raises:
        ExportError: ONNX Runtime cannot load or run the model.
    """
    from edgeprune.device.runners.ort import ort_session

    try:
        session = ort_session(path, exact=exact, extra="host")
    except RunnerError as err:
        raise ExportError(str(err)) from err
    try:
        names = [o.name for o in session.get_outputs()]
        total = len(next(iter(feeds.values())))
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, total, batch_size):
            values = session.run(names, {k: v[start : start + batch_size] for k, v in feeds.items()})
            for name, value in zip(names, values):
                chunks[name].append(value)
    except Exception as err:  # ORT raises its own untyped exceptions
        raise ExportError(f"ONNX Runtime cannot run {path}: {first_line(err)}") from err
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def check_parity(
    model: nn.Module, onnx_path: Path, inputs: np.ndarray, atol: float = 1e-4, rtol: float = 1e-3
) -> tuple[Parity, np.ndarray]:
    """Compare ONNX Runtime with PyTorch on ``inputs``; returns the parity and PyTorch's outputs.

    The test is ``|ort - torch| <= atol + rtol * |torch|`` elementwise (numpy.allclose).
    """
    from edgeprune.device.runners.ort import OrtRunner

    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(inputs)).numpy()
    with OrtRunner(onnx_path) as runner:
        got = runner.infer({INPUT_NAME: inputs})[OUTPUT_NAME]
    diff = float(np.max(np.abs(got - expected)))
    passed = bool(np.allclose(got, expected, atol=atol, rtol=rtol))
    return Parity(diff, atol, rtol, passed, int(inputs.shape[0])), expected
