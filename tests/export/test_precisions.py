"""FP16 and INT8 bundles: what their ONNX holds, what parity means, and what the device re-checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeprune import bundle
from edgeprune.device.measure.bench import check_reference
from edgeprune.device.runners.ort import OrtRunner
from edgeprune.errors import BundleError, ExportError, UsageError
from edgeprune.export.onnx_export import run_ort
from edgeprune.export.package import FP32_MODEL_FILE, package_model
from edgeprune.export.quantize import Int8Config
from edgeprune.prune.api import PruneRequest, prune_model
from tests.export import INPUT_SHAPE, tiny_data, trained_tiny

CALIB, _ = tiny_data(64, seed=2)
EVAL = tiny_data(128, seed=3)


def package(out: Path, precision: str, model: Any = None, **kwargs: Any) -> dict[str, Any]:
    return package_model(
        model if model is not None else trained_tiny(),
        INPUT_SHAPE,
        out,
        name=precision,
        spec="tests.export:tiny_net",
        precision=precision,
        **kwargs,
    )


def device_check(path: Path) -> dict[str, Any]:
    manifest = bundle.read_manifest(path, check_model=True)
    with OrtRunner(path / "model.onnx") as runner:
        return check_reference(path, manifest, runner)


def dynamic_batch_runs(path: Path) -> None:
    for batch in (1, 5):
        out = run_ort(path, {"input": CALIB[:batch]})["logits"]
        assert out.shape == (batch, 4)


@pytest.fixture(scope="module")
def fp16(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bundle.Manifest]:
    out = tmp_path_factory.mktemp("fp16") / "b"
    return out, package(out, "fp16", eval_data=EVAL)


def test_fp16_model_keeps_float32_io(fp16: tuple[Path, bundle.Manifest]) -> None:
    path, manifest = fp16
    proto = onnx.load(str(path / "model.onnx"))
    assert {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]} == {onnx.TensorProto.FLOAT}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert sum(n.op_type == "Cast" for n in proto.graph.node) >= 2
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.opset_import[0].version == 17
    dynamic_batch_runs(path / "model.onnx")
    assert manifest.fp16["io_dtype"] == "float32"


def test_fp16_manifest_and_device_check(fp16: tuple[Path, bundle.Manifest]) -> None:
    path, manifest = fp16
    parity = manifest.parity
    assert manifest.precision == "fp16" and parity["passed"]
    assert parity["atol"] == pytest.approx(0.01 * parity["output_scale"])
    assert 0 < parity["max_abs_diff"] < parity["atol"]
    assert parity["export"]["passed"] and parity["export"]["max_abs_diff"] < 1e-4
    assert parity["vs_fp32"]["top1_agreement"] == 1.0 and parity["vs_fp32"]["samples"] == 128
    # The TensorRT 10 alternative is real: the FP32 model ships and is checksummed.
    trt10 = manifest.precision_detail["tensorrt_10"]
    assert trt10["builder_flags"] == ["FP16"] and trt10["alternative"]["model_file"] == FP32_MODEL_FILE
    assert FP32_MODEL_FILE in manifest.files and manifest.precision_detail["tensorrt_11"]["builder_flags"] == []
    # reference.npz holds PyTorch FP32 outputs; the device check passes within atol.
    with np.load(path / "reference.npz") as ref:
        with torch.no_grad():
            want = trained_tiny()(torch.from_numpy(ref["input:input"])).numpy()
        np.testing.assert_allclose(ref["output:logits"], want, atol=1e-5)
    assert device_check(path)["passed"]
    assert manifest.model.accuracy == pytest.approx(1.0) and manifest.model.extra["accuracy_pytorch"] == 1.0


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bundle.Manifest]]:
    root = tmp_path_factory.mktemp("int8")
    return {
        method: (root / method, package(root / method, "int8", calibration=CALIB, int8=Int8Config(method=method)))
        for method in ("minmax", "entropy", "percentile")
    }


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_is_explicit_symmetric_qdq(int8: dict[str, tuple[Path, bundle.Manifest]], method: str) -> None:
    path, manifest = int8[method]
    proto = onnx.load(str(path / "model.onnx"))
    inits = {i.name: i for i in proto.graph.initializer}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and proto.opset_import[0].version == 17
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.data_type == onnx.TensorProto.INT8 and not numpy_helper.to_array(zero).any()
    weight_dq = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dq, "weights are stored as int8 behind DequantizeLinear"
    for node in weight_dq:
        assert inits[node.input[0]].data_type == onnx.TensorProto.INT8  # no int32 bias DQ for TensorRT
        assert len(inits[node.input[1]].dims) == 1 and inits[node.input[1]].dims[0] > 1  # per channel
        assert np.abs(numpy_helper.to_array(inits[node.input[0]])).max() <= 64  # 7-bit range
    dynamic_batch_runs(path / "model.onnx")
    calib = manifest.calibration
    assert (calib["method"], calib["samples"], calib["weight_bits"]) == (method, 64, 7)
    assert calib["file"] == "calib.npz" and "calib.npz" in manifest.files


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_parity_checks_the_runtime(int8: dict[str, tuple[Path, bundle.Manifest]], method: str) -> None:
    path, manifest = int8[method]
    parity = manifest.parity
    vs = parity["vs_fp32"]
    assert vs["top1_agreement"] >= 0.9 and vs["samples"] == 64 and vs["max_abs_diff"] > 0
    assert parity["atol"] == pytest.approx(0.05 * parity["output_scale"]) and parity["passed"]
    with np.load(path / "reference.npz") as ref:
        exact = run_ort(path / "model.onnx", {"input": ref["input:input"]}, exact=True)["logits"]
        np.testing.assert_array_equal(ref["output:logits"], exact)  # the INT8 model's own outputs
        np.testing.assert_array_equal(ref["input:input"], CALIB[:8])
    assert device_check(path)["passed"]
    assert manifest.precision_detail["tensorrt_10"]["builder_flags"] == ["INT8", "FP16"]


def test_int8_gross_breakage_fails_and_keeps_the_old_bundle(int8: dict[str, tuple[Path, bundle.Manifest]]) -> None:
    path, _ = int8["minmax"]
    before = (path / "manifest.json").read_text()
    # Calibrating on inputs 10^4 times too large (preprocessing that does not match deployment)
    # sets scales that round every real input to zero; held-out data shows it.
    with pytest.raises(ExportError, match=r"agrees with FP32 on only \d+% of 128 evaluation inputs"):
        package(path, "int8", calibration=CALIB * 1e4, int8=Int8Config(method="minmax"), eval_data=EVAL)
    assert (path / "manifest.json").read_text() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".minmax.")]


def test_int8_needs_calibration_of_the_right_shape(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="int8 needs a calibration set"):
        package(tmp_path / "b", "int8")
    with pytest.raises(UsageError, match=r"calibration data has shape \(4, 8, 8\)"):
        package(tmp_path / "b", "int8", calibration=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(UsageError, match="not one of"):
        package(tmp_path / "b", "bf16")
    with pytest.raises(UsageError, match="calibration method 'kl'"):
        Int8Config(method="kl")
    assert not (tmp_path / "b").exists()


def test_nm_int8_bundle_records_per_layer_eligibility(tmp_path: Path) -> None:
    pruned, _, _ = prune_model(trained_tiny(), INPUT_SHAPE, PruneRequest("nm"))
    manifest = package(tmp_path / "nm", "int8", model=pruned, pattern="nm", calibration=CALIB, archive=True)
    layers = {layer["name"]: layer for layer in manifest.sparsity["layers"]}
    assert set(layers) == {"conv1", "conv2", "fc"}
    assert layers["conv2"]["nm_2_4"] and layers["conv2"]["through"] == ["DequantizeLinear"]
    assert layers["conv2"]["axis"] == 1 and layers["conv2"]["violations"] == 0
    assert not layers["conv1"]["nm_2_4"]
    assert "1 input channels (axis 1) not a multiple of 4" in layers["conv1"]["nm_reason"]
    # The pruner leaves the classifier dense by default; the check says so, along the Gemm's K axis.
    assert not layers["fc"]["nm_2_4"] and layers["fc"]["op"] == "Gemm" and layers["fc"]["axis"] == 1
    assert "do not follow 2:4 along the reduction axis (axis 1): 8 of 8 runs" in layers["fc"]["nm_reason"]
    sparsity = manifest.sparsity
    assert sparsity["trt_sparse_weights"] and (sparsity["eligible_layers"], sparsity["checked_layers"]) == (1, 3)
    assert "note" not in sparsity  # int8 lets TensorRT use sparse kernels; fp32 bundles get a note
    # --archive: the .tar.gz unpacks into the same verified bundle.
    read = bundle.unpack_bundle(tmp_path / "nm.tar.gz", tmp_path / "unpacked")
    assert read.files == manifest.files


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(BundleError, match="exists and is not a bundle"):
        package(tmp_path / "data", "fp32")
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"


def test_model_file_that_is_not_onnx(fp16: tuple[Path, bundle.Manifest], tmp_path: Path) -> None:
    path, _ = fp16
    # A consistent bundle (checksums match) whose model.onnx is garbage: the bundle read that
    # checks the model says so; without it the checksum still verifies.
    data = json.loads((path / "manifest.json").read_text())
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"\x00\x01 definitely not a protobuf model")
    files = {"model.onnx": src / "model.onnx", "reference.npz": path / "reference.npz"}
    manifest = bundle.Manifest.from_dict(data)
    bad = bundle.write_bundle(tmp_path / "bad", manifest, files)
    bundle.read_manifest(bad)
    with pytest.raises(BundleError, match="model.onnx is not an ONNX model"):
        bundle.read_manifest(bad, check_model=True)
