"""The ONNX gate every artifact passes: opset 17, symbolic batch, checker and shape inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeprune.errors import ExportError
from edgeprune.export.onnx_export import OPSET, export_onnx, has_dynamic_batch, run_ort, verify_onnx
from tests.export import INPUT_SHAPE, tiny_data, trained_tiny


def test_export_is_opset_17_with_symbolic_batch(tmp_path: Path) -> None:
    path = export_onnx(trained_tiny(), INPUT_SHAPE, tmp_path / "m.onnx")
    proto = verify_onnx(path)
    assert OPSET == 17 and proto.opset_import[0].version == 17
    assert has_dynamic_batch(proto)
    x, _ = tiny_data(7, seed=0)
    assert run_ort(path, {"input": x}, batch_size=3)["logits"].shape == (7, 4)
    np.testing.assert_allclose(
        run_ort(path, {"input": x}, exact=True)["logits"], run_ort(path, {"input": x})["logits"], atol=1e-5
    )


def test_fixed_batch_is_detected() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    assert not has_dynamic_batch(helper.make_model(graph))


def test_verify_rejects_garbage_and_invalid_models(tmp_path: Path) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01\x02 not protobuf")
    with pytest.raises(ExportError, match="is not an ONNX model|fails the onnx checker"):
        verify_onnx(tmp_path / "garbage.onnx")
    with pytest.raises(ExportError, match="does not exist"):
        verify_onnx(tmp_path / "missing.onnx")
    # Well-formed protobuf, broken graph: a node reads a tensor nothing produces.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bad.onnx"))
    with pytest.raises(ExportError, match="fails the onnx checker"):
        verify_onnx(tmp_path / "bad.onnx")
