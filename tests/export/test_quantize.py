"""The Q/DQ rules TensorRT imposes, the calibration reader, and the histogram memory cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.errors import ExportError
from edgeprune.export.onnx_export import export_onnx, verify_onnx
from edgeprune.export.quantize import ArrayCalibrationReader, Int8Config, capped_samples, check_qdq, quantize_int8
from tests.export import INPUT_SHAPE, tiny_data, trained_tiny


def qdq_model(zero: np.ndarray, bias_dtype: int | None = None):
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(zero, "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    if bias_dtype is not None:
        inits += [
            numpy_helper.from_array(np.zeros(4, np.int32), "b"),
            numpy_helper.from_array(np.zeros(4, np.int32), "bz"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["b", "s", "bz"], ["bf"], name="bias_dq"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=inits,
    )
    return helper.make_model(graph)


def test_qdq_rules() -> None:
    assert check_qdq(qdq_model(np.int8(0)))["quantize_nodes"] == 1
    with pytest.raises(ExportError, match="non-zero zero point"):
        check_qdq(qdq_model(np.int8(3)))
    with pytest.raises(ExportError, match="zero point is UINT8"):
        check_qdq(qdq_model(np.uint8(128)))
    with pytest.raises(ExportError, match="zero point is INT32|int32 tensor"):
        check_qdq(qdq_model(np.int8(0), bias_dtype=TensorProto.INT32))


def test_reader_batches_and_rewinds() -> None:
    reader = ArrayCalibrationReader("input", np.zeros((10, 2), np.float32), batch_size=4)
    sizes = [len(b["input"]) for b in iter(reader.get_next, None)]
    assert sizes == [4, 4, 2] and len(reader) == 3 and reader.get_next() is None
    reader.rewind()
    assert reader.get_next() is not None


def test_histogram_methods_are_capped_to_memory(tmp_path: Path) -> None:
    proto = verify_onnx(export_onnx(trained_tiny(), INPUT_SHAPE, tmp_path / "m.onnx"))
    assert capped_samples(proto, Int8Config(method="minmax", memory_budget=1), 500) == (500, None)
    used, why = capped_samples(proto, Int8Config(method="entropy", memory_budget=64 << 10), 500)
    assert 1 <= used < 500 and why and f"used {used} of 500 samples" in why
    # And the cap reaches the manifest record.
    record = quantize_int8(
        tmp_path / "m.onnx",
        tmp_path / "q.onnx",
        tiny_data(64, 1)[0],
        "input",
        Int8Config(method="entropy", memory_budget=64 << 10),
    )
    assert record["samples"] == min(used, 64) and record["samples_requested"] == 64
