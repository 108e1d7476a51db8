"""The TensorRT 2:4 rule on ONNX initializers: axes per op, skips, reasons, and look-through."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.export.sparsity import RULE, check_sparsity, module_path, nm_violations, summarize


def two_four(shape: tuple[int, ...], axis: int, seed: int = 0) -> np.ndarray:
    """Random weights with exactly 2 non-zeros in every run of 4 along ``axis``."""
    rng = np.random.default_rng(seed)
    w = np.moveaxis(rng.standard_normal(shape).astype(np.float32) + 3.0, axis, -1).copy()
    runs = w.reshape(*w.shape[:-1], w.shape[-1] // 4, 4)
    runs[..., 1] = 0.0
    runs[..., 3] = 0.0
    return np.moveaxis(runs.reshape(w.shape), -1, axis).copy()


def model_of(nodes, inits, inputs, output="y"):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv(weight: np.ndarray, name: str = "/layer1/conv1/Conv", group: int = 1):
    node = helper.make_node("Conv", ["x", "W"], ["y"], name=name, group=group)
    return check_sparsity(model_of([node], {"W": weight}, ["x"]))[0]


def test_conv_follows_input_channels() -> None:
    record = conv(two_four((16, 8, 3, 3), axis=1))
    assert record.eligible and record.reason is None
    assert (record.axis, record.shape, record.density) == (1, [16, 8, 3, 3], 0.5)
    assert record.groups == 16 * 2 * 3 * 3 and record.violations == 0
    # 2:4 along the *output* channels is not what TensorRT checks.
    wrong = conv(two_four((16, 8, 3, 3), axis=0))
    assert not wrong.eligible and "do not follow 2:4 along the input channels" in wrong.reason
    assert wrong.violations > 0 and f"{wrong.violations} of {wrong.groups} runs" in wrong.reason


def test_axis_not_multiple_of_four_is_skipped() -> None:
    record = conv(np.ones((16, 6, 3, 3), np.float32))
    assert not record.eligible
    assert "6 input channels (axis 1) not a multiple of 4" in record.reason


def test_grouped_conv_is_never_sparse() -> None:
    record = conv(two_four((16, 4, 3, 3), axis=1), group=2)
    assert not record.eligible and "grouped convolution (group=2)" in record.reason


@pytest.mark.parametrize("trans_b,axis", [(1, 1), (0, 0)])
def test_gemm_uses_the_reduction_axis(trans_b: int, axis: int) -> None:
    shape = (12, 8) if trans_b else (8, 12)  # K = 8 in both layouts
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="/fc/Gemm", transB=trans_b)
    record = check_sparsity(model_of([node], {"W": two_four(shape, axis)}, ["x"]))[0]
    assert record.eligible and record.axis == axis
    other = check_sparsity(model_of([node], {"W": two_four(shape, 1 - axis)}, ["x"]))[0]
    assert not other.eligible


def test_matmul_constant_b_axis_zero() -> None:
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="/head/MatMul")
    record = check_sparsity(model_of([node], {"W": two_four((8, 12), 0)}, ["x"]))[0]
    assert record.eligible and record.axis == 0


def test_looks_through_dequantize_and_transpose() -> None:
    # MatMul(x, Transpose(DequantizeLinear(W_q))) with W_q [N=12, K=8]: the reduction axis of the
    # MatMul (its B axis 0) is axis 1 of the stored int8 initializer.
    w = np.round(two_four((12, 8), axis=1)).astype(np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "s", "z"], ["Wf"], name="dq", axis=0),
        helper.make_node("Transpose", ["Wf"], ["Wt"], name="t", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "Wt"], ["y"], name="/fc/MatMul"),
    ]
    inits = {"Wq": w, "s": np.ones(12, np.float32), "z": np.zeros(12, np.int8)}
    record = check_sparsity(model_of(nodes, inits, ["x"]))[-1]
    assert record.eligible, record.reason
    assert (record.initializer, record.axis, record.path) == ("Wq", 1, ["Transpose", "DequantizeLinear"])


def test_looks_through_cast_of_fp16_weights() -> None:
    w = two_four((16, 8, 1, 1), axis=1).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["W16"], ["W"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "W"], ["y"], name="/c/Conv"),
    ]
    record = check_sparsity(model_of(nodes, {"W16": w}, ["x"]))[-1]
    assert record.eligible and record.path == ["Cast"]


def test_computed_weight_is_reported() -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="attn")
    record = check_sparsity(model_of([node], {}, ["a", "b"]))[0]
    assert not record.eligible and "computed at run time" in record.reason


def test_module_path_from_exporter_names() -> None:
    assert module_path("/layer2/shortcut/shortcut.0/Conv") == "layer2.shortcut.0"
    assert module_path("/stem/stem.0/Conv") == "stem.0"
    assert module_path("/layer1/conv1/Conv") == "layer1.conv1"
    assert module_path("/fc/Gemm") == "fc"
    assert module_path("Conv_12") is None
    assert module_path("/fc/Gemm", ["conv1"]) is None


def test_violation_count_and_summary() -> None:
    w = np.ones((2, 8), np.float32)
    assert nm_violations(w, 1) == (4, 4)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        nm_violations(np.ones((2, 6)), 1)
    records = [conv(two_four((16, 8, 3, 3), axis=1)), conv(np.ones((16, 6, 3, 3), np.float32))]
    summary = summarize(records)
    assert summary["rule"] == RULE and (summary["checked_layers"], summary["eligible_layers"]) == (2, 1)
    assert onnx.__version__  # the check needs onnx, nothing else
