"""TensorRT runner and a real engine build: run wherever TensorRT and a GPU exist (marker ``trt``).

Everywhere else only the tests that need neither run: the runner must fail with a clear
MissingDependencyError, never an ImportError traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeprune.bundle import Manifest, ModelInfo, TensorSpec, write_bundle
from edgeprune.device.engine import EngineCache, build_engine, options_for_bundle
from edgeprune.device.runners.cuda import cuda_device_info
from edgeprune.device.runners.trt import GpuTiming, TrtRunner
from edgeprune.errors import EdgepruneError, MissingDependencyError, RunnerError

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def _gpu_reason() -> str | None:
    """Why the real-engine tests cannot run here, or None when they can."""
    if not HAVE_TRT:
        return "tensorrt is not importable (install edgeprune[trt] on a machine with an NVIDIA GPU)"
    try:
        cuda_device_info()
    except EdgepruneError as err:
        return f"no usable CUDA GPU: {err}"
    return None


requires_trt = pytest.mark.skipif(not HAVE_TRT, reason="tensorrt is not importable")


# -- without TensorRT -------------------------------------------------------------------------------


def test_missing_tensorrt_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner = TrtRunner(b"not an engine")
    with pytest.raises(MissingDependencyError, match=r"edgeprune\[trt\]"):
        runner.activate()
    assert runner.is_active is False


def test_settings_are_recorded_before_activation() -> None:
    runner = TrtRunner(Path("missing.plan"))
    assert runner.settings["cuda_graph"] is False
    assert runner.settings["data_transfers_included"] is True
    with pytest.raises(RunnerError, match="activate"):
        runner.infer({})


def test_gpu_timing_is_json_ready() -> None:
    assert GpuTiming(0.1, 0.2, 0.3).to_dict() == {"gpu_compute_ms": 0.1, "gpu_total_ms": 0.2, "host_ms": 0.3}


# -- with TensorRT and a GPU -------------------------------------------------------------------------


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    # 2:4 along input channels: in every group of 4 input channels keep 2, per output and position.
    conv[:, 0:2] = 0.0
    conv[:, 6:8] = 0.0
    return {
        "conv_w": conv,
        "conv_b": rng.standard_normal(16).astype(np.float32),
        "fc_w": rng.standard_normal((10, 16)).astype(np.float32),
        "fc_b": rng.standard_normal(10).astype(np.float32),
    }


def _write_onnx(path: Path, weights: dict[str, np.ndarray]) -> None:
    onnx = pytest.importorskip("onnx", reason="onnx is needed to write the test model")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _reference(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n c h w kh kw
    conv = np.einsum("nchwij,kcij->nkhw", windows, w["conv_w"]) + w["conv_b"][None, :, None, None]
    pooled = np.maximum(conv, 0.0).mean(axis=(2, 3))
    return pooled @ w["fc_w"].T + w["fc_b"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = _gpu_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("trt")
    weights = _weights()
    onnx_path = root / "tiny.onnx"
    _write_onnx(onnx_path, weights)
    manifest = Manifest(
        name="tiny-2:4",
        precision="fp32",
        model=ModelInfo(spec="test", pattern="nm"),
        inputs=(TensorSpec("input", ("batch", 8, 8, 8)),),
        outputs=(TensorSpec("logits", ("batch", 10)),),
        sparsity={"pattern": "nm", "layers": []},
        cost={},
        parity={},
    )
    bundle = write_bundle(root / "bundle", manifest, {"model.onnx": onnx_path})
    cache = EngineCache(root / "engines")
    options = options_for_bundle(manifest, batch_sizes=(1, 4), workspace_bytes=64 << 20)
    result = build_engine(bundle, options, cache=cache)
    return result, weights, bundle, cache, options


@pytest.mark.trt
@requires_trt
def test_real_build_and_cache(built: Any) -> None:
    result, _, bundle, cache, options = built
    assert result.engine_path.is_file() and result.engine_bytes > 0
    assert result.options.sparse_weights is True
    assert result.build_log_path.read_text().strip()
    assert result.device_memory_bytes is not None
    assert any(layer.name for layer in result.layers)  # detailed inspector JSON was parsed
    again = build_engine(bundle, options, cache=cache)
    assert again.from_cache and again.key == result.key


@pytest.mark.trt
@requires_trt
def test_real_inference_matches_numpy(built: Any) -> None:
    result, weights, *_ = built
    rng = np.random.default_rng(1)
    with TrtRunner(result.engine_path) as runner:
        specs = runner.input_specs()
        assert [(s.name, s.shape, s.dtype) for s in specs] == [("input", (None, 8, 8, 8), "float32")]
        for batch in (1, 4, 2):  # buffers grow for 4 and are reused for 2
            x = rng.standard_normal((batch, 8, 8, 8)).astype(np.float32)
            out = runner.infer({"input": x})["logits"]
            assert out.shape == (batch, 10)
            # TF32 may be on for FP32 engines on Ampere and later: compare loosely.
            np.testing.assert_allclose(out, _reference(x, weights), rtol=2e-2, atol=2e-2)
        assert runner.settings["cuda_backend"] in ("cuda-python", "pycuda")
        assert runner.settings["device_memory_bytes"] == result.device_memory_bytes


@pytest.mark.trt
@requires_trt
def test_real_gpu_timing(built: Any) -> None:
    result, *_ = built
    x = np.zeros((4, 8, 8, 8), np.float32)
    with TrtRunner(result.engine_path.read_bytes()) as runner:
        runner.infer({"input": x})  # warm-up, never timed
        timing = runner.time_gpu_ms({"input": x})
    assert 0.0 < timing.gpu_compute_ms <= timing.gpu_total_ms
    assert timing.host_ms > 0.0


@pytest.mark.trt
@requires_trt
def test_real_batch_outside_profile_is_refused(built: Any) -> None:
    result, *_ = built
    with TrtRunner(result.engine_path) as runner, pytest.raises(RunnerError, match="optimization profile"):
        runner.infer({"input": np.zeros((16, 8, 8, 8), np.float32)})
