"""INT8 by explicit quantization: Q/DQ nodes in the ONNX, calibrated on a calibration set.

TensorRT 11 removed implicit INT8 calibration (the ``IInt8Calibrator`` family, deprecated since
10.1), so the scales must live in the ONNX as QuantizeLinear/DequantizeLinear pairs. Such a model
is one artifact for every runtime: TensorRT 10.3 (JetPack 6) and 11 read the scales from the
graph, and ONNX Runtime runs the same file on a CPU. The quantizer is ONNX Runtime's
``quantize_static`` in QDQ format, configured for what TensorRT accepts:

* **symmetric int8** activations and weights (zero point 0): TensorRT supports only symmetric
  quantization.
* **per-channel weights** (axis 0 for Conv and for Gemm with ``transB``), per-tensor activations.
* **bias left in float**: ORT would quantize biases to int32 behind a DequantizeLinear, which
  TensorRT's parser rejects ("only activation types allowed as input to this layer";
  onnx/onnx-tensorrt #850, NVIDIA/TensorRT #3360).
* **7-bit weights by default** (``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime's int8
  kernels risk integer saturation with full 8-bit weights (its quantization guide recommends
  ``reduce_range`` there). On the 2-core AMD EPYC host of
  ``benchmarks/results/precision.md``, 8-bit weights took digits-resnet to 43.3% under ONNX Runtime
  while exact Q/DQ arithmetic (what TensorRT computes) gave 99.2%; with 7-bit weights both give
  98.9%, FP32's accuracy (one test image from the 8-bit exact figure). So 7-bit weights keep one
  artifact right on every runtime; pass ``reduce_range=False`` for a TensorRT-only artifact with
  full-range weights.

Calibration methods (activation ranges): ``minmax`` (the observed extremes), ``entropy`` (the
threshold minimizing KL divergence, TensorRT's classic calibrator and ModelOpt's INT8 default) and
``percentile`` (clip at the 99.999th percentile of |x|). Entropy and percentile keep every
calibration activation in memory (ONNX Runtime's histogram collector), so the sample count is
capped to a memory budget and the cap recorded.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import ExportError, UsageError, missing
from edgeprune.export.onnx_export import first_line, verify_onnx
from edgeprune.vocab import CALIB_METHODS

DEFAULT_METHOD = "entropy"
DEFAULT_PERCENTILE = 99.999
# Entropy and percentile hold every calibrated activation of every sample in memory.
HISTOGRAM_MEMORY_BUDGET = 2 << 30


@dataclass(frozen=True)
class Int8Config:
    """How to quantize.

    Attributes:
        method: minmax, entropy or percentile.
        per_channel: per-output-channel weight scales (TensorRT supports them on Conv/Gemm weights).
        reduce_range: 7-bit weights (see the module docstring for why this is the default).
        percentile: the percentile of |x| kept by the ``percentile`` method.
        batch_size: calibration batch size (ORT runs the augmented model once per batch).
        op_types: op types to quantize; None is ONNX Runtime's full QDQ list.
        memory_budget: bytes the histogram methods may hold; samples beyond it are dropped.
    """

    method: str = DEFAULT_METHOD
    per_channel: bool = True
    reduce_range: bool = True
    percentile: float = DEFAULT_PERCENTILE
    batch_size: int = 32
    op_types: tuple[str, ...] | None = None
    memory_budget: int = HISTOGRAM_MEMORY_BUDGET

    def __post_init__(self) -> None:
        if self.method not in CALIB_METHODS:
            raise UsageError(f"calibration method {self.method!r} is not one of {', '.join(CALIB_METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.batch_size < 1:
            raise UsageError(f"calibration batch size must be positive, got {self.batch_size}")


class ArrayCalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over an in-memory array, in batches.

    ORT recognizes readers by their ``get_next`` method, so this needs no ORT import and no base
    class; ``rewind`` lets one reader serve several calibration runs.
    """

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 32) -> None:
        self.input_name = input_name
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.batch_size = batch_size
        self._iter: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._iter = iter(
            [{self.input_name: self.data[i : i + self.batch_size]} for i in range(0, len(self.data), self.batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as a feed dict, or None when done (ORT's protocol)."""
        return next(self._iter, None)

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size


def activation_bytes_per_sample(proto: Any) -> int:
    """Float32 bytes of every intermediate tensor for one sample (the batch axis counted as 1).

    An estimate of what the histogram calibrators keep per sample; unknown dims count as 1.
    """
    total = 0
    for value in [*proto.graph.value_info, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        size = 1
        for d in list(dims)[1:]:
            size *= d.dim_value if d.dim_value > 0 else 1
        total += 4 * size
    return total


def capped_samples(proto: Any, config: Int8Config, samples: int) -> tuple[int, str | None]:
    """How many samples the method may use under the memory budget, and why fewer if so."""
    if config.method == "minmax":
        return samples, None
    per_sample = max(1, activation_bytes_per_sample(proto))
    limit = max(1, config.memory_budget // per_sample)
    if samples <= limit:
        return samples, None
    return limit, (
        f"{config.method} keeps every activation in memory (about {per_sample / 2**20:.1f} MiB per sample): "
        f"used {limit} of {samples} samples to stay under {config.memory_budget / 2**30:.1f} GiB"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizer's prints and root-logger warnings (they would break the CLI's one line)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def quantize_int8(
    fp32_path: Path, out_path: Path, calibration: np.ndarray, input_name: str, config: Int8Config = Int8Config()
) -> dict[str, Any]:
    """Quantize an FP32 ONNX into a Q/DQ INT8 ONNX calibrated on ``calibration`` and verify it.

    Args:
        fp32_path: the verified FP32 export.
        out_path: where the INT8 model goes.
        calibration: preprocessed inputs ``[N, *input_shape]``.
        input_name: the model's input.
        config: method and options.

    Returns:
        The calibration record for the manifest (method, samples, options, Q/DQ counts).

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        ExportError: quantization fails, or the result breaks a TensorRT Q/DQ rule.
    """
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as err:
        raise missing("onnxruntime", "host") from err
    proto = verify_onnx(Path(fp32_path))
    requested = int(calibration.shape[0])
    used, cap_reason = capped_samples(proto, config, requested)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
    }
    if config.method == "percentile":
        extra["CalibPercentile"] = config.percentile
    reader = ArrayCalibrationReader(input_name, calibration[:used], config.batch_size)
    try:
        with _quiet():
            quantize_static(
                str(fp32_path),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(config.op_types) if config.op_types else None,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[config.method],
                extra_options=extra,
            )
    except Exception as err:  # the quantizer raises ValueError, RuntimeError, ORT errors
        raise ExportError(f"INT8 quantization ({config.method}) failed: {first_line(err)}") from err
    quantized = verify_onnx(Path(out_path))
    counts = check_qdq(quantized)
    record: dict[str, Any] = {
        "method": config.method,
        "samples": used,
        "samples_requested": requested,
        "format": "QDQ (explicit QuantizeLinear/DequantizeLinear)",
        "activations": "int8, symmetric, per tensor",
        "weights": f"int8, symmetric, {'per channel' if config.per_channel else 'per tensor'}, "
        f"{7 if config.reduce_range else 8}-bit range",
        "weight_bits": 7 if config.reduce_range else 8,
        "per_channel": config.per_channel,
        "bias": "float (int32 bias DequantizeLinear is rejected by TensorRT)",
        "quantizer": "onnxruntime.quantization.quantize_static",
        **counts,
    }
    if config.method == "percentile":
        record["percentile"] = config.percentile
    if cap_reason:
        record["capped"] = cap_reason
    return record


def check_qdq(proto: Any) -> dict[str, Any]:
    """Check a Q/DQ model against what TensorRT accepts; returns node counts.

    Every Q/DQ must be int8 with zero point 0 (symmetric), and no DequantizeLinear may read an
    int32 tensor (a quantized bias).

    Raises:
        ExportError: no Q/DQ nodes at all, or a rule is broken (naming the node).
    """
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    quantize = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    if not quantize or not dequantize:
        raise ExportError("the INT8 model holds no QuantizeLinear/DequantizeLinear nodes: nothing was quantized")
    per_channel = 0
    for node in quantize + dequantize:
        if len(node.input) < 3 or node.input[2] not in inits:
            raise ExportError(f"{node.name}: no constant zero point; TensorRT needs symmetric int8 (zero point 0)")
        zero = inits[node.input[2]]
        if zero.data_type != onnx.TensorProto.INT8:
            raise ExportError(
                f"{node.name}: zero point is {onnx.TensorProto.DataType.Name(zero.data_type)}, TensorRT needs int8"
            )
        if np.any(numpy_helper.to_array(zero) != 0):
            raise ExportError(f"{node.name}: non-zero zero point; TensorRT supports only symmetric quantization")
        scale = inits.get(node.input[1])
        if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1:
            per_channel += 1
    for node in dequantize:
        source = inits.get(node.input[0])
        if source is not None and source.data_type == onnx.TensorProto.INT32:
            raise ExportError(f"{node.name}: dequantizes an int32 tensor (a quantized bias); TensorRT rejects it")
    return {"quantize_nodes": len(quantize), "dequantize_nodes": len(dequantize), "per_channel_qdq_nodes": per_channel}
